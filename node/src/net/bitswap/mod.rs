//! Our Bitswap: `/ipfs/bitswap/1.2.0`, answering 1.1.0 and 1.0.0 too, over libp2p-stream.
//!
//! Shape (actors, see docs/architecture.md):
//! - one **engine** task owns all state: per-peer ledgers and wantlists, which session wants which block,
//!   and counters. Everything reaches it as a `Command` on one bounded channel.
//! - an **inbound reader** task per stream a peer opens to us: reads capped messages, decodes them (which
//!   hashes every block: a block is only ever known under the CID its bytes hash to) and hands them to the
//!   engine. A malformed message closes the stream and counts against the peer.
//! - a **peer writer** task per peer we send to: drains that peer's queue (blocks and presences it asked
//!   for, wants our sessions send) into messages of at most 4 MiB on one stream we open, reading blocks
//!   from the store off the runtime.
//! - a **store writer** thread: received blocks that a session wants are written in batches, then reported
//!   back to the engine, which tells the sessions. Blocks nobody asked for are dropped, never stored.
//! - **sessions** (see `session.rs`) fetch a block or a whole DAG from several peers at once.

pub use btfs_chunker::bitswap as message;
pub mod session;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btfs_chunker::Cid;
use btfs_chunker::hash::Multihash;
use bytes::Bytes;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::message::{Entry, Message, Presence, Version, WantType};
use crate::Node;

pub const PROTOCOL_120: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
pub const PROTOCOL_110: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.1.0");
pub const PROTOCOL_100: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.0.0");
pub const PROTOCOL_LEGACY: StreamProtocol = StreamProtocol::new("/ipfs/bitswap");

/// Entries a peer may keep in its wantlist with us; more are ignored.
const MAX_PEER_WANTS: usize = 16 * 1024;
/// Serve requests queued per peer; a flood beyond this is dropped.
const MAX_PEER_QUEUE: usize = 16 * 1024;
/// Bytes of blocks per outgoing message (a block larger than this goes alone; every message stays under
/// `MAX_MESSAGE`). Smaller messages pipeline better: the receiver decodes one while the next arrives.
/// Measured over loopback, 1 GiB: 4 MiB messages about 100 MB/s, 1 MiB about 165 MB/s, 256 KiB about 130.
const MESSAGE_BLOCK_BUDGET: usize = 1024 * 1024;
/// Answers a peer writer has being read from the store while it writes the current one. A block not in the
/// page cache waits on the disk: with one answer read ahead, a single provider's cold 1 GiB took 2.9-3.5 s;
/// with three, 2.5-3.0 s. A peer's answers in memory stay below four messages.
const READ_AHEAD: usize = 3;
/// Inbound streams waiting for the accept loop (all peers together); a burst beyond this is reset.
const INBOUND_QUEUE: usize = 256;
/// A peer that sends this many malformed messages is disconnected.
const MAX_STRIKES: u32 = 3;
/// An outgoing stream idle this long is closed rather than reused (Helia resets idle streams at 10 s).
const STREAM_IDLE: Duration = Duration::from_secs(5);
/// How long one outgoing message may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session hears about the blocks it wants.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// The block arrived from `from` and matches its CID; it is being written to the store.
    Block {
        cid: Cid,
        from: PeerId,
        data: Bytes,
    },
    /// The block is in the store.
    Stored(Cid),
    Have {
        cid: Cid,
        from: PeerId,
    },
    DontHave {
        cid: Cid,
        from: PeerId,
    },
    PeerGone(PeerId),
}

pub type SessionId = u64;

/// Requests to the engine.
pub(crate) enum Command {
    Inbound {
        peer: PeerId,
        msg: Message,
    },
    Stored(Vec<Cid>),
    PeerConnected(PeerId),
    PeerDisconnected(PeerId),
    Misbehaved(PeerId, String),
    OpenSession {
        id: SessionId,
        events: mpsc::UnboundedSender<SessionEvent>,
    },
    CloseSession(SessionId),
    /// Send wants to a peer on behalf of a session, which then hears of those blocks.
    Want {
        session: SessionId,
        peer: PeerId,
        entries: Vec<Entry>,
    },
    Cancel {
        peer: PeerId,
        cids: Vec<Cid>,
    },
    /// A peer writer sent these blocks: they leave the peer's wantlist.
    Served {
        peer: PeerId,
        cids: Vec<Cid>,
        bytes: u64,
    },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Wantlist {
        peer: Option<PeerId>,
        reply: oneshot::Sender<Vec<Cid>>,
    },
    Ledger {
        peer: PeerId,
        reply: oneshot::Sender<Option<LedgerStat>>,
    },
}

/// Per-peer accounting, as `bitswap ledger` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LedgerStat {
    pub peer: String,
    pub sent: u64,
    pub recv: u64,
    pub exchanged: u64,
}

/// Counters for `bitswap stat` (kubo's keys).
#[derive(Debug, Default)]
pub struct Counters {
    pub blocks_received: AtomicU64,
    pub data_received: AtomicU64,
    pub blocks_sent: AtomicU64,
    pub data_sent: AtomicU64,
    pub dup_blks_received: AtomicU64,
    pub messages_received: AtomicU64,
}

/// `bitswap stat`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BitswapStat {
    pub provide_buf_len: u64,
    pub wantlist: Vec<serde_json::Value>,
    pub peers: Vec<String>,
    pub blocks_received: u64,
    pub data_received: u64,
    pub blocks_sent: u64,
    pub data_sent: u64,
    pub dup_blks_received: u64,
    pub dup_data_received: u64,
    pub messages_received: u64,
}

/// The cloneable handle to the engine.
#[derive(Clone)]
pub struct Bitswap {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    /// Peers whose identify names a btfs agent: they split answers into small messages, so sessions may
    /// keep more outstanding with them (see `session.rs`).
    pub(crate) btfs_peers: Arc<Mutex<HashSet<PeerId>>>,
    next_session: Arc<AtomicU64>,
    pub(crate) node: Arc<Node>,
    pub(crate) swarm: crate::net::SwarmHandle,
}

impl std::fmt::Debug for Bitswap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitswap").finish_non_exhaustive()
    }
}

/// A peer's side of the exchange: what it wants from us, what we owe it, what it got.
#[derive(Default)]
struct PeerState {
    connected: bool,
    wants: HashSet<Cid>,
    queue: Option<Arc<PeerQueue>>,
    sent: u64,
    recv: u64,
    strikes: u32,
}

/// What a peer writer sends next. Shared between the engine (which fills it) and the writer (which drains it).
#[derive(Default)]
struct PeerQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
}

#[derive(Default)]
struct QueueInner {
    /// Blocks or presences the peer asked for, in order.
    serve: VecDeque<Entry>,
    /// Wants and cancels from our sessions.
    wants: Vec<Entry>,
    closed: bool,
}

impl PeerQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Engine {
    node: Arc<Node>,
    control: libp2p_stream::Control,
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    swarm: crate::net::SwarmHandle,
    peers: HashMap<PeerId, PeerState>,
    sessions: HashMap<SessionId, mpsc::UnboundedSender<SessionEvent>>,
    /// Which sessions want which block (by multihash: the store's key).
    interest: HashMap<Multihash, (Cid, Vec<SessionId>)>,
    /// Received blocks on their way to the store, shared with the sessions that parse their links (no copy).
    store_tx: crossbeam_channel::Sender<(Cid, Bytes)>,
    /// Which sessions wait for a received block to reach the store.
    storing: HashMap<Multihash, Vec<SessionId>>,
    shutdown: CancellationToken,
}

impl Bitswap {
    /// Starts the engine, its inbound listener and its store writer.
    pub(crate) fn start(
        node: Arc<Node>,
        control: libp2p_stream::Control,
        acceptor: &crate::net::inbound::Acceptor,
        swarm: crate::net::SwarmHandle,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel(1024);
        let counters = Arc::new(Counters::default());
        let incoming = acceptor.accept(&[PROTOCOL_120, PROTOCOL_110, PROTOCOL_100, PROTOCOL_LEGACY], INBOUND_QUEUE)?;
        tokio::spawn(accept_loop(incoming, tx.clone(), shutdown.clone()));

        let (store_tx, store_rx) = crossbeam_channel::unbounded();
        let (stored_tx, mut stored_rx) = mpsc::unbounded_channel();
        let store_node = node.clone();
        std::thread::Builder::new()
            .name("bitswap-store".into())
            .spawn(move || store_writer(store_node, store_rx, stored_tx))
            .map_err(|e| e.to_string())?;
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(batch) = stored_rx.recv().await {
                if forward.send(Command::Stored(batch)).await.is_err() {
                    break;
                }
            }
        });

        let engine = Engine {
            node: node.clone(),
            control,
            tx: tx.clone(),
            counters: counters.clone(),
            swarm: swarm.clone(),
            peers: HashMap::new(),
            sessions: HashMap::new(),
            interest: HashMap::new(),
            store_tx,
            storing: HashMap::new(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(engine.run(rx));
        Ok(Self { tx, counters, btfs_peers: Arc::default(), next_session: Arc::new(AtomicU64::new(1)), node, swarm })
    }

    pub(crate) async fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }

    /// Records what identify said about a peer's software.
    pub(crate) fn peer_agent(&self, peer: PeerId, agent: &str) {
        let mut peers = self.btfs_peers.lock().unwrap_or_else(|p| p.into_inner());
        if agent.starts_with("btfs/") {
            peers.insert(peer);
        } else {
            peers.remove(&peer);
        }
    }

    pub(crate) fn is_btfs_peer(&self, peer: &PeerId) -> bool {
        self.btfs_peers.lock().unwrap_or_else(|p| p.into_inner()).contains(peer)
    }

    pub(crate) fn new_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ConnectedPeers(reply)).await;
        rx.await.unwrap_or_default()
    }

    /// Our wants (no peer) or what `peer` wants from us.
    pub async fn wantlist(&self, peer: Option<PeerId>) -> Vec<Cid> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Wantlist { peer, reply }).await;
        rx.await.unwrap_or_default()
    }

    pub async fn ledger(&self, peer: PeerId) -> Option<LedgerStat> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Ledger { peer, reply }).await;
        rx.await.ok().flatten()
    }

    pub async fn stat(&self) -> BitswapStat {
        let c = &self.counters;
        let wantlist = self.wantlist(None).await.iter().map(|c| serde_json::json!({ "/": c.to_string() })).collect();
        let peers = self.connected_peers().await.iter().map(PeerId::to_string).collect();
        BitswapStat {
            provide_buf_len: 0,
            wantlist,
            peers,
            blocks_received: c.blocks_received.load(Ordering::Relaxed),
            data_received: c.data_received.load(Ordering::Relaxed),
            blocks_sent: c.blocks_sent.load(Ordering::Relaxed),
            data_sent: c.data_sent.load(Ordering::Relaxed),
            dup_blks_received: c.dup_blks_received.load(Ordering::Relaxed),
            dup_data_received: 0,
            messages_received: c.messages_received.load(Ordering::Relaxed),
        }
    }
}

fn version_of(protocol: &StreamProtocol) -> Version {
    if *protocol == PROTOCOL_120 {
        Version::V120
    } else if *protocol == PROTOCOL_110 {
        Version::V110
    } else {
        Version::V100
    }
}

async fn accept_loop(
    mut incoming: mpsc::Receiver<crate::net::inbound::Incoming>,
    tx: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let budget = Arc::new(Semaphore::new(wire::INBOUND_BUDGET_KIB));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = incoming.recv() => next,
        };
        let Some(crate::net::inbound::Incoming { peer, stream, .. }) = next else { break };
        tokio::spawn(read_loop(peer, stream, tx.clone(), budget.clone(), shutdown.clone()));
    }
}

/// Reads messages from one inbound stream until it ends, fails or sends garbage. Decoding (which hashes
/// every block) runs on a blocking thread while the next message is read.
async fn read_loop(
    peer: PeerId,
    mut stream: Stream,
    tx: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let (bodies, mut to_decode) = mpsc::channel::<Bytes>(2);
    let decoder_tx = tx.clone();
    let decoder = tokio::spawn(async move {
        while let Some(body) = to_decode.recv().await {
            let decoded = tokio::task::spawn_blocking(move || Message::decode_shared(&body)).await;
            match decoded {
                Ok(Ok(msg)) => {
                    if decoder_tx.send(Command::Inbound { peer, msg }).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    let _ = decoder_tx.send(Command::Misbehaved(peer, e.to_string())).await;
                    return;
                }
                Err(_) => return,
            }
        }
    });
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            read = wire::read_message(&mut stream, &budget) => read,
        };
        match read {
            Ok(Some(body)) => {
                if bodies.send(Bytes::from(body)).await.is_err() {
                    break; // the decoder stopped on a bad message
                }
            }
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::TimedOut => {
                let _ = tx.send(Command::Misbehaved(peer, e.to_string())).await;
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "bitswap stream closed");
                break;
            }
        }
    }
    drop(bodies);
    let _ = decoder.await;
}

/// Received blocks written to the store in one batch, at most (plus one block). Big enough to amortise a
/// write; small enough that the batch's buffer is reused from the heap rather than mapped afresh (and faulted
/// in page by page) each time, as the C library does for allocations of 32 MiB and more.
const STORE_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Writes wanted blocks to the store in batches and reports them back.
fn store_writer(
    node: Arc<Node>,
    rx: crossbeam_channel::Receiver<(Cid, Bytes)>,
    stored: mpsc::UnboundedSender<Vec<Cid>>,
) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.1.len();
        let mut batch = vec![first];
        while bytes < STORE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.1.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = node.repo().store().put_slices(batch.iter().map(|(cid, data)| (cid, &data[..]))) {
            tracing::error!(error = %e, "storing received blocks failed");
            continue;
        }
        if stored.send(batch.into_iter().map(|(cid, _)| cid).collect()).is_err() {
            return;
        }
    }
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let cmd = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                cmd = rx.recv() => cmd,
            };
            let Some(cmd) = cmd else { break };
            self.handle(cmd);
        }
        for peer in self.peers.values() {
            if let Some(q) = &peer.queue {
                q.lock().closed = true;
                q.notify.notify_one();
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Inbound { peer, msg } => self.on_message(peer, msg),
            Command::Stored(batch) => {
                for cid in batch {
                    for id in self.storing.remove(cid.hash()).unwrap_or_default() {
                        if let Some(s) = self.sessions.get(&id) {
                            let _ = s.send(SessionEvent::Stored(cid));
                        }
                    }
                }
            }
            Command::PeerConnected(peer) => {
                self.peers.entry(peer).or_default().connected = true;
            }
            Command::PeerDisconnected(peer) => {
                if let Some(state) = self.peers.remove(&peer)
                    && let Some(q) = state.queue
                {
                    q.lock().closed = true;
                    q.notify.notify_one();
                }
                for s in self.sessions.values() {
                    let _ = s.send(SessionEvent::PeerGone(peer));
                }
            }
            Command::Misbehaved(peer, reason) => {
                tracing::warn!(%peer, %reason, "bitswap: peer sent a bad message");
                let state = self.peers.entry(peer).or_default();
                state.strikes += 1;
                if state.strikes >= MAX_STRIKES {
                    tracing::warn!(%peer, "bitswap: disconnecting peer after repeated bad messages");
                    self.swarm.disconnect_detached(peer);
                }
            }
            Command::OpenSession { id, events } => {
                self.sessions.insert(id, events);
            }
            Command::CloseSession(id) => {
                self.sessions.remove(&id);
                self.storing.retain(|_, ids| {
                    ids.retain(|s| *s != id);
                    !ids.is_empty()
                });
                self.interest.retain(|_, (_, ids)| {
                    ids.retain(|s| *s != id);
                    !ids.is_empty()
                });
            }
            Command::Want { session, peer, entries } => {
                for e in &entries {
                    let slot = self.interest.entry(*e.cid.hash()).or_insert_with(|| (e.cid, Vec::new()));
                    if !slot.1.contains(&session) {
                        slot.1.push(session);
                    }
                }
                let q = self.queue(peer);
                q.lock().wants.extend(entries);
                q.notify.notify_one();
            }
            Command::Cancel { peer, cids } => {
                let q = self.queue(peer);
                q.lock().wants.extend(cids.into_iter().map(Entry::cancel));
                q.notify.notify_one();
            }
            Command::Served { peer, cids, bytes } => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.sent += bytes;
                    for cid in &cids {
                        state.wants.remove(cid);
                    }
                }
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.peers.iter().filter(|(_, s)| s.connected).map(|(p, _)| *p).collect());
            }
            Command::Wantlist { peer, reply } => {
                let list = match peer {
                    Some(p) => self.peers.get(&p).map(|s| s.wants.iter().copied().collect()).unwrap_or_default(),
                    None => self.interest.values().map(|(cid, _)| *cid).collect(),
                };
                let _ = reply.send(list);
            }
            Command::Ledger { peer, reply } => {
                let stat = self.peers.get(&peer).map(|s| LedgerStat {
                    peer: peer.to_string(),
                    sent: s.sent,
                    recv: s.recv,
                    exchanged: 0,
                });
                let _ = reply.send(stat);
            }
        }
    }

    fn on_message(&mut self, peer: PeerId, msg: Message) {
        self.counters.messages_received.fetch_add(1, Ordering::Relaxed);
        // Blocks: store only what a session asked for.
        for (cid, data) in msg.blocks {
            let len = data.len() as u64;
            self.counters.blocks_received.fetch_add(1, Ordering::Relaxed);
            self.counters.data_received.fetch_add(len, Ordering::Relaxed);
            self.peers.entry(peer).or_default().recv += len;
            // Sessions hear of a block as soon as it is verified (decoding hashed it), so the next wants go
            // out while it is written; they finish only once every block is stored.
            if let Some((_, sessions)) = self.interest.remove(cid.hash()) {
                for id in &sessions {
                    if let Some(s) = self.sessions.get(id) {
                        let _ = s.send(SessionEvent::Block { cid, from: peer, data: data.clone() });
                    }
                }
                self.storing.entry(*cid.hash()).or_default().extend(sessions);
                let _ = self.store_tx.send((cid, data));
            } else {
                self.counters.dup_blks_received.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (cid, presence) in msg.presences {
            let Some((_, sessions)) = self.interest.get(cid.hash()) else { continue };
            for id in sessions {
                if let Some(s) = self.sessions.get(id) {
                    let event = match presence {
                        Presence::Have => SessionEvent::Have { cid, from: peer },
                        Presence::DontHave => SessionEvent::DontHave { cid, from: peer },
                    };
                    let _ = s.send(event);
                }
            }
        }
        if msg.wantlist.is_empty() && !msg.full {
            return;
        }
        // Wants: update the peer's wantlist and queue what we owe it.
        let q = self.queue(peer);
        let state = self.peers.entry(peer).or_default();
        let mut inner = q.lock();
        if msg.full {
            state.wants.clear();
            inner.serve.clear();
        }
        for entry in msg.wantlist {
            if entry.cancel {
                state.wants.remove(&entry.cid);
                inner.serve.retain(|e| e.cid != entry.cid);
                continue;
            }
            if state.wants.len() >= MAX_PEER_WANTS || inner.serve.len() >= MAX_PEER_QUEUE {
                continue;
            }
            state.wants.insert(entry.cid);
            inner.serve.push_back(entry);
        }
        drop(inner);
        q.notify.notify_one();
    }

    /// The peer's outgoing queue, starting its writer on first use.
    fn queue(&mut self, peer: PeerId) -> Arc<PeerQueue> {
        let state = self.peers.entry(peer).or_default();
        if let Some(q) = &state.queue {
            return q.clone();
        }
        let q = Arc::new(PeerQueue::default());
        state.queue = Some(q.clone());
        let writer = PeerWriter {
            peer,
            queue: q.clone(),
            node: self.node.clone(),
            control: self.control.clone(),
            counters: self.counters.clone(),
            engine: self.tx.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(writer.run());
        q
    }
}

/// Sends one peer what it asked for and what our sessions want from it.
struct PeerWriter {
    peer: PeerId,
    queue: Arc<PeerQueue>,
    node: Arc<Node>,
    control: libp2p_stream::Control,
    counters: Arc<Counters>,
    engine: mpsc::Sender<Command>,
    shutdown: CancellationToken,
}

/// What one outgoing message answers, read from the store.
struct Answer {
    /// The blocks, encoded straight from the store's buffers as a message of `version` carries them; they
    /// are sent after the rest of the message (protobuf fields may come in any order).
    blocks: Vec<u8>,
    version: Version,
    /// How many blocks `blocks` holds, and their bytes.
    count: u64,
    bytes: u64,
    presences: Vec<(Cid, Presence)>,
    /// The requests for the blocks in `blocks`.
    served: Vec<Entry>,
}

impl Answer {
    fn empty(version: Version) -> Self {
        Self { blocks: Vec::new(), version, count: 0, bytes: 0, presences: Vec::new(), served: Vec::new() }
    }
}

/// Whether blocks encoded for one version can go on a stream of another: 1.0.0 frames them differently.
fn same_block_framing(a: Version, b: Version) -> bool {
    (a == Version::V100) == (b == Version::V100)
}

impl PeerWriter {
    async fn run(mut self) {
        let mut stream: Option<(Stream, Version, Instant)> = None;
        // The next answers are read from the store while the current message is being written.
        let mut reading: VecDeque<tokio::task::JoinHandle<Answer>> = VecDeque::new();
        loop {
            let (wants, has_serve, closed) = {
                let mut inner = self.queue.lock();
                (std::mem::take(&mut inner.wants), !inner.serve.is_empty(), inner.closed)
            };
            if closed {
                return;
            }
            if wants.is_empty() && !has_serve && reading.is_empty() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = self.queue.notify.notified() => continue,
                }
            }
            // Blocks are encoded for the version of the stream in use (1.2.0 until one is open).
            let version = stream.as_ref().map_or(Version::V120, |(_, v, _)| *v);
            let answer = match reading.pop_front() {
                Some(read) => read.await.ok(),
                None if has_serve => self.read_answer(version).await.ok(),
                None => None,
            };
            while reading.len() < READ_AHEAD && !self.queue.lock().serve.is_empty() {
                reading.push_back(self.read_answer(version));
            }
            let mut msg = Message { wantlist: wants, ..Default::default() };
            let mut answer = answer.unwrap_or_else(|| Answer::empty(version));
            msg.presences = std::mem::take(&mut answer.presences);
            if msg.is_empty() && answer.count == 0 {
                continue;
            }
            match self.write(&mut stream, &msg, &answer).await {
                Ok(true) => {
                    self.counters.blocks_sent.fetch_add(answer.count, Ordering::Relaxed);
                    self.counters.data_sent.fetch_add(answer.bytes, Ordering::Relaxed);
                    if !answer.served.is_empty() {
                        let cids = answer.served.iter().map(|e| e.cid).collect();
                        let bytes = answer.bytes;
                        let _ = self.engine.send(Command::Served { peer: self.peer, cids, bytes }).await;
                    }
                }
                Ok(false) => {
                    // The stream speaks another framing than the blocks were encoded for: read them again.
                    let mut queue = self.queue.lock();
                    for entry in answer.served.into_iter().rev() {
                        queue.serve.push_front(entry);
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "bitswap: sending failed; dropping this message");
                    stream = None;
                    // A peer we cannot reach: wait for new work rather than spin.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.queue.notify.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Pops queued requests and reads their blocks until a message is full, on a blocking thread. Each block
    /// is encoded for `version` straight from the store's buffer: one copy on its way out.
    fn read_answer(&self, version: Version) -> tokio::task::JoinHandle<Answer> {
        /// What became of one block request.
        enum Read {
            Added(usize),
            TooLarge,
            MessageFull,
        }
        let queue = self.queue.clone();
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let store = node.repo().store();
            let mut answer = Answer::empty(version);
            answer.blocks.reserve(MESSAGE_BLOCK_BUDGET + 1024);
            let mut budget = MESSAGE_BLOCK_BUDGET;
            loop {
                let Some(entry) = queue.lock().serve.pop_front() else { break };
                match entry.want_type {
                    WantType::Have => match store.has(&entry.cid) {
                        Ok(true) => answer.presences.push((entry.cid, Presence::Have)),
                        _ if entry.send_dont_have => answer.presences.push((entry.cid, Presence::DontHave)),
                        _ => {}
                    },
                    WantType::Block => {
                        let (blocks, first) = (&mut answer.blocks, answer.count == 0);
                        let read = store.with_local(&entry.cid, |data| {
                            if data.len() > message::MAX_BLOCK {
                                Read::TooLarge
                            } else if data.len() > budget && !first {
                                Read::MessageFull
                            } else {
                                message::encode_block(version, &entry.cid, data, blocks);
                                Read::Added(data.len())
                            }
                        });
                        match read {
                            Ok(Some(Read::Added(len))) => {
                                budget = budget.saturating_sub(len);
                                answer.count += 1;
                                answer.bytes += len as u64;
                                answer.served.push(entry);
                            }
                            Ok(Some(Read::MessageFull)) => {
                                queue.lock().serve.push_front(entry);
                                break;
                            }
                            Ok(None | Some(Read::TooLarge)) | Err(_) if entry.send_dont_have => {
                                answer.presences.push((entry.cid, Presence::DontHave));
                            }
                            Ok(None | Some(Read::TooLarge)) | Err(_) => {}
                        }
                    }
                }
                if answer.presences.len() > 4096 || budget == 0 {
                    break;
                }
            }
            answer
        })
    }

    /// Writes one message. A stream we reuse may have been closed by the peer in the meantime (Helia resets
    /// a Bitswap stream after 10 s idle), so a failure on a reused stream is retried once on a fresh one.
    /// `Ok(false)`: sent without the answer's blocks, which were encoded for another framing.
    async fn write(
        &mut self,
        stream: &mut Option<(Stream, Version, Instant)>,
        msg: &Message,
        answer: &Answer,
    ) -> std::io::Result<bool> {
        if stream.as_ref().is_some_and(|(_, _, last)| last.elapsed() > STREAM_IDLE) {
            *stream = None;
        }
        let reused = stream.is_some();
        match self.write_once(stream, msg, answer).await {
            Err(e) if reused => {
                tracing::debug!(peer = %self.peer, error = %e, "bitswap: reused stream failed; opening a new one");
                *stream = None;
                self.write_once(stream, msg, answer).await
            }
            other => other,
        }
    }

    async fn write_once(
        &mut self,
        stream: &mut Option<(Stream, Version, Instant)>,
        msg: &Message,
        answer: &Answer,
    ) -> std::io::Result<bool> {
        if stream.is_none() {
            let (s, v) = self.open().await?;
            *stream = Some((s, v, Instant::now()));
        }
        let Some((s, version, last)) = stream.as_mut() else { return Err(std::io::Error::other("no stream")) };
        let with_blocks = same_block_framing(answer.version, *version);
        if !with_blocks && msg.is_empty() {
            return Ok(false);
        }
        let head = msg.encode(*version);
        let parts: &[&[u8]] = if with_blocks { &[&head, &answer.blocks] } else { &[&head] };
        let result = match tokio::time::timeout(WRITE_TIMEOUT, wire::write_message(s, parts)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peer is not reading")),
        };
        *last = Instant::now();
        if result.is_err() {
            *stream = None;
        }
        result.map(|()| with_blocks)
    }

    /// Opens a stream at the newest version the peer speaks.
    async fn open(&mut self) -> std::io::Result<(Stream, Version)> {
        let mut last = None;
        for protocol in [PROTOCOL_120, PROTOCOL_110, PROTOCOL_100] {
            let open =
                tokio::time::timeout(Duration::from_secs(20), self.control.open_stream(self.peer, protocol.clone()));
            match open.await {
                Ok(Ok(stream)) => return Ok((stream, version_of(&protocol))),
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                    last = Some(std::io::Error::other("peer speaks no bitswap version we know"));
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "opening a stream timed out")),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no protocol")))
    }
}
