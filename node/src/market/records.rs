//! What the market keeps in RocksDB, and how: JSON values in two column families.
//!
//! - `contracts`: contract id (hex) → `ContractRecord`, for both roles (a node can rent and host at once).
//! - `market`: `upload/<id>` → `UploadRecord`; `sent/<host address>` → `SentCheques` (the renter's
//!   cumulative cheque to one host); `recv/<vault>/<issuer>` → `ReceivedCheques` (the host's last cheque
//!   from one vault and issuer); `rep/<peer>` → `Reputation`.
//!
//! Every change is a read-modify-write under the market's ledger lock, written synced in one batch, so a
//! restarted node finds every contract, cheque and upload where it was and resumes them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use btfs_contracts_client::cheque::SignedCheque;
use btfs_contracts_client::contract::SignedContract;

use crate::repo::store::{BlockStore, Records, StoreError};

/// Which side of a contract this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Renter,
    Host,
}

/// The states a contract can be in; each contract is in exactly one.
///
/// Renter: `proposed` (signed, sent) → `placed` (countersigned, host fetching) → `active` (host confirmed it
/// holds the shard) → `ended` at its end time, or `lost` (failed `FailureThreshold` challenges in a row, or
/// the host vanished), or `failed` (the host never confirmed). Host: `fetching` → `active` → `ended` |
/// `released` (the renter released it, or it went unpaid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractState {
    Proposed,
    Placed,
    Fetching,
    Active,
    Lost,
    Failed,
    Ended,
    Released,
}

impl ContractState {
    /// Whether the shard is (or should be) held under this contract.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Placed | Self::Fetching | Self::Active)
    }
}

/// One contract, from this node's side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractRecord {
    pub id: String,
    pub role: Role,
    pub contract: SignedContract,
    /// The other side's peer id.
    pub peer: String,
    pub state: ContractState,
    /// The renter's upload this contract serves (renter side).
    pub upload: Option<String>,
    pub shard_index: u32,
    pub shard_cid: String,
    pub piece_size: u64,
    pub proofs_passed: u64,
    pub proofs_failed: u64,
    pub failures_in_a_row: u32,
    /// Payment periods (1-based) in which a challenge failed: those periods are not paid.
    pub failed_periods: Vec<u64>,
    /// Periods settled so far (paid or withheld), not counting the upfront part.
    pub periods_settled: u64,
    /// Whether the upfront part has been paid (renter) or received (host).
    pub upfront_paid: bool,
    /// Amount paid under this contract so far, in base units (decimal).
    pub paid: String,
    /// Unix seconds of the next challenge (renter side).
    pub next_challenge: u64,
    /// Why the contract is lost, failed or released.
    pub reason: Option<String>,
}

/// A shard of an upload, and where it lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: u32,
    pub cid: String,
    pub host: Option<String>,
    pub contract: Option<String>,
    /// Hosts that held this shard before and lost it, or refused it.
    pub former_hosts: Vec<String>,
    /// `pending`, `placing`, `placed`, `stored`, `lost`, `repairing`.
    pub state: String,
}

/// The states of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Encoding,
    Placing,
    /// Every shard is held under an active contract.
    Active,
    /// Some shard has no active contract; repair is working on it.
    Degraded,
    Failed,
}

/// One `storage upload` session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    pub file: String,
    pub manifest: Option<String>,
    pub file_size: u64,
    pub data_shards: u32,
    pub parity_shards: u32,
    pub piece_size: u64,
    pub shard_size: u64,
    pub duration_secs: u64,
    /// The renter's ceiling per GiB per day (base units, decimal).
    pub max_price: Option<String>,
    /// Hosts the user named; empty means discover through the DHT.
    pub hosts: Vec<String>,
    pub shards: Vec<ShardRecord>,
    pub state: UploadState,
    pub error: Option<String>,
    pub created: u64,
}

/// The renter's cumulative cheque to one host (Swarm-style: one running total per beneficiary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentCheques {
    pub beneficiary: String,
    pub peer: String,
    /// The latest cheque signed; resending it is always safe.
    pub last: SignedCheque,
    /// Whether the host acknowledged `last`.
    pub delivered: bool,
}

/// The host's latest cheque from one vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedCheques {
    pub vault: String,
    pub issuer: String,
    pub last: SignedCheque,
    /// Cumulative amount cashed on chain (decimal), `0` under `none`.
    pub cashed: String,
    pub last_cash_error: Option<String>,
}

/// What a renter has seen of a host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reputation {
    pub passed: u64,
    pub failed: u64,
    pub lost: u64,
}

impl Reputation {
    /// A score in [0, 1]: the share of passed challenges, with a prior of one pass and one failure, and each
    /// lost contract weighing ten failures.
    pub fn score(&self) -> f64 {
        let good = self.passed as f64 + 1.0;
        let bad = self.failed as f64 + 10.0 * self.lost as f64 + 1.0;
        good / (good + bad)
    }
}

/// Errors reading or writing market records.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("market record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

pub(crate) fn get<T: DeserializeOwned>(store: &BlockStore, kind: Records, key: &str) -> Result<Option<T>, RecordError> {
    match store.record_get(kind, key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RecordError::Corrupt { key: key.to_string(), reason: e.to_string() }),
    }
}

pub(crate) fn scan<T: DeserializeOwned>(
    store: &BlockStore,
    kind: Records,
    prefix: &str,
) -> Result<Vec<T>, RecordError> {
    store
        .record_scan(kind, prefix.as_bytes())?
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v).map_err(|e| RecordError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A batch of record writes, applied at once.
#[derive(Default)]
pub(crate) struct Batch {
    puts: Vec<(Records, String, Vec<u8>)>,
}

impl Batch {
    pub(crate) fn put(&mut self, kind: Records, key: String, value: &impl Serialize) -> &mut Self {
        // Serializing these plain structs cannot fail; a failure would be a bug worth an empty write.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        debug_assert!(!bytes.is_empty(), "record {key} did not serialize");
        self.puts.push((kind, key, bytes));
        self
    }

    pub(crate) fn contract(&mut self, record: &ContractRecord) -> &mut Self {
        self.put(Records::Contracts, record.id.clone(), record)
    }

    pub(crate) fn upload(&mut self, record: &UploadRecord) -> &mut Self {
        self.put(Records::Market, format!("upload/{}", record.id), record)
    }

    pub(crate) fn write(&self, store: &BlockStore) -> Result<(), StoreError> {
        let puts: Vec<(Records, &[u8], &[u8])> =
            self.puts.iter().map(|(kind, k, v)| (*kind, k.as_bytes(), v.as_slice())).collect();
        store.record_write(&puts, &[])
    }
}
