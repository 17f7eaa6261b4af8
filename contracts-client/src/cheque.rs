//! Cumulative cheques drawn on a renter's vault (Swarm chequebook / go-btfs vault style), and the host's checks.
//!
//! EIP-712 type `Cheque(address vault,address beneficiary,uint256 cumulativePayout)` under the domain
//! `EIP712Domain(string name,string version,uint256 chainId)`, name "Vault", version "1.0", no verifyingContract
//! (as go-btfs's `VaultDomain` and Swarm's `ChequebookDomain`; the vault is a field of the cheque). `Vault.sol`
//! computes the same digest. Each cheque carries the total ever owed to the beneficiary; a host accepts one only
//! if it raises the last total, and the vault pays the difference from what it already paid.

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::key::{KeyError, NodeKey};
use crate::sig::{SignatureError, recover};

/// The EIP-712 struct as Solidity sees it.
pub mod eip712 {
    alloy::sol! {
        /// The signed form of [`super::Cheque`] (its chain id goes in the domain).
        #[derive(Debug, PartialEq, Eq)]
        struct Cheque {
            address vault;
            address beneficiary;
            uint256 cumulativePayout;
        }
    }
}

/// The EIP-712 domain of vault cheques on `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    eip712_domain! { name: "Vault", version: "1.0", chain_id: chain_id, }
}

/// A cheque: `vault` owes `beneficiary` a total of `cumulative_payout` on `chain_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cheque {
    pub chain_id: u64,
    #[serde(with = "codec::address")]
    pub vault: Address,
    #[serde(with = "codec::address")]
    pub beneficiary: Address,
    #[serde(with = "codec::u256")]
    pub cumulative_payout: U256,
}

impl Cheque {
    pub fn to_eip712(&self) -> eip712::Cheque {
        eip712::Cheque { vault: self.vault, beneficiary: self.beneficiary, cumulativePayout: self.cumulative_payout }
    }

    /// The EIP-712 digest the vault's issuer signs; `Vault.chequeDigest` returns the same.
    pub fn signing_hash(&self) -> B256 {
        self.to_eip712().eip712_signing_hash(&domain(self.chain_id))
    }
}

/// A cheque with its issuer's signature (65 bytes `r || s || v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheque {
    pub cheque: Cheque,
    #[serde(with = "serde_bytes")]
    pub issuer_sig: Vec<u8>,
}

impl SignedCheque {
    /// Signs `cheque` with the vault issuer's key.
    pub fn sign(cheque: Cheque, issuer: &NodeKey) -> Result<Self, KeyError> {
        let issuer_sig = issuer.sign_digest(&cheque.signing_hash())?.to_vec();
        Ok(Self { cheque, issuer_sig })
    }

    /// The address that signed the cheque.
    pub fn recover_issuer(&self) -> Result<Address, SignatureError> {
        recover(&self.cheque.signing_hash(), &self.issuer_sig)
    }
}

/// Why a host refuses a cheque. Each variant names the vault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChequeError {
    #[error("cheque on vault {vault}: bad signature: {source}")]
    BadSignature { vault: Address, source: SignatureError },
    #[error("cheque on vault {vault}: signed by {signer}, not the vault's issuer {issuer}")]
    Forged { vault: Address, signer: Address, issuer: Address },
    #[error("cheque on vault {vault}: pays {got}, not this host {expected}")]
    WrongBeneficiary { vault: Address, expected: Address, got: Address },
    #[error("cheque on vault {got}, expected vault {expected}")]
    WrongVault { expected: Address, got: Address },
    #[error("cheque on vault {vault}: chain id {got}, expected {expected}")]
    WrongChain { vault: Address, expected: u64, got: u64 },
    #[error("cheque on vault {vault}: cumulative {got} does not raise the last accepted {last}")]
    NotIncreasing { vault: Address, last: U256, got: U256 },
    #[error("cheque on vault {vault}: cashing needs {needed}, the vault holds {available}")]
    InsufficientFunds { vault: Address, needed: U256, available: U256 },
}

/// What a host expects of cheques from one renter: a pure checker, no chain access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChequeCheck {
    /// The vault's issuer (read from the chain, or the renter's address under the `none` settlement).
    pub issuer: Address,
    pub vault: Address,
    /// This host.
    pub beneficiary: Address,
    pub chain_id: u64,
}

impl ChequeCheck {
    /// Checks a cheque against the last cumulative amount this host accepted from the vault and returns the
    /// increase. Checks the addresses and chain first, then the signature, then the amount, so a replayed cheque
    /// is reported as [`ChequeError::NotIncreasing`].
    pub fn verify(&self, cheque: &SignedCheque, last_cumulative: U256) -> Result<U256, ChequeError> {
        let c = &cheque.cheque;
        if c.vault != self.vault {
            return Err(ChequeError::WrongVault { expected: self.vault, got: c.vault });
        }
        let vault = c.vault;
        if c.chain_id != self.chain_id {
            return Err(ChequeError::WrongChain { vault, expected: self.chain_id, got: c.chain_id });
        }
        if c.beneficiary != self.beneficiary {
            return Err(ChequeError::WrongBeneficiary { vault, expected: self.beneficiary, got: c.beneficiary });
        }
        let signer = cheque.recover_issuer().map_err(|source| ChequeError::BadSignature { vault, source })?;
        if signer != self.issuer {
            return Err(ChequeError::Forged { vault, signer, issuer: self.issuer });
        }
        if c.cumulative_payout <= last_cumulative {
            return Err(ChequeError::NotIncreasing { vault, last: last_cumulative, got: c.cumulative_payout });
        }
        Ok(c.cumulative_payout - last_cumulative)
    }

    /// Checks that the vault can pay this cheque in full now: cashing pays `cumulative - paid_out` (what the vault
    /// already paid this beneficiary, read from the chain) out of `balance` (the vault's token balance). Other
    /// beneficiaries' uncashed cheques compete for the same balance; hosts cash past a threshold for that reason.
    pub fn check_funds(&self, cheque: &SignedCheque, paid_out: U256, balance: U256) -> Result<(), ChequeError> {
        let needed = cheque.cheque.cumulative_payout.saturating_sub(paid_out);
        if needed > balance {
            return Err(ChequeError::InsufficientFunds { vault: cheque.cheque.vault, needed, available: balance });
        }
        Ok(())
    }
}
