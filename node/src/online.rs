//! The node when a daemon runs: its network, and the reads and announcements that use it.
//!
//! `Node`'s methods stay synchronous (they run on blocking threads: the CLI's, or `spawn_blocking` in the
//! RPC API); when the node is online they reach the async network through the runtime handle kept here.

use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::Cid;
use tokio::runtime::Handle;

use crate::Node;
use crate::net::Network;
use crate::net::bitswap::Bitswap;
use crate::net::bitswap::session::FetchOptions;
use crate::repo::config::ProvideStrategy;
use crate::repo::store::{BlockFetcher, StoreError};

/// How long a read waits with no block arriving before it reports the block as not found.
pub const FETCH_STALL: Duration = Duration::from_secs(60);

/// The online half of a node.
#[derive(Debug)]
pub struct Online {
    pub network: Network,
    pub runtime: Handle,
    /// Listen addresses with `/p2p/<id>`, as `id` reports them.
    pub addresses: Vec<String>,
    pub protocols: Vec<String>,
    pub strategy: ProvideStrategy,
}

/// Reads of missing blocks go to Bitswap, one block at a time.
struct NetFetcher {
    bitswap: Bitswap,
    runtime: Handle,
}

impl BlockFetcher for NetFetcher {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, String> {
        let opts = FetchOptions { recursive: false, stall: FETCH_STALL };
        self.runtime.block_on(self.bitswap.fetch(vec![*cid], opts)).map_err(|e| e.to_string())?;
        match self.bitswap.node.repo().store().get_local(cid) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err("fetched but not stored".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Node {
    /// Puts the node online; reads of missing blocks go to the network from now on.
    pub fn go_online(self: &Arc<Self>, online: Online) {
        let fetcher = NetFetcher { bitswap: online.network.bitswap.clone(), runtime: online.runtime.clone() };
        self.repo().store().set_fetcher(Arc::new(fetcher));
        let _ = self.online.set(online);
    }

    pub fn online(&self) -> Option<&Online> {
        self.online.get()
    }

    /// Fetches the whole DAG under `cid` from the network, pipelined, when online and anything is missing.
    /// Returns whether the whole DAG is now known to be stored (the fetch walked all of it); offline that is
    /// not known.
    pub fn prefetch(&self, cid: &Cid) -> Result<bool, StoreError> {
        let Some(online) = self.online() else { return Ok(false) };
        let opts = FetchOptions { recursive: true, stall: FETCH_STALL };
        online
            .runtime
            .block_on(online.network.bitswap.fetch(vec![*cid], opts))
            .map(|_| true)
            .map_err(|e| StoreError::Fetch { cid: *cid, reason: e.to_string() })
    }

    /// Announces new pins to the DHT in the background, following `Reprovider.Strategy`.
    pub fn announce(&self, roots: Vec<Cid>) {
        let Some(online) = self.online() else { return };
        let keys: Vec<btfs_chunker::hash::Multihash> = match online.strategy {
            ProvideStrategy::Roots => roots.iter().map(|c| *c.hash()).collect(),
            ProvideStrategy::Pinned | ProvideStrategy::All => {
                use crate::repo::pins::{OnMissing, walk};
                let mut seen = std::collections::HashSet::new();
                for root in &roots {
                    if let Err(e) = walk(self.repo().store(), root, &mut seen, OnMissing::Skip, |_, _| Ok(())) {
                        tracing::warn!(error = %e, "cannot list blocks to announce");
                    }
                }
                seen.into_iter().collect()
            }
        };
        let swarm = online.network.swarm.clone();
        online.runtime.spawn(async move {
            for mh in keys {
                if let Err(e) = swarm.provide(mh).await {
                    tracing::warn!(error = %e, "announcing a provider record failed");
                }
            }
        });
    }
}
