//! BitTorrent in and out of the store.
//!
//! **Import** (`bittorrent import`): a .torrent, magnet or bare infohash is resolved and checked by our own
//! metainfo parser (`btfs_chunker::torrent`) before the swarm sees it; the engine's verified pieces then go
//! straight into UnixFS leaves in the block store (`stream`), with no staging copy, and the files come out
//! exactly as `btfs add -r --hidden` would make them (padding files left out). A stopped import keeps its
//! stored leaves, so the next run fetches only the rest. At the end the info dict is stored as a
//! `torrent-info` block (CIDv1, multicodec 0x7b, the infohash as its sha1 multihash; a hybrid's also under
//! its sha2-256 v2 hash), and only then is the torrent recorded as imported. A torrent already recorded is
//! not fetched again.
//!
//! **Seed** (`bittorrent seed`, daemon only): an imported torrent is seeded under its original infohash from
//! its stored info dict; any other UnixFS file or directory gets a new v1 torrent. Either way the data is read
//! from the block store (`files`), never copied out.
//!
//! Records live in the `torrents` column family: `ih/<40 hex>` → the JSON `TorrentRecord`, and
//! `root/<cid>` → the infohash, for seeding by CID.

pub mod engine;
mod fetch;
pub mod files;
pub mod stream;
mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_chunker::block::Block;
use btfs_chunker::torrent::{self as metainfo, Info, Magnet, Metainfo, Version};
use multihash_codetable::MultihashDigest;
use serde::{Deserialize, Serialize};

use crate::Node;
use crate::repo::config::BitTorrentSettings;
use crate::repo::store::{PinKind, Records, StoreError};
use engine::{Download, Engine, EngineError, Librqbit, Progress, SwarmOptions};
use files::{SeedFile, StoreFiles};
use stream::{Built, StreamImport};

/// Multicodec of a BitTorrent info dict (`torrent-info`).
pub const TORRENT_INFO: u64 = 0x7b;
/// Multicodec of sha1.
const SHA1: u64 = 0x11;
/// The largest .torrent file read (a 1 TiB torrent with 16 KiB pieces has 1.3 GB of piece hashes; real
/// ones use bigger pieces and stay far below this).
pub const MAX_TORRENT_FILE: u64 = 64 * 1024 * 1024;
/// Default: give up when no byte arrives for this long.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{0} is a BitTorrent v2-only torrent, which this node cannot download yet (the librqbit engine speaks \
         v1; hybrid torrents work through their v1 side)"
    )]
    V2Only(String),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("adding the downloaded files failed: {0}")]
    Add(String),
    #[error("no torrent is recorded for {0}")]
    Unknown(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("seeding needs the daemon: run 'btfs daemon' first")]
    NotRunning,
}

/// One file of a recorded torrent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    /// `/`-joined path inside the torrent (the torrent's name is not part of it).
    pub path: String,
    pub length: u64,
    /// The file's UnixFS CID; absent for padding files and files left out with `--only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub padding: bool,
}

/// What the node knows about one torrent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TorrentRecord {
    /// The v1 infohash, 40 hex digits.
    pub info_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_hash_v2: Option<String>,
    pub name: String,
    /// The UnixFS root: the file of a single-file torrent, else the directory named after the torrent.
    pub root: String,
    /// The `torrent-info` block holding the exact info dict.
    pub info_cid: String,
    pub files: Vec<FileRecord>,
    /// Total bytes of the files held (padding excluded).
    pub size: u64,
    /// File indices imported when `--only` was used; absent when all were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<usize>>,
    /// `import` or `seed` (a torrent made here from a CID).
    pub origin: String,
    /// Seeded by the daemon (resumed when it starts).
    #[serde(default)]
    pub seeding: bool,
    /// Trackers to announce to when seeding.
    #[serde(default)]
    pub trackers: Vec<String>,
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// A .torrent path, a magnet link, or a bare v1 infohash; with `torrent`, only a label for messages.
    pub source: String,
    /// The .torrent's bytes, when the caller read (or was sent) the file.
    pub torrent: Option<Vec<u8>>,
    pub only: Option<Vec<usize>>,
    pub stall_timeout: Duration,
    /// Overrides `BitTorrent.DhtBootstrap` for this import.
    pub dht_bootstrap: Option<Vec<String>>,
}

/// Events of an import, for progress bars.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "Event")]
pub enum ImportEvent {
    /// The metadata is known (from the file, or fetched for a magnet).
    Metadata {
        name: String,
        info_hash: String,
        total: u64,
    },
    Download {
        done: u64,
        total: u64,
        peers: usize,
        speed: f64,
    },
    /// An earlier run of this import left `held` of the `total` bytes in the store; they are not fetched again.
    Resumed {
        held: u64,
        total: u64,
    },
    /// Every piece is in; the files' DAGs and directories are being built.
    Adding,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub record: TorrentRecord,
    /// True when the torrent was already in the store and nothing was fetched.
    pub already: bool,
}

/// What `seed` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Seeding {
    pub info_hash: String,
    pub name: String,
    pub magnet: String,
    pub root: String,
}

/// The swarm options from the config, with an optional DHT bootstrap override.
pub fn swarm_options(
    settings: &BitTorrentSettings,
    dht_bootstrap: Option<Vec<String>>,
) -> Result<SwarmOptions, TorrentError> {
    let listen = settings
        .listen
        .parse()
        .map_err(|e| TorrentError::Invalid(format!("BitTorrent.Listen {:?}: {e}", settings.listen)))?;
    let dht_bootstrap = dht_bootstrap.or_else(|| settings.dht_bootstrap.clone());
    // An empty bootstrap list leaves the DHT nothing to join: it stays off rather than fail to bootstrap.
    let dht = settings.dht && dht_bootstrap.as_ref().is_none_or(|b| !b.is_empty());
    Ok(SwarmOptions { listen, dht, dht_bootstrap, local_discovery: settings.local_discovery })
}

/// A source as given on the command line: a .torrent (its bytes, parsed and checked once), or a magnet
/// link (parsed, and as given).
enum Source {
    File(Vec<u8>, Metainfo),
    Magnet(Magnet, String),
}

/// Whether a source names a torrent by link (a magnet, or a bare v1 infohash in hex or base32) rather
/// than a .torrent file (a file of that name wins).
pub fn is_link(text: &str) -> bool {
    text.starts_with("magnet:") || (metainfo::parse_info_hash(text).is_ok() && !Path::new(text).exists())
}

fn read_source(text: &str) -> Result<Source, TorrentError> {
    let invalid = |e: &dyn std::fmt::Display| TorrentError::Invalid(e.to_string());
    if text.starts_with("magnet:") {
        let m = metainfo::parse_magnet(text).map_err(|e| invalid(&e))?;
        return Ok(Source::Magnet(m, text.to_string()));
    }
    if let Ok(hash) = metainfo::parse_info_hash(text)
        && is_link(text)
    {
        let link = format!("magnet:?xt=urn:btih:{}", metainfo::to_hex(&hash));
        let m = metainfo::parse_magnet(&link).map_err(|e| invalid(&e))?;
        return Ok(Source::Magnet(m, link));
    }
    let path = Path::new(text);
    let read = |source| TorrentError::Read { path: text.to_string(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_TORRENT_FILE {
        return Err(TorrentError::Invalid(format!(
            "{text} is {len} bytes; a .torrent file larger than {MAX_TORRENT_FILE} bytes is refused"
        )));
    }
    let bytes = std::fs::read(path).map_err(read)?;
    let meta = checked(&bytes, text)?;
    Ok(Source::File(bytes, meta))
}

use metainfo::to_hex as hex;

/// Parses and checks a torrent before anything is fetched for it.
fn checked(bytes: &[u8], what: &str) -> Result<Metainfo, TorrentError> {
    let meta = metainfo::parse_torrent(bytes).map_err(|e| TorrentError::Invalid(format!("{what}: {e}")))?;
    if meta.info.version == Version::V2Only {
        return Err(TorrentError::V2Only(what.to_string()));
    }
    Ok(meta)
}

/// What `bittorrent metainfo` prints for a .torrent file's bytes.
pub fn metainfo_json(bytes: &[u8], what: &str) -> Result<serde_json::Value, TorrentError> {
    let meta = metainfo::parse_torrent(bytes).map_err(|e| TorrentError::Invalid(format!("{what}: {e}")))?;
    Ok(metainfo::to_json(&meta))
}

/// The `torrent-info` blocks of an info dict: under the v1 infohash, and the v2 one for hybrids.
fn info_blocks(meta: &Info) -> Result<Vec<Block>, TorrentError> {
    let mut out = Vec::new();
    if let Some(h) = meta.info_hash_v1 {
        let mh = btfs_chunker::hash::Multihash::wrap(SHA1, &h).map_err(|e| TorrentError::Invalid(e.to_string()))?;
        out.push(Block { cid: Cid::new_v1(TORRENT_INFO, mh), data: meta.info_bytes.clone() });
    }
    if meta.info_hash_v2.is_some() {
        let mh = multihash_codetable::Code::Sha2_256.digest(&meta.info_bytes);
        out.push(Block { cid: Cid::new_v1(TORRENT_INFO, mh), data: meta.info_bytes.clone() });
    }
    Ok(out)
}

/// Stores an info dict's `torrent-info` blocks, pinned directly (nothing links to them); returns them.
fn store_info_blocks(node: &Node, info: &Info) -> Result<Vec<Block>, TorrentError> {
    let blocks = info_blocks(info)?;
    node.repo().store().put_many(&blocks)?;
    let pins: Vec<(Cid, PinKind)> = blocks.iter().map(|b| (b.cid, PinKind::Direct)).collect();
    node.repo().store().update_pins(&pins, &[])?;
    Ok(blocks)
}

/// The torrents of one node.
pub struct Torrents {
    node: Arc<Node>,
    /// The daemon's seeding session.
    seeder: Option<Box<dyn Engine>>,
    /// Imports under way, by infohash: a second import of the same torrent waits its turn, then finds the
    /// first one's record (or, if that one failed, takes over from the leaves it stored).
    importing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Torrents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torrents").field("seeding", &self.seeder.is_some()).finish_non_exhaustive()
    }
}

impl Torrents {
    /// Without a daemon: imports, listing and metadata only.
    pub fn offline(node: Arc<Node>) -> Self {
        Self { node, seeder: None, importing: Mutex::default() }
    }

    /// In the daemon: starts the seeding session and resumes seeding what was seeded before.
    pub async fn start(node: Arc<Node>) -> Result<Arc<Self>, TorrentError> {
        let settings = node.repo().config().typed().bit_torrent.clone();
        let opts = swarm_options(&settings, None)?;
        let engine = Librqbit::start(&opts).await?;
        tracing::info!(listen = %engine::Engine::listen_addr(&engine), "BitTorrent seeding session started");
        let this = Arc::new(Self { node, seeder: Some(Box::new(engine)), importing: Mutex::default() });
        let resume = this.clone();
        tokio::spawn(async move {
            let records = match resume.list() {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = %e, "cannot read the torrent records"),
            };
            for r in records.into_iter().filter(|r| r.seeding) {
                let cid = r.root.clone();
                if let Err(e) = resume.seed(&cid, None, Vec::new()).await {
                    tracing::warn!(info_hash = %r.info_hash, error = %e, "cannot resume seeding");
                }
            }
        });
        Ok(this)
    }

    /// The address the seeding session listens on.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.seeder.as_ref().map(|e| e.listen_addr())
    }

    pub async fn shutdown(&self) {
        if let Some(e) = &self.seeder {
            e.shutdown().await;
        }
    }

    /// Every recorded torrent.
    pub fn list(&self) -> Result<Vec<TorrentRecord>, TorrentError> {
        let rows = self.node.repo().store().record_scan(Records::Torrents, b"ih/")?;
        Ok(rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect())
    }

    fn record(&self, info_hash: &str) -> Result<Option<TorrentRecord>, TorrentError> {
        let key = format!("ih/{info_hash}");
        let raw = self.node.repo().store().record_get(Records::Torrents, key.as_bytes())?;
        Ok(raw.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn record_by_root(&self, root: &Cid) -> Result<Option<TorrentRecord>, TorrentError> {
        let key = format!("root/{root}");
        match self.node.repo().store().record_get(Records::Torrents, key.as_bytes())? {
            Some(ih) => self.record(&String::from_utf8_lossy(&ih)),
            None => Ok(None),
        }
    }

    fn save(&self, r: &TorrentRecord) -> Result<(), TorrentError> {
        let value = serde_json::to_vec(r).map_err(|e| TorrentError::Invalid(e.to_string()))?;
        let (k1, k2) = (format!("ih/{}", r.info_hash), format!("root/{}", r.root));
        let puts = [
            (Records::Torrents, k1.as_bytes(), value.as_slice()),
            (Records::Torrents, k2.as_bytes(), r.info_hash.as_bytes()),
        ];
        Ok(self.node.repo().store().record_write(&puts, &[])?)
    }

    /// True when the record's root and info block are still in the store.
    fn still_held(&self, r: &TorrentRecord) -> bool {
        let store = self.node.repo().store();
        let held = |c: &str| Cid::try_from(c).ok().is_some_and(|c| store.has(&c).unwrap_or(false));
        held(&r.root) && held(&r.info_cid)
    }

    /// Imports a torrent; see the module doc.
    pub async fn import(
        &self,
        req: ImportRequest,
        events: &(dyn Fn(ImportEvent) + Send + Sync),
    ) -> Result<Imported, TorrentError> {
        let source = match req.torrent.clone() {
            Some(bytes) => {
                let meta = checked(&bytes, &req.source)?;
                Source::File(bytes, meta)
            }
            None => read_source(&req.source)?,
        };
        let known = match &source {
            Source::File(_, meta) => meta.info.info_hash_v1.map(|h| hex(&h)),
            Source::Magnet(m, _) => match m.info_hash_v1 {
                Some(h) => Some(hex(&h)),
                None => return Err(TorrentError::V2Only(format!("magnet {}", req.source))),
            },
        };
        if let Some(ih) = &known {
            if let Some(record) = self.already_imported(ih, &req.only)? {
                return Ok(Imported { record, already: true });
            }
            let _turn = Turn::wait(&self.importing, ih).await;
            if let Some(record) = self.already_imported(ih, &req.only)? {
                return Ok(Imported { record, already: true });
            }
            return self.import_fresh(source, &req, events).await;
        }
        self.import_fresh(source, &req, events).await
    }

    /// The record of an import of `info_hash` that holds the files `only` asks for, if there is one.
    fn already_imported(
        &self,
        info_hash: &str,
        only: &Option<Vec<usize>>,
    ) -> Result<Option<TorrentRecord>, TorrentError> {
        Ok(self.record(info_hash)?.filter(|r| r.origin == "import" && self.still_held(r) && covers(&r.only, only)))
    }

    async fn import_fresh(
        &self,
        source: Source,
        req: &ImportRequest,
        events: &(dyn Fn(ImportEvent) + Send + Sync),
    ) -> Result<Imported, TorrentError> {
        let settings = self.node.repo().config().typed().bit_torrent.clone();
        let opts = swarm_options(&settings, req.dht_bootstrap.clone())?;
        let engine = Librqbit::start(&opts).await?;
        let result = self.import_with(&engine, source, req, events).await;
        let stopping = std::time::Instant::now();
        engine.shutdown().await;
        tracing::info!(seconds = stopping.elapsed().as_secs_f64(), "BitTorrent session stopped");
        result
    }

    async fn import_with(
        &self,
        engine: &dyn Engine,
        source: Source,
        req: &ImportRequest,
        events: &(dyn Fn(ImportEvent) + Send + Sync),
    ) -> Result<Imported, TorrentError> {
        let (torrent, peers, meta) = match source {
            Source::File(bytes, meta) => (bytes::Bytes::from(bytes), Vec::new(), meta),
            Source::Magnet(magnet, link) => {
                let resolved = engine.resolve(&link, req.stall_timeout).await?;
                let meta = checked(&resolved.torrent, "the metadata the peers sent")?;
                if meta.info.info_hash_v1 != magnet.info_hash_v1 {
                    return Err(TorrentError::Invalid(
                        "the metadata the peers sent does not match the magnet's infohash".into(),
                    ));
                }
                (resolved.torrent, resolved.peers, meta)
            }
        };
        let info_hash =
            meta.info.info_hash_v1.map(|h| hex(&h)).ok_or_else(|| TorrentError::V2Only(req.source.clone()))?;
        if let Some(only) = &req.only
            && let Some(bad) = only.iter().find(|i| **i >= meta.info.files.len())
        {
            return Err(TorrentError::Invalid(format!(
                "--only {bad}: the torrent has {} files (see 'btfs bittorrent metainfo')",
                meta.info.files.len()
            )));
        }
        let total: u64 = selected(&meta.info, &req.only).map(|(_, f)| f.length).sum();
        events(ImportEvent::Metadata { name: meta.info.name.clone(), info_hash: info_hash.clone(), total });

        let params =
            btfs_chunker::import::Options::default().resolve().map_err(|e| TorrentError::Add(e.to_string()))?;
        let stream = StreamImport::start(self.node.clone(), &meta.info, &req.only, params, &info_hash)
            .map_err(TorrentError::Add)?;
        if stream.resumed_bytes > 0 {
            events(ImportEvent::Resumed { held: stream.resumed_bytes, total });
        }
        let started = std::time::Instant::now();
        let progress = |p: Progress| {
            events(ImportEvent::Download { done: p.done, total: p.total, peers: p.peers, speed: p.speed })
        };
        engine
            .download(Download {
                torrent: torrent.clone(),
                sink: stream.sink(),
                only: req.only.clone(),
                peers,
                stall_timeout: req.stall_timeout,
                progress: &progress,
            })
            .await?;
        tracing::info!(%info_hash, seconds = started.elapsed().as_secs_f64(), "download complete");
        events(ImportEvent::Adding);
        let building = std::time::Instant::now();
        let built = stream.finish().await.map_err(TorrentError::Add)?;
        tracing::info!(%info_hash, seconds = building.elapsed().as_secs_f64(), "DAG built and pinned");
        let node = self.node.clone();
        let info = meta.info.clone();
        let blocks = tokio::task::spawn_blocking(move || store_info_blocks(&node, &info))
            .await
            .map_err(|e| TorrentError::Add(e.to_string()))??;
        let record = import_record(&meta, &built, &blocks[0], req.only.clone(), &info_hash);
        self.save(&record)?;
        self.forget_progress(&info_hash)?;
        tracing::info!(%info_hash, "import recorded");
        self.node.announce(vec![built.root]);
        Ok(Imported { record, already: false })
    }

    /// Drops the leaf records of a finished import.
    fn forget_progress(&self, info_hash: &str) -> Result<(), TorrentError> {
        let store = self.node.repo().store();
        let rows = store.record_scan(Records::Torrents, &stream::leaf_prefix(info_hash))?;
        let deletes: Vec<(Records, &[u8])> = rows.iter().map(|(k, _)| (Records::Torrents, k.as_slice())).collect();
        Ok(store.record_write_relaxed(&[], &deletes)?)
    }

    /// Seeds `cid` (see the module doc); returns the magnet.
    pub async fn seed(&self, cid: &str, name: Option<String>, trackers: Vec<String>) -> Result<Seeding, TorrentError> {
        let engine = self.seeder.as_ref().ok_or(TorrentError::NotRunning)?;
        let root = Cid::try_from(cid.strip_prefix("/ipfs/").unwrap_or(cid))
            .map_err(|e| TorrentError::Invalid(format!("invalid CID {cid:?}: {e}")))?;
        let node = self.node.clone();
        let existing = self.record_by_root(&root)?;
        let mut config_trackers = self.node.repo().config().typed().bit_torrent.trackers.clone();
        let (mut record, info) = tokio::task::spawn_blocking(move || prepare_seed(&node, root, existing, name))
            .await
            .map_err(|e| TorrentError::Add(e.to_string()))??;
        for t in trackers.into_iter().chain(config_trackers.drain(..)) {
            if !record.trackers.contains(&t) {
                record.trackers.push(t);
            }
        }
        let torrent = metainfo::make_torrent(&info.info_bytes, &record.trackers);
        let seed_files = seed_files(&record);
        let files = Arc::new(StoreFiles::new(self.node.clone(), seed_files));
        engine.seed(torrent.into(), files).await?;
        record.seeding = true;
        self.save(&record)?;
        let mut magnet = format!("magnet:?xt=urn:btih:{}&dn={}", record.info_hash, urlencoding::encode(&record.name));
        for t in &record.trackers {
            magnet.push_str(&format!("&tr={}", urlencoding::encode(t)));
        }
        // BEP 9's peer address, when this node's is a specific one (not 0.0.0.0, which no peer can dial).
        let listen = engine.listen_addr();
        if !listen.ip().is_unspecified() {
            magnet.push_str(&format!("&x.pe={listen}"));
        }
        Ok(Seeding { info_hash: record.info_hash.clone(), name: record.name.clone(), magnet, root: record.root })
    }

    /// Stops seeding a torrent (by infohash or root CID).
    pub async fn unseed(&self, key: &str) -> Result<TorrentRecord, TorrentError> {
        let engine = self.seeder.as_ref().ok_or(TorrentError::NotRunning)?;
        let record = match self.record(&key.to_ascii_lowercase())? {
            Some(r) => Some(r),
            None => match Cid::try_from(key) {
                Ok(c) => self.record_by_root(&c)?,
                Err(_) => None,
            },
        };
        let mut record = record.ok_or_else(|| TorrentError::Unknown(key.to_string()))?;
        let ih = metainfo::parse_info_hash(&record.info_hash)
            .map_err(|e| TorrentError::Invalid(format!("the record of {key}: {e}")))?;
        engine.stop(&ih).await?;
        record.seeding = false;
        self.save(&record)?;
        Ok(record)
    }
}

/// Whether an import that took `had` covers a request for `want` (`None` = all files).
fn covers(had: &Option<Vec<usize>>, want: &Option<Vec<usize>>) -> bool {
    match (had, want) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(w)) => w.iter().all(|i| h.contains(i)),
    }
}

/// The files an import takes, with their indices: padding never, and only those asked for.
fn selected<'a>(
    meta: &'a Info,
    only: &'a Option<Vec<usize>>,
) -> impl Iterator<Item = (usize, &'a metainfo::FileEntry)> + 'a {
    meta.files.iter().enumerate().filter(move |(i, f)| !f.padding && only.as_ref().is_none_or(|o| o.contains(i)))
}

/// One import's turn on its infohash; the entry is dropped from the map when no one else waits on it.
struct Turn<'a> {
    map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<'a> Turn<'a> {
    async fn wait(map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>, key: &str) -> Turn<'a> {
        let lock = map.lock().unwrap_or_else(PoisonError::into_inner).entry(key.to_string()).or_default().clone();
        Turn { map, key: key.to_string(), guard: Some(lock.lock_owned().await) }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map's own reference left: nobody holds or waits for this turn.
        if map.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(&self.key);
        }
    }
}

/// The record of a finished import.
fn import_record(
    meta: &Metainfo,
    built: &Built,
    info_block: &Block,
    only: Option<Vec<usize>>,
    info_hash: &str,
) -> TorrentRecord {
    let info = &meta.info;
    let files = info
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| FileRecord {
            path: inner_path(info, f),
            length: f.length,
            cid: built.files.get(i).copied().flatten().map(|c| c.to_string()),
            padding: f.padding,
        })
        .collect();
    TorrentRecord {
        info_hash: info_hash.to_string(),
        info_hash_v2: info.info_hash_v2.map(|h| hex(&h)),
        name: info.name.clone(),
        root: built.root.to_string(),
        info_cid: info_block.cid.to_string(),
        files,
        size: selected(info, &only).map(|(_, f)| f.length).sum(),
        only,
        origin: "import".into(),
        seeding: false,
        trackers: meta.announce.iter().flatten().cloned().collect(),
    }
}

/// A single-file torrent's one file has the path `[name]`; a multi-file torrent's are `[name, dir.., file]`.
fn is_single_file(info: &Info) -> bool {
    matches!(info.files.as_slice(), [f] if f.path.len() == 1)
}

/// A file's path inside the torrent, without the torrent's name (a single file's is its name).
fn inner_path(info: &Info, f: &metainfo::FileEntry) -> String {
    if is_single_file(info) { info.name.clone() } else { f.path[1..].join("/") }
}

/// The files to seed for a record, by index in its info dict.
fn seed_files(r: &TorrentRecord) -> Vec<SeedFile> {
    r.files
        .iter()
        .map(|f| match (&f.cid, f.padding) {
            (_, true) => SeedFile::Padding { length: f.length },
            (Some(c), false) => match Cid::try_from(c.as_str()) {
                Ok(cid) => SeedFile::Stored { cid, length: f.length },
                Err(_) => SeedFile::Missing,
            },
            (None, false) => SeedFile::Missing,
        })
        .collect()
}

/// The record and metainfo to seed `root` under: the stored info dict of a torrent recorded for it, or a
/// new v1 torrent made from the UnixFS DAG.
fn prepare_seed(
    node: &Node,
    root: Cid,
    existing: Option<TorrentRecord>,
    name: Option<String>,
) -> Result<(TorrentRecord, Info), TorrentError> {
    if let Some(r) = existing {
        let info_cid = Cid::try_from(r.info_cid.as_str()).map_err(|e| TorrentError::Invalid(e.to_string()))?;
        let info = node
            .repo()
            .store()
            .get_local(&info_cid)?
            .ok_or_else(|| TorrentError::Invalid(format!("the info dict block {info_cid} is missing")))?;
        let meta = metainfo::parse_info(&info).map_err(|e| TorrentError::Invalid(format!("stored info dict: {e}")))?;
        return Ok((r, meta));
    }
    let made = make::torrent_for(node, &root, name)?;
    let blocks = store_info_blocks(node, &made.info)?;
    let meta = made.info;
    let record = TorrentRecord {
        info_hash: meta.info_hash_v1.map(|h| hex(&h)).unwrap_or_default(),
        info_hash_v2: None,
        name: meta.name.clone(),
        root: root.to_string(),
        info_cid: blocks[0].cid.to_string(),
        files: made.files,
        size: meta.files.iter().map(|f| f.length).sum(),
        only: None,
        origin: "seed".into(),
        seeding: false,
        trackers: Vec::new(),
    };
    Ok((record, meta))
}

mod make;
