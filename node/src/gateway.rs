//! The HTTP gateway inside the node: the gateway crate's content source over the block store (and Bitswap
//! when the daemon is online), and serving it on `Addresses.Gateway`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_chunker::hash::Multihash;
use btfs_gateway::{ContentSource, Fetch, GatewayConfig, Metrics, Origin, SourceError};
use bytes::Bytes;
use hashlink::LinkedHashMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::Node;
use crate::daemon::{DaemonError, StopSignals, multiaddr_to_socket, socket_to_multiaddr};
use crate::net::bitswap::session::{FetchError, FetchOptions};

/// Blocks the gateway hands out: small hot ones from memory, other local ones from RocksDB (read off the
/// async runtime), missing ones from Bitswap when the node is online.
pub struct NodeSource {
    node: Arc<Node>,
    /// How long Bitswap may go without progress on one block.
    stall: Duration,
    hot: Mutex<HotBlocks>,
}

/// Blocks up to [`HOT_BLOCK_MAX`] bytes (directory nodes, small files, roots) most recently served, up to
/// [`HOT_BYTES`] in all: a request for a small file then costs no thread hop and no read. Bulk file data
/// is not kept (it would only churn the cache). The whole cache is dropped when the store deletes blocks.
struct HotBlocks {
    blocks: LinkedHashMap<Multihash, Bytes>,
    bytes: usize,
    /// The store's deletion count the contents are valid for.
    generation: u64,
}

const HOT_BLOCK_MAX: usize = 64 * 1024;
const HOT_BYTES: usize = 32 * 1024 * 1024;

impl HotBlocks {
    fn get(&mut self, key: &Multihash, generation: u64) -> Option<Bytes> {
        if generation != self.generation {
            self.blocks.clear();
            self.bytes = 0;
            self.generation = generation;
            return None;
        }
        let data = self.blocks.get(key)?.clone();
        self.blocks.to_back(key);
        Some(data)
    }

    fn insert(&mut self, key: Multihash, data: Bytes, generation: u64) {
        if data.len() > HOT_BLOCK_MAX || generation != self.generation {
            return;
        }
        self.bytes += data.len();
        if let Some(old) = self.blocks.insert(key, data) {
            self.bytes -= old.len();
        }
        while self.bytes > HOT_BYTES {
            let Some((_, evicted)) = self.blocks.pop_front() else { break };
            self.bytes -= evicted.len();
        }
    }
}

impl NodeSource {
    pub fn new(node: Arc<Node>, config: &GatewayConfig) -> Self {
        let generation = node.repo().store().deletions();
        let hot = HotBlocks { blocks: LinkedHashMap::new(), bytes: 0, generation };
        Self { node, stall: config.block_timeout, hot: Mutex::new(hot) }
    }

    /// Local blocks, in order: hot ones from memory, the rest read in one hop off the runtime (small ones are
    /// remembered). `None` for a block not stored here.
    async fn local_many(&self, cids: &[Cid]) -> Vec<Result<Option<Bytes>, SourceError>> {
        let generation = self.node.repo().store().deletions();
        let mut out: Vec<Result<Option<Bytes>, SourceError>> = match self.hot.lock() {
            Ok(mut hot) => cids.iter().map(|c| Ok(hot.get(c.hash(), generation))).collect(),
            Err(_) => cids.iter().map(|_| Ok(None)).collect(),
        };
        let cold: Vec<(usize, Cid)> = out
            .iter()
            .zip(cids)
            .enumerate()
            .filter(|(_, (r, _))| matches!(r, Ok(None)))
            .map(|(i, (_, c))| (i, *c))
            .collect();
        if cold.is_empty() {
            return out;
        }
        let node = self.node.clone();
        let keys: Vec<Cid> = cold.iter().map(|(_, c)| *c).collect();
        let read = tokio::task::spawn_blocking(move || {
            keys.iter().map(|cid| node.repo().store().get_local(cid)).collect::<Vec<_>>()
        })
        .await;
        let Ok(found) = read else {
            for (i, cid) in cold {
                out[i] = Err(SourceError::Failed { cid, reason: "the block reader task failed".into() });
            }
            return out;
        };
        let mut hot = self.hot.lock().ok();
        for ((i, cid), result) in cold.into_iter().zip(found) {
            out[i] = match result {
                Ok(Some(data)) => {
                    let data = Bytes::from(data);
                    if let Some(hot) = hot.as_mut() {
                        hot.insert(*cid.hash(), data.clone(), generation);
                    }
                    Ok(Some(data))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(SourceError::Failed { cid, reason: e.to_string() }),
            };
        }
        out
    }

    /// A block that is not stored here, from Bitswap when the node is online and the request allows it.
    async fn fetch_remote(&self, cid: &Cid, fetch: Fetch) -> Result<(Bytes, Origin), SourceError> {
        let online = match (fetch, self.node.online()) {
            (Fetch::Network, Some(online)) => online,
            _ => return Err(SourceError::NotFound(*cid)),
        };
        let opts = FetchOptions { recursive: false, stall: self.stall };
        match online.network.bitswap.fetch(vec![*cid], opts).await {
            Ok(_) => {}
            Err(FetchError::NotFound { .. }) => return Err(SourceError::Timeout(*cid)),
            Err(e) => return Err(SourceError::Failed { cid: *cid, reason: e.to_string() }),
        }
        match self.local_many(std::slice::from_ref(cid)).await.pop() {
            Some(Ok(Some(data))) => Ok((data, Origin::Network)),
            Some(Err(e)) => Err(e),
            _ => Err(SourceError::Failed { cid: *cid, reason: "fetched but not stored".into() }),
        }
    }
}

impl ContentSource for NodeSource {
    /// One thread hop for all the blocks that are local; the rest one by one from the network.
    async fn get_many(&self, cids: &[Cid], fetch: Fetch) -> Vec<Result<(Bytes, Origin), SourceError>> {
        let local = self.local_many(cids).await;
        let mut out = Vec::with_capacity(cids.len());
        for (cid, result) in cids.iter().zip(local) {
            out.push(match result {
                Ok(Some(data)) => Ok((data, Origin::Local)),
                Ok(None) => self.fetch_remote(cid, fetch).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    async fn get(&self, cid: &Cid, fetch: Fetch) -> Result<(Bytes, Origin), SourceError> {
        match self.get_many(std::slice::from_ref(cid), fetch).await.pop() {
            Some(result) => result,
            None => Err(SourceError::Failed { cid: *cid, reason: "no answer for the block".into() }),
        }
    }
}

/// Binds the gateway's listener (before anything is announced, so a taken port fails start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serves the gateway on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let source = Arc::new(NodeSource::new(node, &config));
    let router = btfs_gateway::router(source, config, metrics);
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// `btfs gateway`: serves the repo read-only over HTTP without the network or the RPC API, until SIGINT or
/// SIGTERM. Listens on `listen` (a multiaddr) or `Addresses.Gateway`, and writes `$BTFS_PATH/gateway`.
pub fn run_standalone(path: &Path, listen: Option<&str>) -> Result<(), DaemonError> {
    let node = Arc::new(Node::open(path)?);
    let configured = node.repo().config().typed().addresses.gateway.clone();
    let (key, text) = match listen {
        Some(l) => ("--listen", l.to_string()),
        None => ("Addresses.Gateway", configured),
    };
    let addr = multiaddr_to_socket(&text)
        .ok_or_else(|| DaemonError::Config { key, reason: format!("{text:?} is not /ip4/<ip>/tcp/<port>") })?;
    let limits = node
        .repo()
        .config()
        .typed()
        .gateway
        .limits()
        .map_err(|reason| DaemonError::Config { key: "Gateway", reason })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("btfs-gateway")
        .build()
        .map_err(DaemonError::Runtime)?;
    let file = path.join("gateway");
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        StopSignals::install()?.cancel_on_signal(shutdown.clone(), false);
        let (listener, bound) =
            bind(addr).await.map_err(|source| DaemonError::Bind { addr: addr.to_string(), source })?;
        let url = format!("http://{bound}");
        crate::repo::config::write_atomic(&file, url.as_bytes())
            .map_err(|source| DaemonError::Write { path: file.display().to_string(), source })?;
        // A closed stdout (the parent went away) must not stop the server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Gateway server listening on {}", socket_to_multiaddr(bound));
        let _ = writeln!(out, "Serving {} read-only at {url}", node.repo().path().display());
        let _ = out.flush();
        drop(out);
        let metrics = Arc::new(Metrics::new());
        serve(node.clone(), listener, limits, metrics, shutdown)
            .await
            .map_err(|source| DaemonError::Bind { addr: url, source })
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_file(&file);
    result
}
