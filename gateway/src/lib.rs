//! The btfs HTTP gateway: the IPFS path gateway (UnixFS files, directories, listings, ranges) and the
//! trustless gateway (raw blocks and CAR streams) for `/ipfs/<cid>[/path]` and its alias `/btfs/...`, as an
//! axum [`Router`] over a [`ContentSource`].
//!
//! The gateway never writes: it reads verified blocks through the source and turns them into HTTP. The node
//! implements the source over its store and the network; tests use [`MemorySource`].

mod car;
mod content;
mod listing;
pub mod metrics;
pub mod mime;
pub mod request;
mod serve;
pub mod source;
mod tar;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use metrics::Metrics;
pub use source::{ContentSource, Fetch, MemorySource, Origin, SourceError};

/// Limits of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Requests served at once; more get 429 with `Retry-After`.
    pub concurrency: usize,
    /// How long one block may take to arrive before the request gets 504.
    pub block_timeout: Duration,
    /// How long a request may take to produce its response head (resolution, sniffing) before 504.
    pub head_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { concurrency: 1024, block_timeout: Duration::from_secs(30), head_timeout: Duration::from_secs(60) }
    }
}

/// Builds the gateway's router. Serve it with `axum::serve` (or call it in-process in tests).
pub fn router<S: ContentSource>(source: Arc<S>, config: GatewayConfig, metrics: Arc<Metrics>) -> Router {
    serve::router(source, config, metrics)
}
