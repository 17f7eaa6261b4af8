//! The BitTorrent engine behind a small trait: what the node needs from a swarm client, and its one
//! implementation over `librqbit`. Nothing outside this file names a librqbit type, so the import and seed
//! logic reads as the node's own, and the engine can be swapped or doubled in tests.
//!
//! A `Swarm` is one librqbit session: a TCP listener, an optional DHT node, trackers. Imports each get a
//! session of their own (so an import behaves the same with and without a daemon, and `--dht-bootstrap`
//! applies to it alone); the daemon keeps one more for seeding.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::fetch::Discovery;
use bytes::Bytes;
use futures::future::BoxFuture;
use librqbit::storage::{StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{
    AddTorrent, AddTorrentOptions, AddTorrentResponse, DhtSessionConfig, ListenerMode, ListenerOptions,
    ManagedTorrentShared, PeerConnectionOptions, Session, SessionOptions, TorrentMetadata,
};

/// How a swarm session is set up.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// The TCP address peers connect to; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Whether to run a DHT node.
    pub dht: bool,
    /// DHT bootstrap nodes (`host:port`); `None` means librqbit's public defaults.
    pub dht_bootstrap: Option<Vec<String>>,
    /// Multicast local service discovery (BEP 14).
    pub local_discovery: bool,
}

/// What went wrong in the swarm.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the BitTorrent engine: {0}")]
    Start(String),
    #[error("the BitTorrent engine refused the torrent: {0}")]
    Add(String),
    #[error("no peer sent the torrent's metadata within {0:?} (is anyone seeding it, and reachable?)")]
    MetadataTimeout(Duration),
    #[error("the download stalled: {done} of {total} bytes after {after:?} (no reachable peer has the rest; {peers})")]
    Timeout { done: u64, total: u64, after: Duration, peers: String },
    #[error("the download failed: {0}")]
    Failed(String),
}

/// A magnet resolved through ut_metadata.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// A .torrent wrapping the info dict exactly as the peers sent it, with the magnet's trackers.
    pub torrent: Bytes,
    /// Peers met while resolving, handed to the download so it does not look for them again.
    pub peers: Vec<SocketAddr>,
}

/// Where a download stands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub peers: usize,
    /// Download speed in bytes per second.
    pub speed: f64,
}

/// One download.
pub struct Download<'a> {
    pub torrent: Bytes,
    /// Where the bytes go (nothing is written to disk by the engine itself).
    pub sink: Arc<dyn PieceSink>,
    /// Indices of the files to fetch (all when `None`).
    pub only: Option<Vec<usize>>,
    pub peers: Vec<SocketAddr>,
    /// Give up after this long without any progress.
    pub stall_timeout: Duration,
    pub progress: &'a (dyn Fn(Progress) + Send + Sync),
}

/// Read access to the files of a torrent being seeded, by the file's index in the info dict.
pub trait SeedFiles: Send + Sync {
    /// Fills `buf` with the bytes of file `file` at `offset`.
    fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), String>;
}

/// Where a download's bytes go. The downloader reads pieces back in its initial check of what is already
/// held, and hands on each piece, whole, once it passed its hash check.
pub trait PieceSink: SeedFiles {
    /// Piece `piece` matched its hash; `data` is all of it.
    fn piece_complete(&self, piece: u32, data: Vec<u8>) -> Result<(), String>;
    /// The engine's initial check of what is held is over.
    fn initialized(&self);
    /// Set once the sink cannot go on; the download stops with it.
    fn failure(&self) -> Option<String>;
    /// A short account of what the sink holds, for error messages.
    fn state(&self) -> String;
}

/// What the node asks of a BitTorrent client.
pub trait Engine: Send + Sync {
    /// Fetches a magnet's metadata from the swarm.
    fn resolve<'a>(&'a self, magnet: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Resolved, EngineError>>;
    /// Downloads into `job.sink`, keeping what it already holds and verifies; returns once every selected
    /// file is complete.
    fn download<'a>(&'a self, job: Download<'a>) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Seeds a torrent whose data `files` reads; it stays in the swarm until `stop` or shutdown.
    fn seed(&self, torrent: Bytes, files: Arc<dyn SeedFiles>) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Leaves the swarm of one torrent (by v1 infohash). Files are never deleted.
    fn stop<'a>(&'a self, info_hash: &'a [u8; 20]) -> BoxFuture<'a, Result<(), EngineError>>;
    /// The address peers reach this node at.
    fn listen_addr(&self) -> SocketAddr;
    /// Stops everything.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// The engine over a librqbit session.
pub struct Librqbit {
    session: Arc<Session>,
    listen: SocketAddr,
    runtime: EngineRuntime,
    /// Where downloads find peers; the downloads themselves are ours (`fetch.rs`).
    discovery: Discovery,
}

/// A current-thread Tokio runtime on a thread of its own, where a librqbit session and every task it spawns
/// run. On a multi-threaded runtime librqbit writes each received 16 KiB block inside `block_in_place`, which
/// hands the worker's other tasks to another thread every time: about 130,000 context switches per GiB
/// imported, and a fifth of the import's CPU. On a current-thread runtime librqbit makes the same calls in
/// place (the import's sink only copies the block into its piece buffer), and the node's own runtime keeps
/// its threads. The cost: a torrent's initial check (reading and hashing every piece) holds the session's
/// thread, as it held a blocking thread before.
struct EngineRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped with the engine: the runtime's thread then stops, and the session's tasks with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EngineRuntime {
    async fn start() -> Result<Self, EngineError> {
        let (ready, handle) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("btfs-torrent".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    let _ = ready.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| EngineError::Start(format!("cannot start the BitTorrent thread: {e}")))?;
        let handle = handle
            .await
            .map_err(|_| EngineError::Start("the BitTorrent thread stopped at start".into()))?
            .map_err(|e| EngineError::Start(format!("cannot start the BitTorrent runtime: {e}")))?;
        Ok(Self { handle, _stop: stop })
    }

    /// Runs `task` on the session's runtime and waits for it from the caller's. The task is aborted if its
    /// waiter goes away first (an import given up on must not leave a task waiting on its torrent).
    async fn run<T: Send + 'static>(&self, task: impl Future<Output = T> + Send + 'static) -> Result<T, EngineError> {
        tokio_util::task::AbortOnDropHandle::new(self.handle.spawn(task))
            .await
            .map_err(|e| EngineError::Failed(format!("the BitTorrent runtime stopped: {e}")))
    }
}

impl Librqbit {
    /// Starts a session on a runtime of its own.
    pub async fn start(opts: &SwarmOptions) -> Result<Self, EngineError> {
        let listen = concrete_listen_addr(opts.listen)?;
        let dht = opts.dht.then(|| DhtSessionConfig {
            bootstrap_addrs: opts.dht_bootstrap.clone(),
            port: None,
            // No DHT state in the OS cache directory: the node keeps its own files under $BTFS_PATH only.
            persistence: None,
        });
        let session_opts = SessionOptions {
            dht,
            persistence: None,
            fastresume: false,
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: listen,
                // librqbit announces port 4240 for loopback listeners unless told the real one.
                announce_port: Some(listen.port()),
                ipv4_only: listen.is_ipv4(),
                enable_upnp_port_forwarding: false,
                ..Default::default()
            }),
            disable_local_service_discovery: !opts.local_discovery,
            ipv4_only: listen.is_ipv4(),
            client_name_and_version: Some(concat!("btfs/", env!("CARGO_PKG_VERSION")).to_string()),
            ..Default::default()
        };
        let runtime = EngineRuntime::start().await?;
        let session = runtime
            .run(Session::new_with_opts(std::env::temp_dir(), session_opts))
            .await?
            .map_err(|e| EngineError::Start(format!("{e:#}")))?;
        let listen = session.listen_addr().unwrap_or(listen);
        let reqwest = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| EngineError::Start(format!("cannot make the tracker client: {e}")))?;
        let discovery = Discovery { runtime: runtime.handle.clone(), dht: session.get_dht().cloned(), listen, reqwest };
        Ok(Self { session, listen, runtime, discovery })
    }
}

/// librqbit needs the real port up front to announce it; pick a free one when asked for port 0.
fn concrete_listen_addr(addr: SocketAddr) -> Result<SocketAddr, EngineError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = TcpListener::bind(addr).map_err(|e| EngineError::Start(format!("cannot listen on {addr}: {e}")))?;
    probe.local_addr().map_err(|e| EngineError::Start(e.to_string()))
}

fn peer_opts() -> PeerConnectionOptions {
    PeerConnectionOptions { connect_timeout: Some(Duration::from_secs(5)), ..Default::default() }
}

impl Engine for Librqbit {
    fn resolve<'a>(&'a self, magnet: &'a str, timeout: Duration) -> BoxFuture<'a, Result<Resolved, EngineError>> {
        Box::pin(async move {
            let opts = AddTorrentOptions { list_only: true, peer_opts: Some(peer_opts()), ..Default::default() };
            let (session, magnet) = (self.session.clone(), magnet.to_string());
            let add =
                self.runtime.run(async move { session.add_torrent(AddTorrent::from_url(&magnet), Some(opts)).await });
            match tokio::time::timeout(timeout, add).await {
                Err(_) => Err(EngineError::MetadataTimeout(timeout)),
                Ok(Err(e)) => Err(e),
                Ok(Ok(Err(e))) => Err(EngineError::Add(format!("{e:#}"))),
                Ok(Ok(Ok(AddTorrentResponse::ListOnly(r)))) => {
                    Ok(Resolved { torrent: r.torrent_bytes, peers: r.seen_peers })
                }
                Ok(Ok(Ok(_))) => Err(EngineError::Add("the magnet was added instead of listed".into())),
            }
        })
    }

    fn download<'a>(&'a self, job: Download<'a>) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(super::fetch::download(job, &self.discovery))
    }

    fn seed(&self, torrent: Bytes, files: Arc<dyn SeedFiles>) -> BoxFuture<'_, Result<(), EngineError>> {
        let session = self.session.clone();
        let seeded = self.runtime.run(async move {
            let opts = AddTorrentOptions {
                overwrite: true,
                storage_factory: Some(BlockStorageFactory { files }.boxed()),
                peer_opts: Some(peer_opts()),
                ..Default::default()
            };
            let handle = match session.add_torrent(AddTorrent::TorrentFileBytes(torrent), Some(opts)).await {
                Ok(AddTorrentResponse::AlreadyManaged(..)) => return Ok(()),
                Ok(r) => r.into_handle().ok_or_else(|| EngineError::Add("no torrent handle".into()))?,
                Err(e) => return Err(EngineError::Add(format!("{e:#}"))),
            };
            // The initial check reads every piece from the block store; a piece that fails it means the
            // store does not hold the data the torrent describes.
            handle.wait_until_initialized().await.map_err(|e| EngineError::Failed(format!("{e:#}")))?;
            let stats = handle.stats();
            if stats.progress_bytes < stats.total_bytes {
                let _ = session.delete(handle.id().into(), false).await;
                return Err(EngineError::Failed(format!(
                    "only {} of {} bytes could be read from the block store and matched the piece hashes",
                    stats.progress_bytes, stats.total_bytes
                )));
            }
            Ok(())
        });
        Box::pin(async move { seeded.await? })
    }

    fn stop<'a>(&'a self, info_hash: &'a [u8; 20]) -> BoxFuture<'a, Result<(), EngineError>> {
        let (session, id) = (self.session.clone(), librqbit::dht::Id20::new(*info_hash));
        Box::pin(async move {
            let stopped = self.runtime.run(async move {
                if session.get(id.into()).is_some() {
                    session.delete(id.into(), false).await.map_err(|e| EngineError::Failed(format!("{e:#}")))?;
                }
                Ok(())
            });
            stopped.await?
        })
    }

    fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // What `Session::stop` does, without its fixed one-second sleep at the end: the session's tasks
        // wind down on their own once cancelled, and nothing here waits for them.
        let session = self.session.clone();
        Box::pin(async move {
            let _ = self
                .runtime
                .run(async move {
                    let torrents = session.with_torrents(|all| all.map(|(_, t)| t.clone()).collect::<Vec<_>>());
                    for t in torrents {
                        if let Err(e) = session.pause(&t).await {
                            tracing::debug!(error = %e, "cannot pause a torrent at shutdown");
                        }
                    }
                    session.cancellation_token().cancel();
                })
                .await;
        })
    }
}

/// Storage over the block store, for seeding: reads come through `SeedFiles` and writes are refused (a seeded
/// torrent is complete by construction, and the initial check proves it). Imports do not use librqbit's
/// storage: their downloads are `fetch.rs`'s.
#[derive(Clone)]
struct BlockStorageFactory {
    files: Arc<dyn SeedFiles>,
}

struct BlockStorage {
    files: Arc<dyn SeedFiles>,
}

impl StorageFactory for BlockStorageFactory {
    type Storage = BlockStorage;

    fn create(&self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<BlockStorage> {
        Ok(BlockStorage { files: self.files.clone() })
    }

    fn clone_box(&self) -> librqbit::storage::BoxStorageFactory {
        self.clone().boxed()
    }
}

impl TorrentStorage for BlockStorage {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        self.files.read_at(file_id, offset, buf).map_err(anyhow::Error::msg)
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, _: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("a seeded torrent is read-only (write to file {file_id} at {offset})")
    }

    fn on_piece_completed(&self, _: librqbit_core::lengths::ValidPieceIndex) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_file(&self, _: usize, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _: usize, _: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(BlockStorage { files: self.files.clone() }))
    }
}

/// The default listen address of a profile.
pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}
