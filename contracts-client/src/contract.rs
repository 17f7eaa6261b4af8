//! The storage contract: an EIP-712 struct the renter signs and the host countersigns, its payment schedule,
//! the host's price quote and the checks a host runs on a proposal before it countersigns.
//!
//! Domain: `EIP712Domain(string name,string version,uint256 chainId)` with name "BTFS Storage", version "1" and
//! the contract's chain id. No verifyingContract: a storage contract is never submitted to a chain contract; the
//! vault that pays for it is a field of the struct, so a signature cannot be moved to another vault.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::key::{KeyError, NodeKey};
use crate::settlement::SettlementKind;
use crate::sig::{SignatureError, recover};

/// The EIP-712 structs as Solidity would see them.
pub mod eip712 {
    alloy::sol! {
        /// The signed form of [`super::Contract`]; its type string is what both parties sign.
        #[derive(Debug, PartialEq, Eq)]
        struct StorageContract {
            bytes32 contractId;
            address renter;
            address host;
            bytes shardCid;
            uint64 shardSize;
            uint64 shardIndex;
            bytes32 uploadId;
            uint64 start;
            uint64 end;
            uint256 price;
            uint256 upfront;
            uint64 period;
            uint32 challengeInterval;
            uint32 challengeDeadline;
            uint32 failureThreshold;
            uint256 chainId;
            address token;
            address vault;
        }
    }
}

/// Bytes in a GiB, the unit of [`HostTerms::price_per_gib_day`].
pub const GIB: u64 = 1 << 30;
/// Seconds in a day, the other unit of [`HostTerms::price_per_gib_day`].
pub const DAY_SECS: u64 = 86_400;

/// The EIP-712 domain of storage contracts and host ads on `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    eip712_domain! { name: "BTFS Storage", version: "1", chain_id: chain_id, }
}

/// A storage contract between a renter and a host for one shard. Times are Unix seconds; amounts are in the
/// token's smallest unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// Chosen by the renter, unique per contract.
    #[serde(with = "codec::b256")]
    pub contract_id: B256,
    #[serde(with = "codec::address")]
    pub renter: Address,
    #[serde(with = "codec::address")]
    pub host: Address,
    /// The shard's CID in binary form.
    #[serde(with = "serde_bytes")]
    pub shard_cid: Vec<u8>,
    pub shard_size: u64,
    pub shard_index: u64,
    #[serde(with = "codec::b256")]
    pub upload_id: B256,
    pub start: u64,
    pub end: u64,
    /// Total price over the whole contract, upfront part included.
    #[serde(with = "codec::u256")]
    pub price: U256,
    /// Paid by the first cheque, once the host has passed a challenge.
    #[serde(with = "codec::u256")]
    pub upfront: U256,
    /// Seconds per payment period.
    pub period: u64,
    /// Seconds between challenges.
    pub challenge_interval: u32,
    /// Seconds the host has to answer a challenge.
    pub challenge_deadline: u32,
    /// Failed challenges after which the contract is treated as lost.
    pub failure_threshold: u32,
    pub chain_id: u64,
    #[serde(with = "codec::address")]
    pub token: Address,
    /// The renter's vault the cheques are drawn on (zero under the `none` settlement).
    #[serde(with = "codec::address")]
    pub vault: Address,
}

impl Contract {
    /// The EIP-712 struct both parties sign.
    pub fn to_eip712(&self) -> eip712::StorageContract {
        eip712::StorageContract {
            contractId: self.contract_id,
            renter: self.renter,
            host: self.host,
            shardCid: Bytes::copy_from_slice(&self.shard_cid),
            shardSize: self.shard_size,
            shardIndex: self.shard_index,
            uploadId: self.upload_id,
            start: self.start,
            end: self.end,
            price: self.price,
            upfront: self.upfront,
            period: self.period,
            challengeInterval: self.challenge_interval,
            challengeDeadline: self.challenge_deadline,
            failureThreshold: self.failure_threshold,
            chainId: U256::from(self.chain_id),
            token: self.token,
            vault: self.vault,
        }
    }

    /// The EIP-712 digest that renter and host sign.
    pub fn signing_hash(&self) -> B256 {
        self.to_eip712().eip712_signing_hash(&domain(self.chain_id))
    }

    /// `end - start`, or 0 if the times are reversed.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Number of payment periods: `ceil((end - start) / period)`; 0 when the period is 0 or the times are reversed.
    pub fn periods(&self) -> u64 {
        if self.period == 0 { 0 } else { self.duration().div_ceil(self.period) }
    }

    /// The cumulative amount owed once `periods_passed` periods have passed (and their challenges passed):
    /// `upfront + floor((price - upfront) * passed / periods)`, so rounding leaves the remainder to the last
    /// period and `amount_due_after(periods()) == price`. `amount_due_after(0)` is the upfront part.
    pub fn amount_due_after(&self, periods_passed: u64) -> U256 {
        let periods = self.periods();
        if periods == 0 || periods_passed >= periods {
            return self.price;
        }
        let rest = self.price.saturating_sub(self.upfront);
        let n = U256::from(periods);
        let passed = U256::from(periods_passed);
        // floor(rest * passed / n) without overflow: rest = q n + r, so it is q passed + floor(r passed / n),
        // where q passed <= rest and r passed < n^2 < 2^128.
        let (q, r) = (rest / n, rest % n);
        self.upfront + q * passed + r * passed / n
    }
}

/// The price a host asks for storing `shard_size` bytes for `duration_secs` at `price_per_gib_day`:
/// `ceil(price_per_gib_day * shard_size * duration_secs / (2^30 * 86400))`. Rounded up so that a host never
/// stores for less than its ask; saturates at `U256::MAX` (which no renter can pay) instead of overflowing.
pub fn quote_price(shard_size: u64, duration_secs: u64, price_per_gib_day: U256) -> U256 {
    let byte_secs = U256::from(u128::from(shard_size) * u128::from(duration_secs));
    let Some(numerator) = price_per_gib_day.checked_mul(byte_secs) else {
        return U256::MAX;
    };
    numerator.div_ceil(U256::from(u128::from(GIB) * u128::from(DAY_SECS)))
}

/// What a host accepts. Built from its configuration; checked by [`SignedContract::validate_terms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTerms {
    /// The host's own address: contracts must name it.
    pub host: Address,
    pub price_per_gib_day: U256,
    pub max_shard_size: u64,
    pub min_duration: u64,
    pub max_duration: u64,
    pub chain_id: u64,
    pub token: Address,
    /// Under `Evm` a contract must name a vault.
    pub settlement: SettlementKind,
    /// How far `start` may be from now, in either direction (clock skew and time in flight).
    pub max_start_skew: u64,
}

/// Why a host refuses a proposed contract. Each variant names the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    #[error("contract {contract_id}: renter signature invalid: {source}")]
    BadSignature { contract_id: B256, source: SignatureError },
    /// A signature by someone other than the party it stands for (renter or host).
    #[error("contract {contract_id}: signed by {signer}, expected {expected}")]
    WrongSigner { contract_id: B256, signer: Address, expected: Address },
    #[error("contract {contract_id}: not countersigned by the host")]
    NotCountersigned { contract_id: B256 },
    #[error("contract {contract_id}: end {end} is not after start {start}")]
    BadTimes { contract_id: B256, start: u64, end: u64 },
    #[error("contract {contract_id}: start {start} is too far in the past (now {now})")]
    StartPassed { contract_id: B256, start: u64, now: u64 },
    #[error("contract {contract_id}: start {start} is too far in the future (now {now})")]
    StartTooLate { contract_id: B256, start: u64, now: u64 },
    #[error("contract {contract_id}: duration {duration}s outside the accepted {min}..={max}s")]
    Duration { contract_id: B256, duration: u64, min: u64, max: u64 },
    #[error("contract {contract_id}: shard size is 0")]
    EmptyShard { contract_id: B256 },
    #[error("contract {contract_id}: shard size {size} above the maximum {max}")]
    ShardTooLarge { contract_id: B256, size: u64, max: u64 },
    #[error("contract {contract_id}: price {price} below the ask {ask}")]
    PriceTooLow { contract_id: B256, price: U256, ask: U256 },
    #[error("contract {contract_id}: upfront {upfront} above the price {price}")]
    UpfrontAbovePrice { contract_id: B256, upfront: U256, price: U256 },
    #[error("contract {contract_id}: names host {got}, this host is {expected}")]
    WrongHost { contract_id: B256, expected: Address, got: Address },
    #[error("contract {contract_id}: chain id {got}, this host settles on {expected}")]
    WrongChain { contract_id: B256, expected: u64, got: u64 },
    #[error("contract {contract_id}: token {got}, this host takes {expected}")]
    WrongToken { contract_id: B256, expected: Address, got: Address },
    #[error("contract {contract_id}: no vault, but this host settles on a chain")]
    NoVault { contract_id: B256 },
    #[error("contract {contract_id}: payment period is 0")]
    ZeroPeriod { contract_id: B256 },
    #[error(
        "contract {contract_id}: challenge interval {interval}s, deadline {deadline}s, threshold {threshold} \
         (each must be non-zero and the deadline no longer than the interval)"
    )]
    ChallengePolicy { contract_id: B256, interval: u32, deadline: u32, threshold: u32 },
}

/// A contract with the renter's signature and, once the host accepted, the host's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedContract {
    pub contract: Contract,
    /// 65 bytes `r || s || v` over [`Contract::signing_hash`].
    #[serde(with = "serde_bytes")]
    pub renter_sig: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub host_sig: Option<Vec<u8>>,
}

impl SignedContract {
    /// The renter's proposal. The key need not be `contract.renter`; [`Self::verify_renter`] catches that.
    pub fn sign_renter(contract: Contract, renter: &NodeKey) -> Result<Self, KeyError> {
        let renter_sig = renter.sign_digest(&contract.signing_hash())?.to_vec();
        Ok(Self { contract, renter_sig, host_sig: None })
    }

    /// The host's countersignature over the same digest.
    pub fn countersign(mut self, host: &NodeKey) -> Result<Self, KeyError> {
        self.host_sig = Some(host.sign_digest(&self.contract.signing_hash())?.to_vec());
        Ok(self)
    }

    /// Checks that the renter signature is by `contract.renter`.
    pub fn verify_renter(&self) -> Result<(), TermsError> {
        check_signer(&self.contract, &self.renter_sig, self.contract.renter)
    }

    /// Checks both signatures: the renter's by `contract.renter`, the host's by `contract.host`.
    pub fn verify_complete(&self) -> Result<(), TermsError> {
        self.verify_renter()?;
        let contract_id = self.contract.contract_id;
        let host_sig = self.host_sig.as_deref().ok_or(TermsError::NotCountersigned { contract_id })?;
        check_signer(&self.contract, host_sig, self.contract.host)
    }

    /// The host's checks before countersigning, in order: renter signature, times, size, settlement, price,
    /// schedule and challenge policy. `now_secs` is the host's clock.
    pub fn validate_terms(&self, now_secs: u64, terms: &HostTerms) -> Result<(), TermsError> {
        self.verify_renter()?;
        let c = &self.contract;
        let contract_id = c.contract_id;
        if c.end <= c.start {
            return Err(TermsError::BadTimes { contract_id, start: c.start, end: c.end });
        }
        if c.start.saturating_add(terms.max_start_skew) < now_secs {
            return Err(TermsError::StartPassed { contract_id, start: c.start, now: now_secs });
        }
        if c.start > now_secs.saturating_add(terms.max_start_skew) {
            return Err(TermsError::StartTooLate { contract_id, start: c.start, now: now_secs });
        }
        let duration = c.duration();
        if duration < terms.min_duration || duration > terms.max_duration {
            return Err(TermsError::Duration {
                contract_id,
                duration,
                min: terms.min_duration,
                max: terms.max_duration,
            });
        }
        if c.shard_size == 0 {
            return Err(TermsError::EmptyShard { contract_id });
        }
        if c.shard_size > terms.max_shard_size {
            return Err(TermsError::ShardTooLarge { contract_id, size: c.shard_size, max: terms.max_shard_size });
        }
        if c.host != terms.host {
            return Err(TermsError::WrongHost { contract_id, expected: terms.host, got: c.host });
        }
        if c.chain_id != terms.chain_id {
            return Err(TermsError::WrongChain { contract_id, expected: terms.chain_id, got: c.chain_id });
        }
        if c.token != terms.token {
            return Err(TermsError::WrongToken { contract_id, expected: terms.token, got: c.token });
        }
        if terms.settlement == SettlementKind::Evm && c.vault == Address::ZERO {
            return Err(TermsError::NoVault { contract_id });
        }
        let ask = quote_price(c.shard_size, duration, terms.price_per_gib_day);
        if c.price < ask {
            return Err(TermsError::PriceTooLow { contract_id, price: c.price, ask });
        }
        if c.upfront > c.price {
            return Err(TermsError::UpfrontAbovePrice { contract_id, upfront: c.upfront, price: c.price });
        }
        if c.period == 0 {
            return Err(TermsError::ZeroPeriod { contract_id });
        }
        if c.challenge_interval == 0
            || c.challenge_deadline == 0
            || c.challenge_deadline > c.challenge_interval
            || c.failure_threshold == 0
        {
            return Err(TermsError::ChallengePolicy {
                contract_id,
                interval: c.challenge_interval,
                deadline: c.challenge_deadline,
                threshold: c.failure_threshold,
            });
        }
        Ok(())
    }
}

fn check_signer(contract: &Contract, sig: &[u8], expected: Address) -> Result<(), TermsError> {
    let contract_id = contract.contract_id;
    let signer =
        recover(&contract.signing_hash(), sig).map_err(|source| TermsError::BadSignature { contract_id, source })?;
    if signer != expected {
        return Err(TermsError::WrongSigner { contract_id, signer, expected });
    }
    Ok(())
}
