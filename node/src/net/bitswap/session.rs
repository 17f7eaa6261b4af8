//! Sessions: fetching one block or a whole DAG from several peers at once.
//!
//! A session first walks whatever part of the DAG is already stored, then asks every connected peer
//! whether it has the first missing block (want-have, with send-dont-have) while it looks for providers in
//! the DHT. Peers that answer HAVE, or send a block, join the session. Missing blocks are then requested
//! with want-block, pipelined: each peer gets up to `PEER_WINDOW` blocks at a time and the next block goes
//! to the peer with the fewest outstanding, so a fast peer takes more of the work. A block a peer says it
//! lacks, a request that times out, or a peer that disconnects is handed to another peer. The session
//! ends when every block is stored, or fails when nothing has arrived for `stall` (naming the block).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btfs_chunker::Cid;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::message::{Entry, WantType};
use super::{Bitswap, Command, SessionEvent};
use crate::Node;

/// Most blocks outstanding per peer. Each peer's window starts at `START_WINDOW`, grows by one per block
/// it delivers and halves when it goes quiet, so a slow peer (Helia aborts its sends when asked for too
/// much at once) is not flooded and a fast one soon has a full window.
const PEER_WINDOW: usize = 128;
const START_WINDOW: usize = 32;
/// Most bytes outstanding per btfs peer (estimated from the blocks received so far).
const PEER_WINDOW_BYTES: u64 = 12 * 1024 * 1024;
/// The same for other peers. Helia 7 answers everything asked of it in one message and aborts its own
/// stream when that message is much over 2 MiB (measured: 8 blocks of 256 KiB pass, 14 fail), so it gets
/// at most 2 MiB of wants at a time.
const OTHER_PEER_WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// Received bytes a session lets wait for the store before it asks for more: the network can deliver faster
/// than the disk takes blocks, and without this the store's queue (and the node's memory) grew with the DAG.
const MAX_UNSTORED_BYTES: u64 = 64 * 1024 * 1024;
/// A peer with work that delivers nothing for this long is late: its wants are sent again (to another
/// peer when there is one). Messages do get lost: a peer may close a stream with a message half-written.
const WANT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connected peer that has not said it holds the data waits before it is asked again: this,
/// doubling with each time it was asked, up to `REPROBE_MAX` (a node with hundreds of connections is not
/// asked about every one of them every second while a session runs).
const REPROBE_AFTER: Duration = Duration::from_secs(1);
const REPROBE_MAX: Duration = Duration::from_secs(16);
/// How often the session looks again for peers while it has none.
const SEARCH_INTERVAL: Duration = Duration::from_secs(5);

/// What to fetch and how long to wait.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Fetch everything the roots link to, not only the roots.
    pub recursive: bool,
    /// Give up when no block has arrived for this long.
    pub stall: Duration,
}

/// How a fetch went.
#[derive(Debug, Clone, Default)]
pub struct FetchStats {
    pub blocks: u64,
    pub bytes: u64,
    pub peers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("block {cid} was not found on the network within {secs} s")]
    NotFound { cid: Cid, secs: u64 },
    #[error("block {cid} cannot be read: {reason}")]
    Local { cid: Cid, reason: String },
    #[error("the node is shutting down")]
    Shutdown,
}

struct SessionPeer {
    inflight: usize,
    timeouts: u32,
    /// When the peer last delivered something, or was first given work after being idle.
    active: Instant,
    /// How many blocks it may have outstanding.
    window: usize,
}

impl Default for SessionPeer {
    fn default() -> Self {
        Self { inflight: 0, timeouts: 0, active: Instant::now(), window: START_WINDOW }
    }
}

struct Session {
    bitswap: Bitswap,
    id: u64,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    opts: FetchOptions,
    /// Blocks not stored locally that nobody has been asked for yet.
    need: VecDeque<Cid>,
    /// Blocks asked for: from whom, since when.
    inflight: HashMap<Cid, (PeerId, Instant)>,
    /// Peers known to hold blocks of this DAG.
    peers: HashMap<PeerId, SessionPeer>,
    /// Peers that said they lack a block.
    lacking: HashMap<Cid, HashSet<PeerId>>,
    /// Peers asked whether they have the first block: when last, and how many times.
    probed: HashMap<PeerId, (Instant, u32)>,
    seen: HashSet<Cid>,
    /// Received blocks not yet confirmed stored, with their sizes.
    unstored: HashMap<Cid, u64>,
    /// The sum of `unstored`'s sizes.
    unstored_bytes: u64,
    stats: FetchStats,
    last_progress: Instant,
    last_search: Option<Instant>,
    providers: Option<mpsc::Receiver<PeerId>>,
}

impl Bitswap {
    /// Fetches `roots` (and, if asked, everything below them) into the store.
    pub async fn fetch(&self, roots: Vec<Cid>, opts: FetchOptions) -> Result<FetchStats, FetchError> {
        let id = self.new_session_id();
        let (tx, events) = mpsc::unbounded_channel();
        self.send(Command::OpenSession { id, events: tx }).await;
        let mut session = Session {
            bitswap: self.clone(),
            id,
            events,
            opts,
            need: VecDeque::new(),
            inflight: HashMap::new(),
            peers: HashMap::new(),
            lacking: HashMap::new(),
            probed: HashMap::new(),
            seen: HashSet::new(),
            unstored: HashMap::new(),
            unstored_bytes: 0,
            stats: FetchStats::default(),
            last_progress: Instant::now(),
            last_search: None,
            providers: None,
        };
        let result = session.run(roots).await;
        session.finish().await;
        result
    }
}

/// Splits `cids` into those stored (walking their stored descendants when `recursive`) and the missing
/// frontier, which is returned.
fn missing_frontier(node: &Node, cids: Vec<Cid>, recursive: bool) -> Result<Vec<Cid>, FetchError> {
    let store = node.repo().store();
    let mut stack = cids;
    let mut missing = Vec::new();
    let mut visited = HashSet::new();
    while let Some(cid) = stack.pop() {
        if !visited.insert(cid) {
            continue;
        }
        let local = store.get_local(&cid).map_err(|e| FetchError::Local { cid, reason: e.to_string() })?;
        match local {
            None => missing.push(cid),
            Some(data) if recursive => {
                let links = btfs_chunker::links::links(&cid, &data)
                    .map_err(|e| FetchError::Local { cid, reason: e.to_string() })?;
                stack.extend(links.into_iter().rev());
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

impl Session {
    async fn run(&mut self, roots: Vec<Cid>) -> Result<FetchStats, FetchError> {
        self.enqueue_local(roots).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            if self.need.is_empty() && self.inflight.is_empty() && self.unstored.is_empty() {
                self.stats.peers = self.peers.len();
                return Ok(self.stats.clone());
            }
            self.search_if_idle().await;
            self.assign().await;
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event).await?,
                    None => return Err(FetchError::Shutdown),
                },
                peer = next_provider(&mut self.providers) => match peer {
                    Some(peer) => self.probe(peer).await,
                    None => self.providers = None,
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    /// Queues what is missing under `cids`, skipping what is stored or already queued.
    async fn enqueue_local(&mut self, cids: Vec<Cid>) -> Result<(), FetchError> {
        let cids: Vec<Cid> = cids.into_iter().filter(|c| self.seen.insert(*c)).collect();
        if cids.is_empty() {
            return Ok(());
        }
        let node = self.bitswap.node.clone();
        let recursive = self.opts.recursive;
        let missing = tokio::task::spawn_blocking(move || missing_frontier(&node, cids, recursive))
            .await
            .map_err(|_| FetchError::Shutdown)??;
        self.need.extend(missing);
        Ok(())
    }

    async fn on_event(&mut self, event: SessionEvent) -> Result<(), FetchError> {
        match event {
            SessionEvent::Block { cid, from, data } => {
                let Some((asked, _)) = self.inflight.remove(&cid) else {
                    // A block we only probed for, or asked of someone else: still ours, it is stored.
                    self.need.retain(|c| *c != cid);
                    self.peers.entry(from).or_default();
                    return self.on_block(cid, &data).await;
                };
                if let Some(p) = self.peers.get_mut(&asked) {
                    p.inflight = p.inflight.saturating_sub(1);
                }
                if let Some(p) = self.peers.get_mut(&from) {
                    p.active = Instant::now();
                    p.timeouts = 0;
                    p.window = (p.window + 1).min(PEER_WINDOW);
                    // (`assign` caps it again by bytes.)
                }
                if asked != from {
                    self.bitswap.send(Command::Cancel { peer: asked, cids: vec![cid] }).await;
                }
                self.peers.entry(from).or_default();
                self.on_block(cid, &data).await?;
            }
            SessionEvent::Stored(cid) => {
                if let Some(size) = self.unstored.remove(&cid) {
                    self.unstored_bytes -= size;
                }
            }
            SessionEvent::Have { from, .. } => {
                self.peers.entry(from).or_default();
            }
            SessionEvent::DontHave { cid, from } => {
                self.lacking.entry(cid).or_default().insert(from);
                if self.inflight.get(&cid).is_some_and(|(p, _)| *p == from) {
                    self.inflight.remove(&cid);
                    if let Some(p) = self.peers.get_mut(&from) {
                        p.inflight = p.inflight.saturating_sub(1);
                    }
                    self.need.push_front(cid);
                }
            }
            SessionEvent::PeerGone(peer) => {
                self.peers.remove(&peer);
                self.probed.remove(&peer);
                self.requeue_from(peer);
            }
        }
        Ok(())
    }

    async fn on_block(&mut self, cid: Cid, data: &[u8]) -> Result<(), FetchError> {
        if self.unstored.insert(cid, data.len() as u64).is_none() {
            self.unstored_bytes += data.len() as u64;
        }
        self.stats.blocks += 1;
        self.stats.bytes += data.len() as u64;
        self.last_progress = Instant::now();
        if self.opts.recursive {
            let links =
                btfs_chunker::links::links(&cid, data).map_err(|e| FetchError::Local { cid, reason: e.to_string() })?;
            self.enqueue_local(links).await?;
        }
        Ok(())
    }

    fn requeue_from(&mut self, peer: PeerId) {
        let lost: Vec<Cid> = self.inflight.iter().filter(|(_, (p, _))| *p == peer).map(|(c, _)| *c).collect();
        for cid in lost {
            self.inflight.remove(&cid);
            self.need.push_front(cid);
        }
    }

    /// Hands out queued blocks to peers with room in their window.
    async fn assign(&mut self) {
        // Backpressure: while the store is behind, let what is in flight land and ask for nothing more.
        if self.unstored_bytes > MAX_UNSTORED_BYTES {
            return;
        }
        // Blocks of this DAG so far average this size (a full-size v0 leaf until one has arrived).
        let average = self.stats.bytes.checked_div(self.stats.blocks).unwrap_or(256 * 1024).max(1);
        let byte_window = |bytes: u64| usize::try_from(bytes / average).unwrap_or(usize::MAX).clamp(1, PEER_WINDOW);
        for (peer, p) in self.peers.iter_mut() {
            let limit = if self.bitswap.is_btfs_peer(peer) { PEER_WINDOW_BYTES } else { OTHER_PEER_WINDOW_BYTES };
            p.window = p.window.min(byte_window(limit));
        }
        let mut batches: HashMap<PeerId, Vec<Entry>> = HashMap::new();
        let mut skipped = Vec::new();
        while let Some(cid) = self.need.pop_front() {
            let lacking = self.lacking.get(&cid);
            let best = self
                .peers
                .iter()
                .filter(|(p, s)| s.inflight < s.window && !lacking.is_some_and(|l| l.contains(p)))
                .min_by_key(|(_, s)| s.inflight)
                .map(|(p, _)| *p);
            let Some(peer) = best else {
                skipped.push(cid);
                // Nobody has room (or nobody has it): stop handing out, keep the order.
                if self.peers.values().all(|s| s.inflight >= s.window) {
                    break;
                }
                continue;
            };
            if let Some(s) = self.peers.get_mut(&peer) {
                if s.inflight == 0 {
                    s.active = Instant::now();
                }
                s.inflight += 1;
            }
            self.inflight.insert(cid, (peer, Instant::now()));
            batches.entry(peer).or_default().push(Entry::want(cid, WantType::Block, true));
        }
        for cid in skipped.into_iter().rev() {
            self.need.push_front(cid);
        }
        for (peer, entries) in batches {
            self.bitswap.send(Command::Want { session: self.id, peer, entries }).await;
        }
    }

    /// Asks `peer` whether it has the first missing block, unless it is already one of ours or was asked
    /// recently (`REPROBE_AFTER`, doubling per time asked).
    async fn probe(&mut self, peer: PeerId) {
        if self.peers.contains_key(&peer) {
            return;
        }
        let asked = self.probed.get(&peer).copied();
        if let Some((at, times)) = asked
            && at.elapsed() < (REPROBE_AFTER * 2u32.pow(times.min(8))).min(REPROBE_MAX)
        {
            return;
        }
        self.probed.insert(peer, (Instant::now(), asked.map_or(0, |(_, times)| times + 1)));
        let Some(first) = self.need.front().copied().or_else(|| self.inflight.keys().next().copied()) else {
            return;
        };
        let entries = vec![Entry::want(first, WantType::Have, true)];
        self.bitswap.send(Command::Want { session: self.id, peer, entries }).await;
    }

    /// With no peer holding the data, probe every connected peer and look for providers in the DHT.
    async fn search_if_idle(&mut self) {
        let idle = self.peers.is_empty() || (self.inflight.is_empty() && !self.need.is_empty());
        if !idle || self.last_search.is_some_and(|t| t.elapsed() < SEARCH_INTERVAL) {
            return;
        }
        self.last_search = Some(Instant::now());
        self.probed.clear();
        for peer in self.bitswap.connected_peers().await {
            self.probe(peer).await;
        }
        if let Some(first) = self.need.front() {
            self.providers = Some(self.bitswap.swarm.find_providers(*first.hash(), 20).await);
        }
    }

    async fn on_tick(&mut self) -> Result<(), FetchError> {
        // Connected peers that are not ours yet are asked again: a peer that connected after the first search,
        // or whose answer to it was lost, would otherwise never be asked while others keep the session busy.
        if !self.need.is_empty() || !self.inflight.is_empty() {
            for peer in self.bitswap.connected_peers().await {
                self.probe(peer).await;
            }
        }
        let now = Instant::now();
        // A peer is late when it has had work for WANT_TIMEOUT without delivering anything: a slow peer
        // working through a long window is not late. Its wants go back in the queue, to other peers when
        // there are any.
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.inflight > 0 && now.duration_since(p.active) > WANT_TIMEOUT)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in late {
            let cids: Vec<Cid> = self.inflight.iter().filter(|(_, (p, _))| *p == peer).map(|(c, _)| *c).collect();
            let others = self.peers.len() > 1;
            for cid in &cids {
                self.inflight.remove(cid);
                self.need.push_front(*cid);
                if others {
                    self.lacking.entry(*cid).or_default().insert(peer);
                }
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.inflight = 0;
                p.window = (p.window / 2).max(START_WINDOW / 2);
                p.active = now;
                p.timeouts += 1;
                if p.timeouts >= 3 && others {
                    tracing::debug!(%peer, "bitswap session: dropping a peer that keeps timing out");
                    self.peers.remove(&peer);
                }
            }
            if others {
                self.bitswap.send(Command::Cancel { peer, cids }).await;
            }
        }
        if now.duration_since(self.last_progress) > self.opts.stall {
            let cid = self
                .need
                .front()
                .or_else(|| self.inflight.keys().next())
                .or_else(|| self.unstored.keys().next())
                .copied();
            if let Some(cid) = cid {
                return Err(FetchError::NotFound { cid, secs: self.opts.stall.as_secs() });
            }
        }
        // Blocks every session peer lacks: forget who lacked them when searching again, so they are asked
        // again (a peer may have fetched them since) and new peers can join.
        let stuck = self.inflight.is_empty() && !self.need.is_empty();
        if self.peers.is_empty() || (stuck && self.last_search.is_some_and(|t| t.elapsed() >= SEARCH_INTERVAL)) {
            self.lacking.clear();
        }
        Ok(())
    }

    /// Cancels what is still outstanding and leaves the engine.
    async fn finish(&mut self) {
        let mut by_peer: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        for (cid, (peer, _)) in self.inflight.drain() {
            by_peer.entry(peer).or_default().push(cid);
        }
        for (peer, cids) in by_peer {
            self.bitswap.send(Command::Cancel { peer, cids }).await;
        }
        self.bitswap.send(Command::CloseSession(self.id)).await;
    }
}

async fn next_provider(providers: &mut Option<mpsc::Receiver<PeerId>>) -> Option<PeerId> {
    match providers {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps the compiler honest about the session being Send (it runs inside spawned tasks).
#[allow(dead_code)]
fn assert_send(b: Arc<Bitswap>) {
    fn is_send<T: Send>(_: T) {}
    is_send(async move { b.fetch(Vec::new(), FetchOptions { recursive: false, stall: Duration::ZERO }).await });
}
