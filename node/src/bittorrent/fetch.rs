//! The import's downloader: our own peer wire client for the bulk of a download.
//!
//! librqbit still finds the metadata of a magnet and seeds; peers come from the torrent's trackers (through
//! librqbit's tracker client), from the engine's DHT node, from PEX, and from whoever the caller met
//! resolving a magnet. The transfer itself is ours because it is the hot path: librqbit writes every 16 KiB block
//! through its storage trait, reads each piece back to hash it, and keeps per-block state behind locks,
//! which on two cores made its download alone slower than libtorrent's (docs/performance.md, issue 6). Here
//! a block is copied once, from the socket's buffer into its piece, hashed there while it is in the cache,
//! and the piece is handed to the sink whole.
//!
//! Each peer gets a task on the engine's thread that keeps up to `REQUEST_WINDOW` blocks requested. Pieces
//! are claimed whole, in order (so the assembler's partial leaves resolve soon); once none is left unclaimed
//! a peer with nothing to do may also fetch a piece another peer has under way (end game), and the first
//! copy that passes its hash wins. A piece that fails its hash is fetched again from anyone; a peer that
//! sends `MAX_BAD_PIECES` of them is dropped and not dialled again. Only outgoing connections are made:
//! the engine's listener belongs to librqbit, and peers that call in are found by announcing again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use btfs_chunker::torrent::{Metainfo, parse_torrent};
use futures::StreamExt;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::engine::{Download, EngineError, PieceSink, Progress};
use super::wire::{self, BLOCK_LEN, HANDSHAKE_LEN, Message, WireError};

/// Blocks a peer may have requested and not yet delivered (4 MiB; libtorrent serves up to 500 by default).
const REQUEST_WINDOW: usize = 256;
/// Peers connected at once.
const MAX_PEERS: usize = 32;
/// Piece bytes held in buffers by all peers together; past it, a piece is claimed only when none is buffered
/// (so a piece larger than the budget can still be fetched).
const MAX_BUFFERED: u64 = 256 * 1024 * 1024;
/// Bad pieces a peer may send before it is dropped for good.
const MAX_BAD_PIECES: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer with requests outstanding that sends no block for this long is dropped (keep-alives and other
/// messages do not count: a peer must not hold pieces it never serves).
const PEER_SILENCE: Duration = Duration::from_secs(20);
/// A peer that keeps us choked this long hands its pieces back, so others can fetch them.
const CHOKED_FOR: Duration = Duration::from_secs(10);
/// How often a peer's conditions are looked at while its socket is quiet, and keep-alives are sent.
const WAKE_EVERY: Duration = Duration::from_secs(5);
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(60);
/// A peer whose connection ended is dialled again after this long (doubling with each failure in a row).
const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// With nothing arriving for this long (or no peer at all for `ALONE_AFTER`), trackers and the DHT are
/// asked again: peers that called in to the engine's listener are only found that way.
const ANNOUNCE_AGAIN_AFTER: Duration = Duration::from_secs(10);
const ALONE_AFTER: Duration = Duration::from_secs(3);
/// Peer addresses kept (from trackers, the DHT and PEX); past it a new one replaces one that failed, or is
/// ignored, so no peer can fill memory.
const MAX_KNOWN: usize = 2000;
/// Receive buffer per peer: a block and its header fit many times over.
const READ_BUFFER: usize = 256 * 1024;

/// Where the peers of a download come from.
pub(super) struct Discovery {
    /// Runs the peer tasks and the announcers.
    pub runtime: tokio::runtime::Handle,
    /// The DHT node of the engine, if it runs one.
    pub dht: Option<librqbit::dht::Dht>,
    /// The address announced to trackers and the DHT, and never dialled (it is the engine itself).
    pub listen: SocketAddr,
    pub reqwest: reqwest::Client,
}

/// Fetches the pieces of `job`'s torrent that its sink does not hold.
pub(super) async fn download(job: Download<'_>, discovery: &Discovery) -> Result<(), EngineError> {
    let meta = parse_torrent(&job.torrent).map_err(|e| EngineError::Add(e.to_string()))?;
    let info_hash = meta.info.info_hash_v1.ok_or_else(|| EngineError::Add("a v2-only torrent".into()))?;
    let plan = Plan::new(&meta, job.only.as_deref());
    let sink = job.sink.clone();
    // What an earlier run left: every wanted piece is read back through the sink and hashed.
    let checked = {
        let (plan, sink) = (plan.clone(), sink.clone());
        tokio::task::spawn_blocking(move || plan.held(&*sink))
            .await
            .map_err(|e| EngineError::Failed(format!("the check of held pieces stopped: {e}")))?
    };
    sink.initialized();
    let (found_tx, mut found) = mpsc::channel::<SocketAddr>(256);
    let pex = (!meta.info.private).then(|| found_tx.clone());
    let shared = Arc::new(Shared::new(plan, &checked, sink, info_hash, pex));
    let mut peer_id = *b"-BF0100-000000000000";
    peer_id[8..].copy_from_slice(&rand::random::<[u8; 12]>());
    let mut dialer = Dialer {
        shared: shared.clone(),
        peer_id,
        known: HashMap::new(),
        tasks: Vec::new(),
        ended: mpsc::unbounded_channel(),
        own: discovery.listen,
    };
    for addr in &job.peers {
        dialer.learn(*addr);
    }
    let mut announcer = Some(announce(&meta, info_hash, &shared, discovery, found_tx.clone()));
    let started = Instant::now();
    let (mut last_done, mut last_change, mut last_announce) = (shared.done(), Instant::now(), Instant::now());
    let mut alone_since: Option<Instant> = None;
    let (mut speed_at, mut speed_done, mut speed) = (Instant::now(), shared.done(), 0.0);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        if shared.handed_on() {
            (job.progress)(Progress { done: shared.done(), total: shared.total(), peers: shared.live(), speed });
            return Ok(());
        }
        dialer.dial(&discovery.runtime);
        tokio::select! {
            Some(addr) = found.recv() => dialer.learn(addr),
            Some((addr, outcome)) = dialer.ended.1.recv() => dialer.ended(addr, outcome),
            _ = tick.tick() => {
                if let Some(e) = shared.sink.failure() {
                    return Err(EngineError::Failed(e));
                }
                let done = shared.done();
                if speed_at.elapsed() >= Duration::from_secs(1) {
                    speed = (done - speed_done) as f64 / speed_at.elapsed().as_secs_f64();
                    (speed_at, speed_done) = (Instant::now(), done);
                }
                (job.progress)(Progress { done, total: shared.total(), peers: shared.live(), speed });
                if done != last_done {
                    (last_done, last_change) = (done, Instant::now());
                } else if last_change.elapsed() >= job.stall_timeout {
                    return Err(EngineError::Timeout {
                        done,
                        total: shared.total(),
                        after: started.elapsed(),
                        peers: format!("{}; {}", dialer.account(), shared.sink.state()),
                    });
                }
                if dialer.running() > 0 {
                    alone_since = None;
                } else if alone_since.is_none() {
                    alone_since = Some(Instant::now());
                }
                let alone = alone_since.is_some_and(|t| t.elapsed() >= ALONE_AFTER);
                let quiet = last_change.elapsed() >= ANNOUNCE_AGAIN_AFTER;
                if (quiet || alone) && last_announce.elapsed() >= ANNOUNCE_AGAIN_AFTER {
                    tracing::info!(done, "no progress: announcing again and redialling known peers");
                    last_announce = Instant::now();
                    drop(announcer.take());
                    announcer = Some(announce(&meta, info_hash, &shared, discovery, found_tx.clone()));
                    dialer.forgive();
                }
            }
        }
    }
}

/// The pieces to fetch and how to check them.
#[derive(Clone)]
struct Plan {
    piece_length: u64,
    total: u64,
    hashes: Arc<Vec<[u8; 20]>>,
    /// (start in the piece stream, length) of every file, by index.
    files: Arc<Vec<(u64, u64)>>,
    wanted: Arc<Vec<bool>>,
}

impl Plan {
    fn new(meta: &Metainfo, only: Option<&[usize]>) -> Self {
        let info = &meta.info;
        let piece_length = info.piece_length.get();
        let mut wanted = vec![false; info.pieces.len()];
        for (i, f) in info.files.iter().enumerate() {
            if f.length == 0 || f.padding || only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let (first, last) = (f.offset / piece_length, (f.offset + f.length - 1) / piece_length);
            for w in wanted.iter_mut().take(last as usize + 1).skip(first as usize) {
                *w = true;
            }
        }
        Self {
            piece_length,
            total: info.total_length,
            hashes: Arc::new(info.pieces.clone()),
            files: Arc::new(info.files.iter().map(|f| (f.offset, f.length)).collect()),
            wanted: Arc::new(wanted),
        }
    }

    fn piece_len(&self, piece: usize) -> u64 {
        self.piece_length.min(self.total - piece as u64 * self.piece_length)
    }

    /// Which wanted pieces the sink already holds, read back and hashed.
    fn held(&self, sink: &dyn PieceSink) -> Vec<bool> {
        let mut held = vec![false; self.hashes.len()];
        // One buffer, zeroed once: a read that succeeds fills all of a piece (the files, padding included,
        // cover the piece stream), and a fresh import's reads fail at once, so zeroing per piece was most of
        // the check's cost.
        let mut buf = vec![0; usize::try_from(self.piece_length).unwrap_or(usize::MAX).min(self.total as usize)];
        for (piece, h) in held.iter_mut().enumerate() {
            if !self.wanted[piece] {
                continue;
            }
            let piece_bytes = &mut buf[..self.piece_len(piece) as usize];
            *h = self.read(sink, piece, piece_bytes).is_ok() && Sha1::digest(&*piece_bytes)[..] == self.hashes[piece];
        }
        held
    }

    fn read(&self, sink: &dyn PieceSink, piece: usize, buf: &mut [u8]) -> Result<(), String> {
        let start = piece as u64 * self.piece_length;
        let end = start + buf.len() as u64;
        let first = self.files.partition_point(|(s, l)| s + l <= start);
        for (f, &(s, l)) in self.files.iter().enumerate().skip(first) {
            if s >= end {
                break;
            }
            if l == 0 {
                continue;
            }
            let (x, y) = (start.max(s), end.min(s + l));
            sink.read_at(f, x - s, &mut buf[(x - start) as usize..(y - start) as usize])?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not wanted, or held from the start.
    Skip,
    Missing,
    /// Being fetched by this many peers.
    Taken(u8),
    Done,
}

/// Which pieces are missing, taken and done.
struct Picker {
    slots: Vec<Slot>,
    /// Pieces still to be done.
    left: usize,
    /// No piece below this is `Missing`.
    cursor: usize,
    /// Piece bytes in peers' buffers.
    buffered: u64,
}

impl Picker {
    /// A piece for a peer that has the pieces `has` says, none of `mine`: a missing one first, else (end
    /// game) one that only one other peer is fetching.
    fn claim(&mut self, has: impl Fn(usize) -> bool, mine: &[u32]) -> Option<u32> {
        while self.cursor < self.slots.len() && self.slots[self.cursor] != Slot::Missing {
            self.cursor += 1;
        }
        let missing = (self.cursor..self.slots.len()).find(|&i| self.slots[i] == Slot::Missing && has(i));
        let pick = missing.or_else(|| {
            (0..self.slots.len()).find(|&i| self.slots[i] == Slot::Taken(1) && has(i) && !mine.contains(&(i as u32)))
        })?;
        self.slots[pick] = match self.slots[pick] {
            Slot::Taken(n) => Slot::Taken(n + 1),
            _ => Slot::Taken(1),
        };
        Some(pick as u32)
    }

    fn release(&mut self, piece: u32) {
        let i = piece as usize;
        match self.slots[i] {
            Slot::Taken(n) if n > 1 => self.slots[i] = Slot::Taken(n - 1),
            Slot::Taken(_) => {
                self.slots[i] = Slot::Missing;
                self.cursor = self.cursor.min(i);
            }
            _ => {}
        }
    }

    /// Marks a verified piece done; false if another peer's copy already was.
    fn complete(&mut self, piece: u32) -> bool {
        let slot = &mut self.slots[piece as usize];
        if matches!(slot, Slot::Done | Slot::Skip) {
            return false;
        }
        *slot = Slot::Done;
        self.left -= 1;
        true
    }
}

/// What the peer tasks and the dialler share.
struct Shared {
    plan: Plan,
    sink: Arc<dyn PieceSink>,
    picker: Mutex<Picker>,
    info_hash: [u8; 20],
    /// Bytes of wanted pieces held at the start, and the total of wanted pieces.
    held_bytes: u64,
    wanted_bytes: u64,
    /// Bytes of pieces fetched and verified.
    fetched: AtomicU64,
    /// Pieces to fetch, and how many the sink has taken: the download is over when they are equal (the
    /// picker counts a piece done just before it is handed on, which the sink must see first).
    to_fetch: usize,
    handed: AtomicUsize,
    /// Peers past the handshake.
    live: AtomicUsize,
    /// Where peers learnt from peers (PEX) go; `None` for a private torrent, whose peers come from its
    /// trackers only (BEP 27).
    pex: Option<mpsc::Sender<SocketAddr>>,
}

impl Shared {
    fn new(
        plan: Plan,
        held: &[bool],
        sink: Arc<dyn PieceSink>,
        info_hash: [u8; 20],
        pex: Option<mpsc::Sender<SocketAddr>>,
    ) -> Self {
        let mut slots = Vec::with_capacity(held.len());
        let (mut held_bytes, mut wanted_bytes) = (0, 0);
        for (i, h) in held.iter().enumerate() {
            let len = plan.piece_len(i);
            slots.push(if !plan.wanted[i] {
                Slot::Skip
            } else if *h {
                held_bytes += len;
                wanted_bytes += len;
                Slot::Skip
            } else {
                wanted_bytes += len;
                Slot::Missing
            });
        }
        let left = slots.iter().filter(|s| **s == Slot::Missing).count();
        let picker = Mutex::new(Picker { slots, left, cursor: 0, buffered: 0 });
        let to_fetch = left;
        Self {
            plan,
            sink,
            picker,
            info_hash,
            held_bytes,
            wanted_bytes,
            fetched: AtomicU64::new(0),
            to_fetch,
            handed: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            pex,
        }
    }

    fn picker(&self) -> MutexGuard<'_, Picker> {
        self.picker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self) -> u64 {
        self.held_bytes + self.fetched.load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        self.wanted_bytes
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// No piece is left to fetch (some may still be on their way to the sink).
    fn complete(&self) -> bool {
        self.picker().left == 0
    }

    /// Every piece is fetched and in the sink's hands.
    fn handed_on(&self) -> bool {
        self.handed.load(Ordering::Acquire) == self.to_fetch
    }
}

/// Starts asking the torrent's trackers and the DHT for peers; they stop when the handle is dropped.
fn announce(
    meta: &Metainfo,
    info_hash: [u8; 20],
    shared: &Arc<Shared>,
    discovery: &Discovery,
    found: mpsc::Sender<SocketAddr>,
) -> AbortOnDropHandle<()> {
    let trackers: HashSet<url::Url> = meta.announce.iter().flatten().filter_map(|t| url::Url::parse(t).ok()).collect();
    let dht = discovery.dht.clone().filter(|_| !meta.info.private);
    let (port, reqwest) = (discovery.listen.port(), discovery.reqwest.clone());
    let stats = Box::new(Stats(shared.clone()));
    AbortOnDropHandle::new(discovery.runtime.spawn(async move {
        let id = librqbit::dht::Id20::new(info_hash);
        let cancel = tokio_util::sync::CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        let mut sources: Vec<futures::stream::BoxStream<'static, SocketAddr>> = Vec::new();
        if !trackers.is_empty() {
            match librqbit_tracker_comms::UdpTrackerClient::new(cancel.clone(), None).await {
                Ok(udp) => {
                    let peer_id = librqbit::dht::Id20::new(rand::random());
                    if let Some(s) = librqbit_tracker_comms::TrackerComms::start(
                        id, peer_id, trackers, stats, None, port, reqwest, udp,
                    ) {
                        sources.push(s);
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot start the UDP tracker client"),
            }
        }
        if let Some(dht) = dht {
            sources.push(dht.get_peers(id, Some(port)).boxed());
        }
        let mut all = futures::stream::select_all(sources);
        while let Some(addr) = all.next().await {
            if found.send(addr).await.is_err() {
                break;
            }
        }
    }))
}

/// What trackers are told of the download.
struct Stats(Arc<Shared>);

impl librqbit_tracker_comms::TorrentStatsProvider for Stats {
    fn get(&self) -> librqbit_tracker_comms::TrackerCommsStats {
        librqbit_tracker_comms::TrackerCommsStats {
            uploaded_bytes: 0,
            downloaded_bytes: self.0.fetched.load(Ordering::Relaxed),
            total_bytes: self.0.plan.total,
            torrent_state: librqbit_tracker_comms::TrackerCommsStatsState::Live,
        }
    }
}

/// A peer address and how dialling it went.
struct Known {
    running: bool,
    failures: u32,
    ended: Option<Instant>,
    banned: bool,
    last_error: Option<String>,
}

/// Dials known peers, at most `MAX_PEERS` at once, and redials those whose connection ended.
struct Dialer {
    shared: Arc<Shared>,
    peer_id: [u8; 20],
    known: HashMap<SocketAddr, Known>,
    tasks: Vec<AbortOnDropHandle<()>>,
    ended: (mpsc::UnboundedSender<Ended>, mpsc::UnboundedReceiver<Ended>),
    own: SocketAddr,
}

impl Dialer {
    fn learn(&mut self, addr: SocketAddr) {
        if addr == self.own || addr.port() == 0 || self.known.contains_key(&addr) {
            return;
        }
        if self.known.len() >= MAX_KNOWN {
            // Full: a new address takes the place of one that failed (never a banned one, which would be
            // dialled again once learnt anew), if there is one.
            let dud = self.known.iter().find(|(_, k)| !k.running && !k.banned && k.failures > 0).map(|(a, _)| *a);
            match dud {
                Some(dud) => self.known.remove(&dud),
                None => return,
            };
        }
        self.known.entry(addr).or_insert(Known {
            running: false,
            failures: 0,
            ended: None,
            banned: false,
            last_error: None,
        });
    }

    fn running(&self) -> usize {
        self.known.values().filter(|k| k.running).count()
    }

    fn dial(&mut self, runtime: &tokio::runtime::Handle) {
        let mut running = self.running();
        for (addr, k) in &mut self.known {
            if running >= MAX_PEERS {
                break;
            }
            let due = k.ended.is_none_or(|t| t.elapsed() >= REDIAL_AFTER * 2u32.pow(k.failures.min(5)));
            if k.running || k.banned || !due {
                continue;
            }
            k.running = true;
            running += 1;
            let (shared, addr, peer_id, ended) = (self.shared.clone(), *addr, self.peer_id, self.ended.0.clone());
            self.tasks.push(AbortOnDropHandle::new(runtime.spawn(async move {
                let outcome = Peer::run(shared, addr, peer_id).await;
                let _ = ended.send((addr, outcome));
            })));
        }
        self.tasks.retain(|t| !t.is_finished());
    }

    fn ended(&mut self, addr: SocketAddr, outcome: PeerEnd) {
        let Some(k) = self.known.get_mut(&addr) else { return };
        k.running = false;
        k.ended = Some(Instant::now());
        if outcome.useful {
            k.failures = 0;
        } else {
            k.failures += 1;
        }
        if let Err(e) = outcome.result {
            tracing::debug!(%addr, error = %e, "peer connection ended");
            k.banned = matches!(e, PeerError::BadPieces(_));
            k.last_error = Some(e.to_string());
        }
    }

    /// Peers that failed may be dialled again at once (after announcing again).
    fn forgive(&mut self) {
        for k in self.known.values_mut().filter(|k| !k.banned) {
            k.failures = 0;
            k.ended = None;
        }
    }

    /// A line about the peers for a stall's error message.
    fn account(&self) -> String {
        let banned = self.known.values().filter(|k| k.banned).count();
        let last = self.known.iter().filter_map(|(a, k)| Some((a, k.last_error.as_ref()?))).next();
        format!(
            "peers: {} known, {} connected, {} dropped for bad pieces{}",
            self.known.len(),
            self.running(),
            banned,
            last.map_or(String::new(), |(a, e)| format!("; {a}: {e}"))
        )
    }
}

/// Why a peer's connection ended.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("sent nothing for {0:?} with blocks requested")]
    Silent(Duration),
    #[error("sent {0} pieces that failed their hash")]
    BadPieces(u32),
    #[error("sent a block that was not requested (piece {index}, offset {begin}, {len} bytes)")]
    Unrequested { index: u32, begin: u32, len: usize },
    #[error("the connection was closed")]
    Closed,
    #[error("the import stopped: {0}")]
    Sink(String),
}

/// A peer task's report when it ends.
type Ended = (SocketAddr, PeerEnd);

struct PeerEnd {
    /// Whether the peer delivered a verified piece.
    useful: bool,
    result: Result<(), PeerError>,
}

/// A piece a peer is fetching.
struct Active {
    index: u32,
    buf: Vec<u8>,
    /// The next offset to request.
    next: u32,
    /// Which blocks have arrived.
    got: Vec<bool>,
    missing: usize,
    /// SHA-1 of the blocks before `hashed`: each block is hashed as soon as those before it are in, while it
    /// is still in the cache (hashing whole pieces at the end made SHA-1 half as fast).
    sha: Sha1,
    hashed: usize,
}

impl Active {
    /// The offset of the first block not received.
    fn first_missing(&self) -> u32 {
        self.missing_from(0)
    }

    /// The offset of the first block that starts at or after `from` and has not been received (the piece's
    /// length if none).
    fn missing_from(&self, from: u32) -> u32 {
        let first = from.div_ceil(BLOCK_LEN) as usize;
        let found = (first..self.got.len()).find(|&b| !self.got[b]);
        found.map_or(self.buf.len() as u32, |b| b as u32 * BLOCK_LEN)
    }
}

/// One connection.
struct Peer {
    shared: Arc<Shared>,
    stream: TcpStream,
    has: Vec<u8>,
    choked: bool,
    /// When the peer last choked us.
    choked_at: Instant,
    active: Vec<Active>,
    outstanding: usize,
    /// Blocks this peer may have outstanding: ours, or less if its extension handshake says so (`reqq`).
    window: usize,
    /// When the last block arrived, or requests were first made after none were outstanding.
    last_block: Instant,
    last_sent: Instant,
    bad: u32,
    useful: bool,
    out: Vec<u8>,
}

impl Peer {
    async fn run(shared: Arc<Shared>, addr: SocketAddr, peer_id: [u8; 20]) -> PeerEnd {
        let mut useful = false;
        let result = async {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| PeerError::Connect(format!("no answer in {CONNECT_TIMEOUT:?}")))?
                .map_err(|e| PeerError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let mut peer = Peer {
                has: vec![0; shared.plan.hashes.len().div_ceil(8)],
                shared,
                stream,
                choked: true,
                choked_at: Instant::now(),
                active: Vec::new(),
                outstanding: 0,
                window: REQUEST_WINDOW,
                last_block: Instant::now(),
                last_sent: Instant::now(),
                bad: 0,
                useful: false,
                out: Vec::new(),
            };
            let result = peer.exchange(peer_id).await;
            useful = peer.useful;
            peer.release();
            result
        }
        .await;
        PeerEnd { useful, result }
    }

    async fn exchange(&mut self, peer_id: [u8; 20]) -> Result<(), PeerError> {
        let hello = wire::handshake(&self.shared.info_hash, &peer_id);
        let mut theirs = [0u8; HANDSHAKE_LEN];
        let shake = async {
            self.stream.write_all(&hello).await?;
            self.stream.read_exact(&mut theirs).await?;
            Ok::<_, std::io::Error>(())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, shake)
            .await
            .map_err(|_| PeerError::Connect(format!("no handshake in {CONNECT_TIMEOUT:?}")))??;
        wire::check_handshake(&theirs, &self.shared.info_hash)?;
        if self.shared.pex.is_some() && wire::speaks_extensions(&theirs) {
            wire::put_extension_handshake(&mut self.out);
        }
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        let result = self.messages().await;
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn messages(&mut self) -> Result<(), PeerError> {
        wire::put_interested(&mut self.out);
        self.flush().await?;
        let max = wire::max_message_len(self.shared.plan.hashes.len());
        let mut buf = vec![0u8; READ_BUFFER.max(max + 4)];
        let (mut lo, mut hi) = (0usize, 0usize);
        loop {
            while let Some((message, used)) = wire::parse(&buf[lo..hi], max)? {
                self.handle(message)?;
                lo += used;
            }
            if self.shared.complete() {
                return Ok(());
            }
            self.request()?;
            self.flush().await?;
            // Keep the unparsed tail at the front, so the next read has room for a whole message.
            if lo == hi {
                (lo, hi) = (0, 0);
            } else if buf.len() - hi < max + 4 {
                buf.copy_within(lo..hi, 0);
                (lo, hi) = (0, hi - lo);
            }
            match tokio::time::timeout(WAKE_EVERY, self.stream.read(&mut buf[hi..])).await {
                Ok(Ok(0)) => return Err(PeerError::Closed),
                Ok(Ok(n)) => hi += n,
                Ok(Err(e)) => return Err(e.into()),
                // Quiet: the checks below decide.
                Err(_) => {}
            }
            if self.outstanding > 0 && self.last_block.elapsed() >= PEER_SILENCE {
                return Err(PeerError::Silent(PEER_SILENCE));
            }
            if self.choked && !self.active.is_empty() && self.choked_at.elapsed() >= CHOKED_FOR {
                self.release();
            }
            if self.last_sent.elapsed() >= KEEP_ALIVE_EVERY {
                wire::put_keep_alive(&mut self.out);
            }
        }
    }

    fn handle(&mut self, message: Message<'_>) -> Result<(), PeerError> {
        let pieces = self.shared.plan.hashes.len();
        match message {
            Message::Choke => {
                // Requests not yet served are dropped by a peer that chokes (BEP 3). The blocks received stay:
                // a peer may unchoke us again soon (`CHOKED_FOR` decides when its pieces go to others).
                if !self.choked {
                    self.choked = true;
                    self.choked_at = Instant::now();
                }
                self.outstanding = 0;
                for a in &mut self.active {
                    a.next = a.first_missing();
                }
            }
            Message::Unchoke => self.choked = false,
            Message::Extended { id: 0, payload } => {
                // The peer's extension handshake: `reqq` is how many requests it queues.
                if let Some(reqq) = wire::extension_reqq(payload) {
                    self.window = reqq.clamp(1, REQUEST_WINDOW);
                }
            }
            Message::Have(index) => {
                let i = usize::try_from(index).ok().filter(|i| *i < pieces);
                let i = i.ok_or(WireError::NoSuchPiece { index, pieces })?;
                self.has[i / 8] |= 0x80 >> (i % 8);
            }
            Message::Bitfield(bits) => {
                wire::check_bitfield(bits, pieces)?;
                self.has.copy_from_slice(bits);
            }
            Message::Piece { index, begin, data } => self.block(index, begin, data)?,
            Message::Extended { id: wire::OUR_PEX_ID, payload } => {
                if let Some(pex) = &self.shared.pex {
                    for addr in wire::pex_added(payload) {
                        // A full channel drops the peer: the dialler has plenty to do already.
                        let _ = pex.try_send(addr);
                    }
                }
            }
            // We serve nothing on this connection (seeding is the engine's listener's), and announced no
            // extension but PEX.
            Message::KeepAlive
            | Message::Interested
            | Message::NotInterested
            | Message::Request { .. }
            | Message::Cancel { .. }
            | Message::Extended { .. }
            | Message::Other(_) => {}
        }
        Ok(())
    }

    /// A block arrived: into its piece, which is checked and handed on once whole.
    fn block(&mut self, index: u32, begin: u32, data: &[u8]) -> Result<(), PeerError> {
        let unrequested = PeerError::Unrequested { index, begin, len: data.len() };
        let Some(at) = self.active.iter().position(|a| a.index == index) else {
            // A piece handed back at a choke, or finished by another peer: late, not wrong.
            return Ok(());
        };
        let a = &mut self.active[at];
        let block = (begin / BLOCK_LEN) as usize;
        let Some(rest) = a.buf.len().checked_sub(begin as usize) else { return Err(unrequested) };
        let expected = rest.min(BLOCK_LEN as usize);
        if !begin.is_multiple_of(BLOCK_LEN) || data.len() != expected {
            return Err(unrequested);
        }
        // Not asked for (yet): an answer to a request from before a choke, say. Dropped.
        if begin >= a.next || a.got[block] {
            return Ok(());
        }
        a.got[block] = true;
        a.missing -= 1;
        self.last_block = Instant::now();
        a.buf[begin as usize..begin as usize + data.len()].copy_from_slice(data);
        self.outstanding -= 1;
        while a.hashed < a.got.len() && a.got[a.hashed] {
            let from = a.hashed * BLOCK_LEN as usize;
            a.sha.update(&a.buf[from..(from + BLOCK_LEN as usize).min(a.buf.len())]);
            a.hashed += 1;
        }
        if a.missing > 0 {
            return Ok(());
        }
        let a = self.active.swap_remove(at);
        let len = a.buf.len() as u64;
        let good = a.sha.finalize()[..] == self.shared.plan.hashes[index as usize];
        let first = {
            let mut picker = self.shared.picker();
            picker.buffered -= len;
            if good {
                picker.complete(index)
            } else {
                picker.release(index);
                false
            }
        };
        if !good {
            self.bad += 1;
            tracing::debug!(piece = index, bad = self.bad, "a piece failed its hash");
            if self.bad >= MAX_BAD_PIECES {
                return Err(PeerError::BadPieces(self.bad));
            }
            return Ok(());
        }
        self.useful = true;
        if first {
            self.shared.fetched.fetch_add(len, Ordering::Relaxed);
            self.shared.sink.piece_complete(index, a.buf).map_err(PeerError::Sink)?;
            self.shared.handed.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    /// Tops up the requests, claiming pieces as needed; drops pieces other peers finished first.
    fn request(&mut self) -> Result<(), PeerError> {
        self.drop_finished();
        if self.choked {
            return Ok(());
        }
        if self.outstanding == 0 {
            self.last_block = Instant::now();
        }
        while self.outstanding < self.window {
            if let Some(a) = self.active.iter_mut().find(|a| (a.next as usize) < a.buf.len()) {
                let length = (a.buf.len() - a.next as usize).min(BLOCK_LEN as usize) as u32;
                wire::put_request(&mut self.out, a.index, a.next, length, false);
                a.next = a.missing_from(a.next + length);
                self.outstanding += 1;
                continue;
            }
            let mine: Vec<u32> = self.active.iter().map(|a| a.index).collect();
            let claimed = {
                let mut picker = self.shared.picker();
                let len = self.shared.plan.piece_length;
                // Within the budget; past it, only when no piece is buffered at all (one piece bigger than
                // the budget must still be fetchable).
                if picker.buffered + len > MAX_BUFFERED && picker.buffered > 0 {
                    None
                } else {
                    let has = &self.has;
                    let piece = picker.claim(|i| wire::has_bit(has, i), &mine);
                    if let Some(p) = piece {
                        picker.buffered += self.shared.plan.piece_len(p as usize);
                    }
                    piece
                }
            };
            let Some(index) = claimed else { break };
            let len = self.shared.plan.piece_len(index as usize) as usize;
            let blocks = len.div_ceil(BLOCK_LEN as usize);
            let got = vec![false; blocks];
            self.active.push(Active {
                index,
                buf: vec![0; len],
                next: 0,
                got,
                missing: blocks,
                sha: Sha1::new(),
                hashed: 0,
            });
        }
        Ok(())
    }

    /// Cancels what is left of pieces another peer's copy completed (end game).
    fn drop_finished(&mut self) {
        let finished: Vec<usize> = {
            let picker = self.shared.picker();
            (0..self.active.len()).filter(|&i| picker.slots[self.active[i].index as usize] == Slot::Done).collect()
        };
        for i in finished.into_iter().rev() {
            let a = self.active.swap_remove(i);
            for (b, got) in a.got.iter().enumerate() {
                let begin = b as u32 * BLOCK_LEN;
                if !got && begin < a.next {
                    let length = (a.buf.len() - begin as usize).min(BLOCK_LEN as usize) as u32;
                    wire::put_request(&mut self.out, a.index, begin, length, true);
                    self.outstanding -= 1;
                }
            }
            self.shared.picker().buffered -= a.buf.len() as u64;
        }
    }

    /// Hands every piece under way back to the picker.
    fn release(&mut self) {
        let mut picker = self.shared.picker();
        for a in self.active.drain(..) {
            picker.buffered -= a.buf.len() as u64;
            picker.release(a.index);
        }
        self.outstanding = 0;
    }

    async fn flush(&mut self) -> Result<(), PeerError> {
        if self.out.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(PEER_SILENCE, self.stream.write_all(&self.out))
            .await
            .map_err(|_| PeerError::Silent(PEER_SILENCE))??;
        self.out.clear();
        self.last_sent = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bittorrent::engine::SeedFiles;
    use btfs_chunker::torrent::{PieceHasher, PieceLength, make_torrent, make_v1_info};
    use tokio::net::TcpListener;

    /// Pieces in memory: a double for unit tests (the interop tests run the real streaming import).
    #[derive(Default)]
    struct MemSink {
        pieces: Mutex<HashMap<u32, Vec<u8>>>,
    }

    impl SeedFiles for MemSink {
        fn read_at(&self, _: usize, _: u64, _: &mut [u8]) -> Result<(), String> {
            Err("nothing is held".into())
        }
    }

    impl PieceSink for MemSink {
        fn piece_complete(&self, piece: u32, data: Vec<u8>) -> Result<(), String> {
            let mut pieces = self.pieces.lock().expect("lock");
            assert!(pieces.insert(piece, data).is_none(), "piece {piece} was handed on twice");
            Ok(())
        }
        fn initialized(&self) {}
        fn failure(&self) -> Option<String> {
            None
        }
        fn state(&self) -> String {
            String::new()
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        Honest,
        /// Serves every block with its bytes inverted.
        Liar,
        /// Answers the first request with a message that claims a gigabyte.
        Flood,
        /// Sends a bitfield one byte too long.
        BadBitfield,
        /// Answers the handshake for another torrent.
        OtherTorrent,
        /// Reads the handshake and never answers.
        Mute,
        /// Serves the first 24 blocks asked for, chokes (dropping the requests it holds), unchokes a moment
        /// later and serves the rest.
        ChokesOnce,
    }

    /// A seeder of `data` on 127.0.0.1 that behaves as told; returns its address, how many blocks it sent,
    /// and how many requests it got for blocks it had already sent on the same connection.
    async fn seeder(
        data: Arc<Vec<u8>>,
        info_hash: [u8; 20],
        pieces: usize,
        how: Behaviour,
    ) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = Arc::new(AtomicU64::new(0));
        let again = Arc::new(AtomicU64::new(0));
        let (counter, repeats) = (sent.clone(), again.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (data, sent, again) = (data.clone(), counter.clone(), repeats.clone());
                tokio::spawn(async move {
                    let mut served = HashSet::new();
                    let mut choked_once = false;
                    let mut hello = [0u8; HANDSHAKE_LEN];
                    s.read_exact(&mut hello).await?;
                    if how == Behaviour::Mute {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let ih = if how == Behaviour::OtherTorrent { [0xee; 20] } else { info_hash };
                    s.write_all(&wire::handshake(&ih, &[b's'; 20])).await?;
                    let mut bits = vec![0xffu8; pieces.div_ceil(8)];
                    if !pieces.is_multiple_of(8) {
                        *bits.last_mut().expect("bits") = 0xff << (8 - pieces % 8);
                    }
                    if how == Behaviour::BadBitfield {
                        bits.push(0);
                    }
                    let mut out = ((bits.len() + 1) as u32).to_be_bytes().to_vec();
                    out.push(5);
                    out.extend_from_slice(&bits);
                    out.extend_from_slice(&[0, 0, 0, 1, 1]);
                    s.write_all(&out).await?;
                    let mut buf = vec![0u8; 1 << 16];
                    let (mut lo, mut hi) = (0, 0);
                    loop {
                        while let Some((m, used)) = wire::parse(&buf[lo..hi], 1 << 16).map_err(std::io::Error::other)? {
                            lo += used;
                            let Message::Request { index, begin, length } = m else { continue };
                            if served.contains(&(index, begin)) {
                                again.fetch_add(1, Ordering::Relaxed);
                            }
                            if how == Behaviour::ChokesOnce && served.len() == 24 && !choked_once {
                                choked_once = true;
                                s.write_all(&[0, 0, 0, 1, 0]).await?;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                // What is still in the socket was asked for before the choke: dropped.
                                let mut drain = vec![0u8; 1 << 16];
                                while let Ok(Ok(n)) =
                                    tokio::time::timeout(Duration::from_millis(20), s.read(&mut drain)).await
                                {
                                    if n == 0 {
                                        break;
                                    }
                                }
                                (lo, hi) = (0, 0);
                                s.write_all(&[0, 0, 0, 1, 1]).await?;
                                break;
                            }
                            if how == Behaviour::Flood {
                                s.write_all(&[0x40, 0, 0, 0, 7]).await?;
                                continue;
                            }
                            let at = index as usize * PIECE + begin as usize;
                            let mut block = data[at..at + length as usize].to_vec();
                            if how == Behaviour::Liar {
                                block.iter_mut().for_each(|b| *b = !*b);
                            }
                            let mut out = ((9 + block.len()) as u32).to_be_bytes().to_vec();
                            out.push(7);
                            out.extend_from_slice(&index.to_be_bytes());
                            out.extend_from_slice(&begin.to_be_bytes());
                            out.extend_from_slice(&block);
                            s.write_all(&out).await?;
                            served.insert((index, begin));
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        buf.copy_within(lo..hi, 0);
                        (lo, hi) = (0, hi - lo);
                        let n = s.read(&mut buf[hi..]).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        hi += n;
                    }
                });
            }
        });
        (addr, sent, again)
    }

    const PIECE: usize = 64 * 1024;

    /// A one-file torrent of `len` made-up bytes in 64 KiB pieces.
    struct Fixture {
        data: Arc<Vec<u8>>,
        torrent: Vec<u8>,
        info_hash: [u8; 20],
        pieces: usize,
    }

    fn fixture(len: usize, seed: usize) -> Fixture {
        let data: Arc<Vec<u8>> = Arc::new((0..len).map(|i| (i * seed + i / 251) as u8).collect());
        let piece_length = PieceLength::new(PIECE as u64).expect("piece length");
        let mut hasher = PieceHasher::new(piece_length);
        hasher.update(&data);
        let hashes = hasher.finish();
        let info = make_v1_info("f.bin", piece_length, &[(vec!["f.bin".into()], len as u64)], &hashes).expect("info");
        let torrent = make_torrent(&info, &[]);
        let info_hash = parse_torrent(&torrent).expect("torrent").info.info_hash_v1.expect("v1");
        Fixture { data, torrent, info_hash, pieces: hashes.len() }
    }

    /// Downloads `fx` from `peers` into a sink in memory.
    async fn fetch(fx: &Fixture, peers: Vec<SocketAddr>, stall: u64) -> (Result<(), EngineError>, Arc<MemSink>) {
        let discovery = Discovery {
            runtime: tokio::runtime::Handle::current(),
            dht: None,
            listen: "127.0.0.1:9".parse().expect("addr"),
            reqwest: reqwest::Client::new(),
        };
        let sink = Arc::new(MemSink::default());
        let job = Download {
            torrent: fx.torrent.clone().into(),
            sink: sink.clone(),
            only: None,
            peers,
            stall_timeout: Duration::from_secs(stall),
            progress: &|_| {},
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), download(job, &discovery));
        (outcome.await.expect("the download ends"), sink)
    }

    /// The sink holds every piece of `fx`, with its bytes.
    fn assert_holds(sink: &MemSink, fx: &Fixture) {
        let pieces = sink.pieces.lock().expect("lock");
        assert_eq!(pieces.len(), fx.pieces);
        for (i, piece) in pieces.iter() {
            let at = *i as usize * PIECE;
            assert!(piece[..] == fx.data[at..at + piece.len()], "piece {i} holds other bytes");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_peers_are_dropped_and_an_honest_one_completes_the_download() {
        let fx = fixture(PIECE * 9 + 1000, 7);
        let mut peers = Vec::new();
        let mut counters = Vec::new();
        for how in [
            Behaviour::Liar,
            Behaviour::Flood,
            Behaviour::BadBitfield,
            Behaviour::OtherTorrent,
            Behaviour::Mute,
            Behaviour::Honest,
        ] {
            let (addr, sent, _) = seeder(fx.data.clone(), fx.info_hash, fx.pieces, how).await;
            peers.push(addr);
            counters.push(sent);
        }

        // The hostile peers alone: the download stalls, says so, and keeps none of the liar's bytes.
        let (outcome, sink) = fetch(&fx, peers[..5].to_vec(), 3).await;
        match outcome {
            Err(EngineError::Timeout { done: 0, .. }) => {}
            other => panic!("expected a stall with nothing done, got {other:?}"),
        }
        assert!(sink.pieces.lock().expect("lock").is_empty(), "a piece that failed its hash was kept");
        assert!(counters[0].load(Ordering::Relaxed) >= 4, "the liar was asked for whole pieces");

        // With an honest seeder among them, the download completes with the torrent's bytes.
        let (outcome, sink) = fetch(&fx, peers, 20).await;
        outcome.expect("the download completes");
        assert_holds(&sink, &fx);
        assert!(counters[5].load(Ordering::Relaxed) > 0, "the honest seeder served");
    }

    fn picker(slots: Vec<Slot>) -> Picker {
        let left = slots.iter().filter(|s| **s == Slot::Missing).count();
        Picker { slots, left, cursor: 0, buffered: 0 }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_choke_keeps_the_blocks_received_and_only_the_rest_is_asked_again() {
        let fx = fixture(PIECE * 12 + 100, 13);
        let (addr, sent, again) = seeder(fx.data.clone(), fx.info_hash, fx.pieces, Behaviour::ChokesOnce).await;
        let (outcome, sink) = fetch(&fx, vec![addr], 20).await;
        outcome.expect("the download completes");
        assert_holds(&sink, &fx);
        let blocks = fx.data.len().div_ceil(BLOCK_LEN as usize) as u64;
        assert_eq!(sent.load(Ordering::Relaxed), blocks, "every block was sent once");
        assert_eq!(again.load(Ordering::Relaxed), 0, "a block received before the choke was asked for again");
    }

    #[test]
    fn pieces_go_in_order_then_twice_in_the_end_game_and_the_first_copy_wins() {
        let mut p = picker(vec![Slot::Skip, Slot::Missing, Slot::Missing, Slot::Missing]);
        assert_eq!(p.claim(|_| true, &[]), Some(1));
        assert_eq!(p.claim(|i| i != 2, &[]), Some(3), "a piece the peer lacks is skipped");
        assert_eq!(p.claim(|_| true, &[]), Some(2));
        // Nothing missing: a second peer may take a piece one peer is fetching, never its own.
        assert_eq!(p.claim(|_| true, &[1, 2]), Some(3));
        assert_eq!(p.claim(|_| true, &[1, 2, 3]), None);
        assert!(p.complete(3));
        assert!(!p.complete(3), "the second copy does not count");
        p.release(1);
        assert_eq!(p.claim(|_| true, &[]), Some(1), "a piece handed back is claimed again first");
        assert!(p.complete(1) && p.complete(2));
        assert_eq!(p.left, 0);
    }

    #[test]
    fn a_released_end_game_piece_stays_taken_by_the_other_peer() {
        let mut p = picker(vec![Slot::Missing]);
        assert_eq!(p.claim(|_| true, &[]), Some(0));
        assert_eq!(p.claim(|_| true, &[]), Some(0));
        p.release(0);
        assert!(p.slots[0] == Slot::Taken(1));
        assert_eq!(p.claim(|_| false, &[]), None, "a peer without the piece gets nothing");
    }
}
