//! The messages of the storage protocol `/btfs/storage/1.0.0` and the host's signed ad.
//!
//! The node sends [`Request`] and [`Response`] with libp2p request-response's CBOR codec (cbor4ii through
//! serde); [`encode`] and [`decode`] use the same encoder with the [`MAX_MESSAGE`] cap, for tests and fuzzing.
//! Addresses, words and amounts are fixed-length CBOR byte strings (20 or 32 bytes, amounts big-endian).
//!
//! A [`HostAd`] is signed as the EIP-712 struct [`eip712::HostAd`] in the "BTFS Storage" domain of
//! [`crate::contract::domain`] on the ad's chain id (0 under the `none` settlement); EIP-712 rather than a
//! signature over CBOR bytes, because CBOR encoders need not agree byte for byte.

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolStruct;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cheque::SignedCheque;
use crate::codec;
use crate::contract::{SignedContract, domain};
use crate::key::{KeyError, NodeKey};
use crate::settlement::SettlementKind;
use crate::sig::{SignatureError, recover};

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/btfs/storage/1.0.0";
/// Largest message either side sends or accepts: a proof carries one leaf (at most 1 MiB, the largest chunk) plus
/// the path nodes from the shard root, far below this.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How far in the future an ad's `issued_at` may be (clock skew), in seconds.
pub const AD_CLOCK_SKEW: u64 = 300;

/// Renter → host, except [`Request::Stored`] which the host sends once it holds the shard.
// A message lives for one exchange; boxing the contract would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// What would storing `shard_size` bytes for `duration_secs` cost? Answered by [`Response::Quote`].
    Quote { shard_size: u64, duration_secs: u64 },
    /// A renter-signed contract; answered by [`Response::Accepted`] or [`Response::Refused`].
    Propose { contract: SignedContract },
    /// Prove possession of leaf `leaf_index` of the contract's shard; answered by [`Response::Proof`].
    Challenge {
        #[serde(with = "codec::b256")]
        contract_id: B256,
        leaf_index: u64,
    },
    /// A cheque for the contract; answered by [`Response::ChequeAccepted`].
    Pay {
        #[serde(with = "codec::b256")]
        contract_id: B256,
        cheque: SignedCheque,
    },
    /// The renter ends the contract; the host may drop the shard.
    Release {
        #[serde(with = "codec::b256")]
        contract_id: B256,
    },
    /// Host → renter: the shard is fetched and pinned.
    Stored {
        #[serde(with = "codec::b256")]
        contract_id: B256,
    },
}

/// Answers to a [`Request`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Quote(SignedHostAd),
    /// The contract, countersigned.
    Accepted {
        contract: SignedContract,
    },
    /// The leaf and the encoded DAG nodes from the shard root down to it.
    Proof {
        #[serde(with = "codec::bytes_list")]
        path: Vec<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        leaf: Vec<u8>,
    },
    /// The new cumulative total accepted for the contract's vault.
    ChequeAccepted {
        #[serde(with = "codec::u256")]
        cumulative: U256,
    },
    Ack,
    Refused {
        code: RefuseCode,
        reason: String,
    },
}

/// Why a request was refused, for the renter's logic; the reason string is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseCode {
    Capacity,
    Price,
    ShardSize,
    Duration,
    BadSignature,
    Terms,
    UnknownContract,
    NotHeld,
    Cheque,
    Busy,
    Malformed,
}

/// The EIP-712 struct of a host ad.
pub mod eip712 {
    alloy::sol! {
        /// The signed form of [`super::HostAd`].
        #[derive(Debug, PartialEq, Eq)]
        struct HostAd {
            address host;
            string peerId;
            uint256 pricePerGibDay;
            uint64 maxShardSize;
            uint64 freeSpace;
            uint64 minDuration;
            uint64 maxDuration;
            uint256 chainId;
            address token;
            string settlement;
            uint64 issuedAt;
            uint64 expiresAt;
        }
    }
}

/// A host's offer, also its answer to [`Request::Quote`]. The crate cannot check that `peer_id` belongs to
/// `host` (it knows no libp2p); the node checks that the peer's secp256k1 key gives `host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAd {
    #[serde(with = "codec::address")]
    pub host: Address,
    pub peer_id: String,
    #[serde(with = "codec::u256")]
    pub price_per_gib_day: U256,
    pub max_shard_size: u64,
    pub free_space: u64,
    pub min_duration: u64,
    pub max_duration: u64,
    pub chain_id: u64,
    #[serde(with = "codec::address")]
    pub token: Address,
    pub settlement: SettlementKind,
    /// Unix seconds.
    pub issued_at: u64,
    pub expires_at: u64,
}

impl HostAd {
    pub fn to_eip712(&self) -> eip712::HostAd {
        eip712::HostAd {
            host: self.host,
            peerId: self.peer_id.clone(),
            pricePerGibDay: self.price_per_gib_day,
            maxShardSize: self.max_shard_size,
            freeSpace: self.free_space,
            minDuration: self.min_duration,
            maxDuration: self.max_duration,
            chainId: U256::from(self.chain_id),
            token: self.token,
            settlement: self.settlement.as_str().to_owned(),
            issuedAt: self.issued_at,
            expiresAt: self.expires_at,
        }
    }

    pub fn signing_hash(&self) -> B256 {
        self.to_eip712().eip712_signing_hash(&domain(self.chain_id))
    }
}

/// A host ad with the host's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHostAd {
    pub ad: HostAd,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// Why a host ad is not to be trusted. Each variant names the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    #[error("ad of host {host}: bad signature: {source}")]
    BadSignature { host: Address, source: SignatureError },
    #[error("ad of host {host}: signed by {signer}")]
    WrongSigner { host: Address, signer: Address },
    #[error("ad of host {host}: expired at {expires_at} (now {now})")]
    Expired { host: Address, expires_at: u64, now: u64 },
    #[error("ad of host {host}: issued at {issued_at}, in the future (now {now})")]
    NotYetValid { host: Address, issued_at: u64, now: u64 },
}

impl SignedHostAd {
    /// Signs `ad` with the host's key.
    pub fn sign(ad: HostAd, host: &NodeKey) -> Result<Self, KeyError> {
        let sig = host.sign_digest(&ad.signing_hash())?.to_vec();
        Ok(Self { ad, sig })
    }

    /// Checks the signature is by `ad.host` and that the ad is valid at `now` (Unix seconds), allowing
    /// [`AD_CLOCK_SKEW`] for `issued_at`.
    pub fn verify(&self, now: u64) -> Result<(), AdError> {
        let host = self.ad.host;
        let signer =
            recover(&self.ad.signing_hash(), &self.sig).map_err(|source| AdError::BadSignature { host, source })?;
        if signer != host {
            return Err(AdError::WrongSigner { host, signer });
        }
        if self.ad.issued_at > now.saturating_add(AD_CLOCK_SKEW) {
            return Err(AdError::NotYetValid { host, issued_at: self.ad.issued_at, now });
        }
        if now >= self.ad.expires_at {
            return Err(AdError::Expired { host, expires_at: self.ad.expires_at, now });
        }
        Ok(())
    }
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {reason}")]
    Malformed { reason: String },
    #[error("encoding failed: {reason}")]
    Encode { reason: String },
}

/// CBOR-encodes a message, refusing one larger than [`MAX_MESSAGE`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), message).map_err(|e| WireError::Encode { reason: e.to_string() })?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge { len: bytes.len(), max: MAX_MESSAGE });
    }
    Ok(bytes)
}

/// Decodes a CBOR message of at most [`MAX_MESSAGE`] bytes. Like libp2p's codec, it ignores trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge { len: bytes.len(), max: MAX_MESSAGE });
    }
    cbor4ii::serde::from_slice(bytes).map_err(|e| WireError::Malformed { reason: e.to_string() })
}
