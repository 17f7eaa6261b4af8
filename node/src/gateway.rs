//! The HTTP gateway inside the node: the gateway crate's content source over the block store (and Bitswap
//! when the daemon is online), and serving it on `Addresses.Gateway`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_gateway::{ContentSource, Fetch, GatewayConfig, Metrics, Origin, SourceError};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::Node;
use crate::net::bitswap::session::{FetchError, FetchOptions};

/// Blocks the gateway hands out: local ones from RocksDB (read off the async runtime), missing ones from
/// Bitswap when the node is online.
pub struct NodeSource {
    node: Arc<Node>,
    /// How long Bitswap may go without progress on one block.
    stall: Duration,
}

impl NodeSource {
    pub fn new(node: Arc<Node>, config: &GatewayConfig) -> Self {
        Self { node, stall: config.block_timeout }
    }

    async fn local(&self, cid: &Cid) -> Result<Option<Vec<u8>>, SourceError> {
        let node = self.node.clone();
        let key = *cid;
        let read = tokio::task::spawn_blocking(move || node.repo().store().get_local(&key)).await;
        match read {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(SourceError::Failed { cid: *cid, reason: e.to_string() }),
            Err(e) => Err(SourceError::Failed { cid: *cid, reason: e.to_string() }),
        }
    }
}

impl ContentSource for NodeSource {
    async fn get(&self, cid: &Cid, fetch: Fetch) -> Result<(Bytes, Origin), SourceError> {
        if let Some(data) = self.local(cid).await? {
            return Ok((Bytes::from(data), Origin::Local));
        }
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
        match self.local(cid).await? {
            Some(data) => Ok((Bytes::from(data), Origin::Network)),
            None => Err(SourceError::Failed { cid: *cid, reason: "fetched but not stored".into() }),
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
