//! Settlement: moving tokens on a chain for the storage market, behind the object-safe [`Settlement`] trait.
//!
//! Backends: [`EvmSettlement`] (any EVM chain over JSON-RPC, alloy) and [`NoSettlement`] (cheques are signed and
//! verified elsewhere, nothing is cashed; reads answer `None` so the UI says "unsettled"). The node holds an
//! `Arc<dyn Settlement>`; the methods return boxed futures so the trait stays dyn-compatible.

mod evm;
mod none;

use std::future::Future;
use std::pin::Pin;

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

use crate::cheque::SignedCheque;

pub use evm::{EvmConfig, EvmSettlement};
pub use none::NoSettlement;

/// The future every [`Settlement`] method returns.
pub type SettleFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SettleError>> + Send + 'a>>;

/// Which backend settles; also the `settlement` field of a host ad (`"evm"` or `"none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettlementKind {
    Evm,
    None,
}

impl SettlementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementKind::Evm => "evm",
            SettlementKind::None => "none",
        }
    }
}

impl std::fmt::Display for SettlementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mined transaction: its hash and the token amount it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub tx_hash: B256,
    pub amount: U256,
}

/// Why a settlement operation failed. Each variant names the endpoint, the contract or the operation.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("settlement is off (backend none): {op} is unsettled")]
    Unsettled { op: &'static str },
    #[error("settlement endpoint {url} is not a valid url: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("settlement endpoint {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("settlement endpoint {url} is on chain {got}, expected chain {expected}")]
    WrongChain { url: String, expected: u64, got: u64 },
    #[error("{op} on {target} reverted: {reason}")]
    Reverted { op: &'static str, target: Address, reason: String },
    #[error("{op} on {target}: transaction {tx_hash} failed")]
    Failed { op: &'static str, target: Address, tx_hash: B256 },
    #[error("{op} on {target} failed: {reason}")]
    Rpc { op: &'static str, target: Address, reason: String },
    #[error("cheque on vault {vault} is for chain {got}, this endpoint is chain {expected}")]
    ChequeChain { vault: Address, expected: u64, got: u64 },
    #[error("cheque on vault {vault} pays {beneficiary}, not this node {me}")]
    NotBeneficiary { vault: Address, beneficiary: Address, me: Address },
    #[error("{op} on {target}: no {event} event in transaction {tx_hash}")]
    MissingEvent { op: &'static str, target: Address, event: &'static str, tx_hash: B256 },
}

/// Paying and cashing on a chain. Amounts are in the token's smallest unit. Reads answer `Ok(None)` and writes
/// [`SettleError::Unsettled`] when the backend does not settle.
pub trait Settlement: Send + Sync {
    fn kind(&self) -> SettlementKind;
    /// The vault's token balance.
    fn vault_balance(&self, vault: Address) -> SettleFuture<'_, Option<U256>>;
    /// The address whose signatures the vault honours.
    fn issuer(&self, vault: Address) -> SettleFuture<'_, Option<Address>>;
    /// What the vault has paid `beneficiary` so far (the last cashed cumulative amount).
    fn paid_out(&self, vault: Address, beneficiary: Address) -> SettleFuture<'_, Option<U256>>;
    /// Approves and deposits `amount` of this node's tokens into `vault`.
    fn deposit(&self, vault: Address, amount: U256) -> SettleFuture<'_, Receipt>;
    /// Withdraws `amount` from `vault` to its issuer (this node).
    fn withdraw(&self, vault: Address, amount: U256) -> SettleFuture<'_, Receipt>;
    /// Cashes a cheque whose beneficiary is this node, to this node; the receipt's amount is what was paid.
    fn cash<'a>(&'a self, cheque: &'a SignedCheque) -> SettleFuture<'a, Receipt>;
    /// `who`'s balance of the settlement token.
    fn token_balance(&self, who: Address) -> SettleFuture<'_, Option<U256>>;
}
