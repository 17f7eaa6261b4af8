//! The repo's `config` file: JSON with kubo's key names, read as a typed view, edited as a JSON tree.
//!
//! Unknown keys are kept (a user's or a newer version's settings survive a rewrite). Every change is checked
//! by parsing the whole typed view before the file is replaced, and the file is replaced atomically
//! (write to a temporary file, fsync, rename), so a bad value or a crash never leaves a broken config.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The typed view of the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    pub identity: IdentityConfig,
    pub addresses: Addresses,
    #[serde(default)]
    pub bootstrap: Vec<String>,
    #[serde(default)]
    pub datastore: Datastore,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub reprovider: Reprovider,
    #[serde(default)]
    pub gateway: GatewaySettings,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub settlement: SettlementSettings,
    #[serde(default, rename = "BitTorrent")]
    pub bit_torrent: BitTorrentSettings,
}

/// The BitTorrent engine (`BitTorrent.*`), used by imports and by the daemon's seeding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BitTorrentSettings {
    /// TCP `ip:port` for peers; port 0 picks a free port (each import runs its own session).
    pub listen: String,
    /// Run a DHT node (BEP 5) for magnets without trackers and for announcing seeds.
    pub dht: bool,
    /// DHT bootstrap nodes as `host:port`; `null` means the engine's public defaults.
    pub dht_bootstrap: Option<Vec<String>>,
    /// Local service discovery (BEP 14, multicast on the LAN).
    pub local_discovery: bool,
    /// Trackers announced to for every torrent seeded, besides its own.
    pub trackers: Vec<String>,
}

impl Default for BitTorrentSettings {
    fn default() -> Self {
        Self { listen: "0.0.0.0:0".into(), dht: true, dht_bootstrap: None, local_discovery: true, trackers: Vec::new() }
    }
}

impl BitTorrentSettings {
    /// Settings that never reach past loopback: the `test` profile's.
    pub fn loopback() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            dht_bootstrap: Some(Vec::new()),
            local_discovery: false,
            ..Self::default()
        }
    }

    /// Checks what can be checked without starting anything.
    pub fn check(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("BitTorrent.Listen {:?} is not ip:port: {e}", self.listen))?;
        Ok(())
    }
}

/// The storage market (`Storage.*`): host mode, and the renter's proof, payment and repair schedule.
/// Durations are strings such as `30s`, `10m`, `1h` or `30d`; amounts are integers in the token's base unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StorageSettings {
    pub host: HostSettings,
    /// How often the renter challenges each of its contracts.
    pub challenge_interval: String,
    /// How long a host has to answer a challenge.
    pub challenge_deadline: String,
    /// Failed challenges in a row after which a contract is treated as lost.
    pub failure_threshold: u32,
    /// One payment period: a cheque follows each period whose challenges all passed.
    pub payment_period: String,
    /// The share of a contract's price paid when the host confirms it holds the shard, in percent.
    pub upfront_percent: u8,
    /// Whether the renter rebuilds the shards of lost contracts and places them on new hosts.
    pub repair: bool,
    /// How often the renter's checker looks at its contracts.
    pub check_interval: String,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            host: HostSettings::default(),
            challenge_interval: "1h".into(),
            challenge_deadline: "30s".into(),
            failure_threshold: 3,
            payment_period: "1d".into(),
            upfront_percent: 10,
            repair: true,
            check_interval: "10s".into(),
        }
    }
}

/// Host mode (`Storage.Host.*`), set by `btfs storage announce`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostSettings {
    pub enabled: bool,
    /// Asking price per GiB per day, in the token's base unit (an integer string).
    #[serde(rename = "PricePerGiBDay")]
    pub price_per_gib_day: String,
    /// Total size of shards this host accepts, as a size string (`100GB`).
    pub max_storage: String,
    /// Largest single shard accepted.
    pub max_shard_size: String,
    pub min_duration: String,
    pub max_duration: String,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            price_per_gib_day: "1000".into(),
            max_storage: "10GB".into(),
            max_shard_size: "1GB".into(),
            min_duration: "1m".into(),
            max_duration: "3650d".into(),
        }
    }
}

/// Where cheques settle (`Settlement.*`): `none` (signed and verified, never cashed) or `evm` (a vault
/// contract on an EVM chain over JSON-RPC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SettlementSettings {
    pub backend: String,
    pub rpc_url: String,
    pub chain_id: u64,
    /// The ERC-20 token's address (`0x...`).
    pub token: String,
    /// This node's vault (as a renter), once deployed or attached.
    pub vault: String,
    /// A host cashes a renter's cheques once this much (base units) is uncashed.
    pub cash_threshold: String,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        Self {
            backend: "none".into(),
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 31337,
            token: String::new(),
            vault: String::new(),
            cash_threshold: "1".into(),
        }
    }
}

/// The HTTP gateway's limits (kubo's `Gateway.*` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GatewaySettings {
    /// How long one block may take to arrive from the network before the request gets 504 (`30s`).
    pub retrieval_timeout: String,
    /// Requests served at once; more get 429.
    pub max_concurrent_requests: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { retrieval_timeout: "30s".into(), max_concurrent_requests: 4096 }
    }
}

impl GatewaySettings {
    /// The gateway crate's limits from these settings (validated when the config is loaded or set).
    pub fn limits(&self) -> Result<btfs_gateway::GatewayConfig, String> {
        let block_timeout = parse_duration(&self.retrieval_timeout)?;
        if self.max_concurrent_requests == 0 {
            return Err("MaxConcurrentRequests must be at least 1".into());
        }
        Ok(btfs_gateway::GatewayConfig {
            concurrency: self.max_concurrent_requests,
            block_timeout,
            // Resolving a path and sniffing a type take a few blocks; give them twice one block's limit.
            head_timeout: block_timeout * 2,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityConfig {
    #[serde(rename = "PeerID")]
    pub peer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Addresses {
    #[serde(rename = "API")]
    pub api: String,
    pub gateway: String,
    pub swarm: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Datastore {
    /// kubo's size string, e.g. "10GB".
    pub storage_max: String,
    /// Write block files with direct I/O (O_DIRECT), past the page cache, where the file system allows it.
    /// Blocks are written once and mostly read later, if at all; copying them into the page cache cost more
    /// CPU than anything else in `add` or a fetch on our test machine (docs/performance.md). The price is
    /// that the first read of new blocks comes from the disk.
    pub direct_writes: bool,
}

impl Default for Datastore {
    fn default() -> Self {
        Self { storage_max: "10GB".into(), direct_writes: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Discovery {
    #[serde(rename = "MDNS")]
    pub mdns: Mdns,
}

impl Default for Discovery {
    fn default() -> Self {
        Self { mdns: Mdns { enabled: true } }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mdns {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Routing {
    /// Kademlia protocol name: `/ipfs/kad/1.0.0` (the public IPFS DHT) or `/btfs/kad/1.0.0`.
    pub kad_protocol: String,
    /// `auto` (DHT server once reachable), `dhtserver` or `dhtclient`, as kubo's `Routing.Type`.
    #[serde(rename = "Type", default = "default_routing_type")]
    pub kind: RoutingType,
}

fn default_routing_type() -> RoutingType {
    RoutingType::Auto
}

impl Default for Routing {
    fn default() -> Self {
        Self { kad_protocol: "/ipfs/kad/1.0.0".into(), kind: RoutingType::Auto }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingType {
    Auto,
    Dhtserver,
    Dhtclient,
}

/// What the node announces to the DHT, and how often it announces it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Reprovider {
    pub strategy: ProvideStrategy,
    /// A duration such as `22h`, `30m` or `45s`.
    pub interval: String,
}

impl Default for Reprovider {
    fn default() -> Self {
        Self { strategy: ProvideStrategy::Roots, interval: "22h".into() }
    }
}

impl Reprovider {
    /// The interval as a duration (validated when the config is loaded or set).
    pub fn interval(&self) -> Result<std::time::Duration, String> {
        parse_duration(&self.interval)
    }
}

/// `roots`: the root of each pin; `pinned`: every block of pinned DAGs; `all`: every stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvideStrategy {
    Roots,
    Pinned,
    All,
}

/// Parses `90s`, `30m`, `22h` (one number and a unit).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 10m or 22h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?} is not a duration like 30s, 10m, 22h or 30d")),
    };
    if secs == 0 {
        return Err("a zero interval is not allowed".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `btfs init --profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProfile {
    /// kubo's defaults: swarm on all interfaces at 4001, API and gateway on loopback.
    Default,
    /// Everything on 127.0.0.1 port 0, no bootstrap peers, no mDNS: many nodes side by side in tests.
    Test,
}

/// Errors reading or changing the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot write config file {path}")]
    Write { path: String, source: std::io::Error },
    #[error("config key {0:?} not found")]
    NoKey(String),
    #[error("config key {key:?}: {reason}")]
    BadValue { key: String, reason: String },
}

/// The config file: the JSON tree plus its typed view, kept in step.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    tree: Value,
    typed: Config,
}

impl ConfigFile {
    /// A fresh config for `peer_id`.
    pub fn new(peer_id: &str, profile: InitProfile) -> Self {
        let (swarm, api, gateway, mdns) = match profile {
            InitProfile::Default => (
                vec!["/ip4/0.0.0.0/tcp/4001".to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1".to_string()],
                "/ip4/127.0.0.1/tcp/5001",
                "/ip4/127.0.0.1/tcp/8080",
                true,
            ),
            InitProfile::Test => (
                vec!["/ip4/127.0.0.1/tcp/0".to_string(), "/ip4/127.0.0.1/udp/0/quic-v1".to_string()],
                "/ip4/127.0.0.1/tcp/0",
                "/ip4/127.0.0.1/tcp/0",
                false,
            ),
        };
        let typed = Config {
            identity: IdentityConfig { peer_id: peer_id.to_string() },
            addresses: Addresses { api: api.into(), gateway: gateway.into(), swarm },
            bootstrap: Vec::new(),
            datastore: Datastore::default(),
            discovery: Discovery { mdns: Mdns { enabled: mdns } },
            routing: Routing {
                kind: if profile == InitProfile::Test { RoutingType::Dhtserver } else { RoutingType::Auto },
                ..Routing::default()
            },
            reprovider: Reprovider::default(),
            gateway: GatewaySettings::default(),
            storage: StorageSettings::default(),
            settlement: SettlementSettings::default(),
            bit_torrent: if profile == InitProfile::Test {
                BitTorrentSettings::loopback()
            } else {
                BitTorrentSettings::default()
            },
        };
        let tree = serde_json::to_value(&typed).unwrap_or(Value::Null);
        Self { tree, typed }
    }

    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let invalid = |reason: String| ConfigError::Invalid { path: path.display().to_string(), reason };
        let tree: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let typed: Config = serde_json::from_value(tree.clone()).map_err(|e| invalid(e.to_string()))?;
        typed.reprovider.interval().map_err(|e| invalid(format!("Reprovider.Interval: {e}")))?;
        typed.gateway.limits().map_err(|e| invalid(format!("Gateway: {e}")))?;
        crate::market::MarketConfig::from_settings(&typed).map_err(invalid)?;
        typed.bit_torrent.check().map_err(invalid)?;
        Ok(Self { tree, typed })
    }

    /// Writes the config atomically.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write { path: path.display().to_string(), source };
        let text = serde_json::to_string_pretty(&self.tree).map_err(|e| write_err(std::io::Error::other(e)))?;
        write_atomic(path, text.as_bytes()).map_err(write_err)
    }

    pub fn typed(&self) -> &Config {
        &self.typed
    }

    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The value at a dotted key such as `Addresses.API`.
    pub fn get(&self, key: &str) -> Result<&Value, ConfigError> {
        let mut node = &self.tree;
        for part in key.split('.') {
            node = node.get(part).ok_or_else(|| ConfigError::NoKey(key.to_string()))?;
        }
        Ok(node)
    }

    /// Sets a dotted key, creating objects on the way; the whole config must still be valid.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), ConfigError> {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::BadValue { key: key.into(), reason: "empty key segment".into() });
        }
        let mut tree = self.tree.clone();
        let mut node = &mut tree;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let Value::Object(map) = node else {
                return Err(ConfigError::BadValue {
                    key: key.into(),
                    reason: format!("{} is not an object", parts[..i].join(".")),
                });
            };
            if i + 1 == parts.len() {
                map.insert((*part).to_string(), value);
                break;
            }
            node = map.entry((*part).to_string()).or_insert_with(|| Value::Object(Default::default()));
        }
        let typed: Config = serde_json::from_value(tree.clone())
            .map_err(|e| ConfigError::BadValue { key: key.into(), reason: e.to_string() })?;
        typed.reprovider.interval().map_err(|reason| ConfigError::BadValue { key: key.into(), reason })?;
        typed.gateway.limits().map_err(|reason| ConfigError::BadValue { key: key.into(), reason })?;
        crate::market::MarketConfig::from_settings(&typed)
            .map_err(|reason| ConfigError::BadValue { key: key.into(), reason })?;
        typed.bit_torrent.check().map_err(|reason| ConfigError::BadValue { key: key.into(), reason })?;
        self.tree = tree;
        self.typed = typed;
        Ok(())
    }
}

/// A size string that kubo would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a size: {reason}")]
pub struct SizeError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses kubo's size strings (`10GB`, `512MiB`, `1000`) into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError { text: text.to_string(), reason };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| err("no number"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err("unknown unit")),
    };
    let bytes = num * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err("out of range"));
    }
    // In range and non-negative, checked above; the fraction is dropped as kubo drops it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Replaces `path` with `bytes` so that readers see the old or the new file, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_validates_the_whole_config() {
        let mut c = ConfigFile::new("peer", InitProfile::Test);
        c.set("Addresses.API", Value::String("/ip4/127.0.0.1/tcp/5002".into())).expect("valid");
        assert_eq!(c.typed().addresses.api, "/ip4/127.0.0.1/tcp/5002");
        assert!(c.set("Addresses.Swarm", Value::Bool(true)).is_err());
        assert_eq!(c.typed().addresses.swarm.len(), 2, "failed set leaves the config unchanged");
        c.set("Custom.Key", Value::from(3)).expect("unknown keys are kept");
        assert_eq!(c.get("Custom.Key").expect("present"), &Value::from(3));
        assert!(matches!(c.get("No.Such"), Err(ConfigError::NoKey(_))));
    }

    #[test]
    fn sizes_parse_as_kubo_writes_them() {
        const CASES: &[(&str, Option<u64>)] = &[
            ("10GB", Some(10_000_000_000)),
            ("512MiB", Some(512 * 1024 * 1024)),
            ("1000", Some(1000)),
            (" 1.5kb ", Some(1500)),
            ("GB", None),
            ("10XB", None),
            ("-1", None),
        ];
        for (text, want) in CASES {
            assert_eq!(parse_size(text).ok(), *want, "{text:?}");
        }
    }
}
