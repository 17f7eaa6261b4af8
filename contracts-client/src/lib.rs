//! btfs-contracts-client: the storage market's signed objects and chain settlement, with no libp2p or RocksDB.
//!
//! - [`key`]: the node's secp256k1 key as an EVM signer and address.
//! - [`contract`]: the EIP-712 storage contract a renter signs and a host countersigns, and the host's checks.
//! - [`cheque`]: cumulative EIP-712 cheques drawn on a renter's vault, and the host's checks.
//! - [`wire`]: the request/response messages of `/btfs/storage/1.0.0` and the signed host ad.
//! - [`settlement`]: paying and cashing on a chain behind the [`Settlement`] trait, backends `evm` and `none`.
//! - [`artifacts`]: the compiled Solidity contracts (`solidity/*.sol`), committed so builds need no Node.

pub mod artifacts;
pub mod cheque;
mod codec;
pub mod contract;
pub mod key;
pub mod settlement;
mod sig;
pub mod wire;

pub use alloy::primitives::{Address, B256, U256};
pub use cheque::{Cheque, ChequeCheck, ChequeError, SignedCheque};
pub use contract::{Contract, HostTerms, SignedContract, TermsError, quote_price};
pub use key::{KeyError, NodeKey};
pub use settlement::{
    EvmConfig, EvmSettlement, NoSettlement, Receipt, SettleError, SettleFuture, Settlement, SettlementKind,
};
pub use sig::SignatureError;
