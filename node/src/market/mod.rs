//! The storage market: a renter pays hosts to keep the shards of its files; hosts earn by storing them.
//! `docs/market.md` is the design; this module runs it inside the daemon.
//!
//! Topology: one `Market` per daemon, shared (`Arc`) by the RPC handlers, the protocol server (`proto`:
//! inbound requests go to `Market::handle`), and the checker task (`checker`: challenges, payments,
//! repair, expiry, cashing). The renter side is in `renter`, the host side in `host`. All state is in RocksDB
//! (`records`); the only in-memory state is the ledger lock that serialises read-modify-write of records,
//! and the set of running upload and repair tasks. RocksDB and block reads run on blocking threads.

mod checker;
mod host;
mod money;
pub(crate) mod proto;
pub mod records;
mod renter;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use btfs_chunker::hash::Multihash;
use btfs_contracts_client::settlement::{EvmConfig, EvmSettlement, NoSettlement, Settlement};
use btfs_contracts_client::wire::{RefuseCode, Request, Response};
use btfs_contracts_client::{Address, NodeKey, U256};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use self::records::{ContractRecord, RecordError, UploadRecord};
use crate::Node;
use crate::net::Network;
use crate::repo::config::{Config, parse_duration, parse_size};
use crate::repo::store::Records;

pub use self::renter::{DownloadReport, UploadOptions};

/// The DHT key under which hosts announce themselves: sha2-256 of this string.
pub const HOSTS_KEY: &str = "/btfs/storage/hosts/1.0.0";

/// The market's settings, validated from `Storage.*` and `Settlement.*`.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    pub host_enabled: bool,
    pub price_per_gib_day: U256,
    pub max_storage: u64,
    pub max_shard_size: u64,
    pub min_duration: Duration,
    pub max_duration: Duration,
    pub challenge_interval: Duration,
    pub challenge_deadline: Duration,
    pub failure_threshold: u32,
    pub payment_period: Duration,
    pub upfront_percent: u8,
    pub repair: bool,
    pub check_interval: Duration,
    pub settlement: SettlementChoice,
}

/// Where cheques settle.
#[derive(Debug, Clone)]
pub enum SettlementChoice {
    None,
    Evm { rpc_url: String, chain_id: u64, token: Address, vault: Option<Address>, cash_threshold: U256 },
}

fn parse_amount(key: &str, text: &str) -> Result<U256, String> {
    text.parse::<U256>().map_err(|e| format!("{key}: {text:?} is not an amount in base units: {e}"))
}

fn parse_address(key: &str, text: &str) -> Result<Address, String> {
    text.parse::<Address>().map_err(|e| format!("{key}: {text:?} is not an address: {e}"))
}

impl MarketConfig {
    /// Reads and checks the settings.
    pub fn from_settings(config: &Config) -> Result<Self, String> {
        let s = &config.storage;
        let h = &s.host;
        let dur = |key: &str, text: &str| parse_duration(text).map_err(|e| format!("{key}: {e}"));
        let size = |key: &str, text: &str| parse_size(text).map_err(|e| format!("{key}: {e}"));
        let settlement = match config.settlement.backend.as_str() {
            "none" => SettlementChoice::None,
            "evm" => {
                let t = &config.settlement;
                if t.token.is_empty() {
                    return Err("Settlement.Token: the evm backend needs the token's address".into());
                }
                SettlementChoice::Evm {
                    rpc_url: t.rpc_url.clone(),
                    chain_id: t.chain_id,
                    token: parse_address("Settlement.Token", &t.token)?,
                    vault: if t.vault.is_empty() { None } else { Some(parse_address("Settlement.Vault", &t.vault)?) },
                    cash_threshold: parse_amount("Settlement.CashThreshold", &t.cash_threshold)?,
                }
            }
            other => return Err(format!("Settlement.Backend: {other:?} is not none or evm")),
        };
        let out = Self {
            host_enabled: h.enabled,
            price_per_gib_day: parse_amount("Storage.Host.PricePerGiBDay", &h.price_per_gib_day)?,
            max_storage: size("Storage.Host.MaxStorage", &h.max_storage)?,
            max_shard_size: size("Storage.Host.MaxShardSize", &h.max_shard_size)?,
            min_duration: dur("Storage.Host.MinDuration", &h.min_duration)?,
            max_duration: dur("Storage.Host.MaxDuration", &h.max_duration)?,
            challenge_interval: dur("Storage.ChallengeInterval", &s.challenge_interval)?,
            challenge_deadline: dur("Storage.ChallengeDeadline", &s.challenge_deadline)?,
            failure_threshold: s.failure_threshold,
            payment_period: dur("Storage.PaymentPeriod", &s.payment_period)?,
            upfront_percent: s.upfront_percent,
            repair: s.repair,
            check_interval: dur("Storage.CheckInterval", &s.check_interval)?,
            settlement,
        };
        if out.failure_threshold == 0 {
            return Err("Storage.FailureThreshold must be at least 1".into());
        }
        if out.challenge_deadline.is_zero() || out.challenge_deadline > out.challenge_interval {
            return Err(format!(
                "Storage.ChallengeDeadline ({:?}) must be non-zero and no longer than Storage.ChallengeInterval ({:?})",
                out.challenge_deadline, out.challenge_interval
            ));
        }
        if out.upfront_percent > 100 {
            return Err("Storage.UpfrontPercent must be at most 100".into());
        }
        if out.min_duration > out.max_duration {
            return Err("Storage.Host.MinDuration is longer than MaxDuration".into());
        }
        Ok(out)
    }

    fn kind(&self) -> btfs_contracts_client::SettlementKind {
        match self.settlement {
            SettlementChoice::None => btfs_contracts_client::SettlementKind::None,
            SettlementChoice::Evm { .. } => btfs_contracts_client::SettlementKind::Evm,
        }
    }

    fn chain(&self) -> (u64, Address, Address) {
        match &self.settlement {
            SettlementChoice::None => (0, Address::ZERO, Address::ZERO),
            SettlementChoice::Evm { chain_id, token, vault, .. } => (*chain_id, *token, vault.unwrap_or(Address::ZERO)),
        }
    }
}

/// The chain side of the market.
enum Chain {
    None(Arc<NoSettlement>),
    Evm { config: EvmConfig, conn: tokio::sync::OnceCell<Arc<EvmSettlement>> },
}

/// Errors of market commands, each naming what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("storage commands need a running daemon with the network on (btfs daemon)")]
    Offline,
    #[error("{0}")]
    Invalid(String),
    #[error("no upload {0}")]
    NoUpload(String),
    #[error("no contract {0}")]
    NoContract(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] crate::repo::store::StoreError),
    #[error("settlement: {0}")]
    Settlement(String),
    #[error("{0}")]
    Failed(String),
}

/// The market of one daemon.
pub struct Market {
    node: Arc<Node>,
    network: Network,
    key: NodeKey,
    address: Address,
    chain: Chain,
    /// Serialises read-modify-write of records (contracts, cheques, uploads).
    ledger: tokio::sync::Mutex<()>,
    /// Uploads and repairs running in this process (so the checker does not start one twice).
    running: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Market").field("address", &self.address).finish_non_exhaustive()
    }
}

/// Unix time in seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The multihash the hosts' provider records are kept under.
pub fn hosts_key() -> Multihash {
    btfs_chunker::hash::HashFunction::Sha2_256.digest(HOSTS_KEY.as_bytes())
}

/// The EVM address of a peer whose identity is a secp256k1 key (BTFS's rule: one key for both).
pub fn address_of_peer(peer: &PeerId) -> Option<Address> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let key = key.try_into_secp256k1().ok()?;
    let uncompressed = key.to_bytes_uncompressed();
    // 0x04 || x || y; the address is the last 20 bytes of keccak(x || y).
    Some(Address::from_raw_public_key(uncompressed.get(1..)?))
}

impl Market {
    /// Starts the market: the protocol server, the checker, and (in host mode) the DHT announcement.
    pub async fn start(
        node: Arc<Node>,
        network: Network,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, MarketError> {
        let config = node.market_config().map_err(MarketError::Invalid)?;
        let secret = node
            .repo()
            .keypair()
            .clone()
            .try_into_secp256k1()
            .map_err(|_| MarketError::Invalid("the storage market needs a secp256k1 identity key".into()))?
            .secret()
            .to_bytes();
        let key = NodeKey::from_secret(&secret).map_err(|e| MarketError::Invalid(e.to_string()))?;
        let address = key.address();
        let chain = match &config.settlement {
            SettlementChoice::None => Chain::None(Arc::new(NoSettlement)),
            SettlementChoice::Evm { rpc_url, chain_id, token, vault, .. } => Chain::Evm {
                config: EvmConfig { rpc_url: rpc_url.clone(), chain_id: *chain_id, token: *token, vault: *vault },
                conn: tokio::sync::OnceCell::new(),
            },
        };
        let market = Arc::new(Self {
            node,
            network,
            key,
            address,
            chain,
            ledger: tokio::sync::Mutex::new(()),
            running: Default::default(),
        });
        tokio::spawn(proto::serve(market.clone(), shutdown.clone()));
        tokio::spawn(checker::run(market.clone(), shutdown));
        if config.host_enabled {
            market.announce_host().await;
        }
        Ok(market)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// The EVM connection (made on first use, so that a chain that is down when the daemon starts only
    /// delays payments), or `None` under the `none` backend.
    async fn evm(&self) -> Result<Option<Arc<EvmSettlement>>, MarketError> {
        match &self.chain {
            Chain::None(_) => Ok(None),
            Chain::Evm { config, conn } => conn
                .get_or_try_init(|| async {
                    EvmSettlement::connect(config.clone(), self.key.clone()).await.map(Arc::new)
                })
                .await
                .cloned()
                .map(Some)
                .map_err(|e| MarketError::Settlement(e.to_string())),
        }
    }

    /// The settlement backend in use.
    async fn settlement(&self) -> Result<Arc<dyn Settlement>, MarketError> {
        match &self.chain {
            Chain::None(none) => Ok(none.clone()),
            Chain::Evm { .. } => match self.evm().await? {
                Some(evm) => Ok(evm),
                None => Err(MarketError::Settlement("no chain connection".into())),
            },
        }
    }

    /// The current settings (validated whenever the config is loaded or changed, so the fallback is only
    /// for a broken invariant).
    fn config(&self) -> MarketConfig {
        self.node.market_config().unwrap_or_else(|e| {
            tracing::error!(error = %e, "market config invalid; host mode off, repair off");
            fallback_config()
        })
    }

    /// Puts this node's host provider record in the DHT.
    pub async fn announce_host(&self) {
        if let Err(e) = self.network.swarm.provide(hosts_key()).await {
            tracing::warn!(error = %e, "cannot announce host mode to the DHT");
        }
    }

    /// Answers one inbound request.
    async fn handle(self: &Arc<Self>, peer: PeerId, req: Request) -> Response {
        let result = match req {
            Request::Quote { shard_size, duration_secs } => self.host_quote(shard_size, duration_secs),
            Request::Propose { contract } => self.host_propose(peer, contract).await,
            Request::Challenge { contract_id, leaf_index } => self.host_challenge(peer, contract_id, leaf_index).await,
            Request::Pay { contract_id, cheque } => self.host_pay(peer, contract_id, cheque).await,
            Request::Release { contract_id } => self.host_release(peer, contract_id).await,
            Request::Stored { contract_id } => self.renter_stored(peer, contract_id).await,
        };
        result.unwrap_or_else(|(code, reason)| {
            tracing::info!(%peer, ?code, %reason, "storage request refused");
            Response::Refused { code, reason }
        })
    }

    fn store(&self) -> &crate::repo::store::BlockStore {
        self.node.repo().store()
    }

    /// Runs blocking record or block work off the async runtime.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Market) -> T + Send + 'static,
    ) -> Result<T, MarketError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(|e| MarketError::Failed(format!("task failed: {e}")))
    }

    fn contract_record(&self, id: &str) -> Result<Option<ContractRecord>, RecordError> {
        records::get(self.store(), Records::Contracts, id)
    }

    fn upload_record(&self, id: &str) -> Result<Option<UploadRecord>, RecordError> {
        records::get(self.store(), Records::Market, &format!("upload/{id}"))
    }

    /// Every contract this node is party to.
    pub fn contracts(&self) -> Result<Vec<ContractRecord>, MarketError> {
        Ok(records::scan(self.store(), Records::Contracts, "")?)
    }

    /// Every upload this node made.
    pub fn uploads(&self) -> Result<Vec<UploadRecord>, MarketError> {
        Ok(records::scan(self.store(), Records::Market, "upload/")?)
    }

    fn refuse(code: RefuseCode, reason: impl Into<String>) -> (RefuseCode, String) {
        (code, reason.into())
    }
}

fn fallback_config() -> MarketConfig {
    MarketConfig {
        host_enabled: false,
        price_per_gib_day: U256::ZERO,
        max_storage: 0,
        max_shard_size: 0,
        min_duration: Duration::from_secs(60),
        max_duration: Duration::from_secs(60),
        challenge_interval: Duration::from_secs(3600),
        challenge_deadline: Duration::from_secs(30),
        failure_threshold: 3,
        payment_period: Duration::from_secs(86_400),
        upfront_percent: 10,
        repair: false,
        check_interval: Duration::from_secs(10),
        settlement: SettlementChoice::None,
    }
}

impl Node {
    /// The market's settings from the current config.
    pub fn market_config(&self) -> Result<MarketConfig, String> {
        MarketConfig::from_settings(self.repo().config().typed())
    }

    /// The running market, when the daemon runs with the network.
    pub fn market(&self) -> Result<&Arc<Market>, MarketError> {
        self.market.get().ok_or(MarketError::Offline)
    }
}
