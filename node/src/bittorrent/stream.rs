//! Streaming import: verified pieces go straight into UnixFS leaves in the block store, with no staging copy,
//! so an import writes its data once.
//!
//! The downloader (`fetch.rs`) collects each piece in a buffer of its own and checks its SHA-1. Once it
//! passes, the piece is handed (through a bounded queue, so a slow store slows the
//! download rather than filling memory) to one assembler thread, which cuts it into the leaves `btfs add`
//! would make of each file: a leaf lies at a multiple of the chunk size *within its file*, so a leaf that
//! straddles two pieces waits, as a partial leaf, for the other. Complete leaves are hashed and stored at
//! once, and their links kept in a table by (file, leaf). When the engine reports the download complete, the
//! assembler builds each file's DAG from its table (the layout builder wants leaves in order; the table gives
//! them so, however the pieces arrived), then the directories, and pins the root. The CIDs are exactly those
//! of `btfs add -r --hidden` of the same files: same leaves, same layout, same directory builder.
//!
//! Reads (the downloader's check of what a resumed import holds, and building leaves no piece brought) are
//! answered from, in turn: a verified piece not yet absorbed, a stored leaf, a partial leaf. Bytes found nowhere are an error,
//! except during that initial check, where they read as zeros: a piece holding them then fails its hash and
//! is fetched, unless its bytes really are zeros, and then zeros are its content.
//!
//! **Resume.** Every `SYNC_BYTES` of leaves (and when an import stops) the block store is synced and the
//! leaves stored since are recorded under `leaf/<infohash>/<params>/<file><leaf>` in the `torrents` records,
//! so a record names a durable block (blocks are written without the WAL; a crash or a full disk loses those
//! not yet synced, and then only their records are missing). A new run of the same import loads the leaves
//! whose blocks are still in the store, and the engine's initial check then finds every piece they cover.
//! Partial leaves live only in memory, so the pieces under them are fetched again.
//!
//! **Memory.** Piece buffers exist only for pieces in flight or queued (the downloader's buffers, at most
//! 256 MiB, plus `QUEUE_BYTES`); partial leaves are capped at `MAX_PARTIAL_BYTES` (the downloader claims
//! pieces in order, so only a few leaves wait at any time).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use btfs_chunker::block::{Block, RAW};
use btfs_chunker::dir::DirectoryBuilder;
use btfs_chunker::file::FileBuilder;
use btfs_chunker::import::Params;
use btfs_chunker::torrent::{Info, PieceHasher, PieceLength};
use btfs_chunker::walk::UnixfsNode;
use btfs_chunker::{Cid, Link};
use multihash_codetable::MultihashDigest;

use super::engine::{PieceSink, SeedFiles};
use crate::Node;
use crate::repo::store::{PinKind, Records};

/// Bytes of verified pieces queued for the assembler (at least `MIN_QUEUE` pieces): enough to ride out a
/// slow moment of the store without blocking the downloader. Not more: the assembler is the slower stage,
/// so the queue is full at the end of a download, and draining it is a tail on one core (128 MiB made
/// imports about 5% slower than 32 MiB, and bigger).
const QUEUE_BYTES: u64 = 32 * 1024 * 1024;
const MIN_QUEUE: usize = 4;
/// The most bytes held in leaves waiting for another piece.
const MAX_PARTIAL_BYTES: usize = 512 * 1024 * 1024;
/// Leaf bytes stored between syncs of the block store; each sync makes them durable and then records them,
/// so a crash or a full disk loses at most this much of an import's progress.
const SYNC_BYTES: u64 = 64 * 1024 * 1024;
/// Internal and directory blocks gathered before they are written.
const BLOCK_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// One file of the torrent, as laid out in the piece stream.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    length: u64,
    /// Stored: selected and not padding.
    wanted: bool,
    padding: bool,
}

/// Where a file's bytes have been assembled into a leaf, but not all of them yet.
struct Partial {
    bytes: Vec<u8>,
    /// Filled ranges within the leaf, disjoint.
    filled: Vec<(u64, u64)>,
}

impl Partial {
    fn filled_len(&self) -> u64 {
        self.filled.iter().map(|(a, b)| b - a).sum()
    }

    /// Whether `from..to` is filled (ranges from adjacent pieces are kept apart; walk them in order).
    fn covers(&self, from: u64, to: u64) -> bool {
        let mut sorted = self.filled.clone();
        sorted.sort_unstable();
        let mut at = from;
        for (a, b) in sorted {
            if a <= at && at < b {
                at = b;
            }
        }
        at >= to
    }
}

struct State {
    /// Verified pieces the assembler has not finished with.
    verified: HashMap<u32, Arc<Vec<u8>>>,
    partial: HashMap<(usize, u64), Partial>,
    partial_bytes: usize,
    /// Stored leaves, per file (empty for files not stored).
    leaves: Vec<Vec<Option<Link>>>,
    /// How many leaves of each file are stored (read on every initial-check read, so kept, not counted).
    held: Vec<usize>,
    /// Pieces handed to the assembler.
    fed: Vec<bool>,
    /// The engine's initial check is running: unknown bytes read as zeros.
    checking: bool,
    error: Option<String>,
    /// The last read or write refused to the engine, with how many there were (for stall messages).
    refused: Option<(String, u64)>,
}

/// Leaves stored since the last sync, and their records (key, value) to write after the next one.
#[derive(Default)]
struct Unsynced {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: u64,
}

/// What the assembler built once the download was complete.
#[derive(Debug)]
pub struct Built {
    pub root: Cid,
    /// Each file's UnixFS CID, by index in the info dict (`None` for files not stored).
    pub files: Vec<Option<Cid>>,
}

enum Msg {
    Piece(u32, Arc<Vec<u8>>),
    Finish(tokio::sync::oneshot::Sender<Result<Built, String>>),
}

/// The shared side of a streaming import: what the engine writes to and reads from.
pub struct Inner {
    node: Arc<Node>,
    params: Params,
    name: String,
    single: bool,
    piece_length: u64,
    piece_length_checked: PieceLength,
    total: u64,
    pieces: Vec<[u8; 20]>,
    spans: Vec<Span>,
    paths: Vec<Vec<String>>,
    chunk: u64,
    /// `leaf/<infohash>/<params>/`.
    record_prefix: Vec<u8>,
    state: Mutex<State>,
    queue: Mutex<Option<SyncSender<Msg>>>,
}

/// A streaming import under way.
pub struct StreamImport {
    inner: Arc<Inner>,
    /// Bytes of the selected files already in the store from an earlier run.
    pub resumed_bytes: u64,
    assembler: Option<std::thread::JoinHandle<()>>,
}

/// The record prefix of every leaf of an import of `info_hash`.
pub fn leaf_prefix(info_hash: &str) -> Vec<u8> {
    format!("leaf/{info_hash}/").into_bytes()
}

impl StreamImport {
    /// Sets up the import of `info` (the files chosen by `only`), loading the leaves an earlier run of it
    /// left, and starts the assembler.
    pub fn start(
        node: Arc<Node>,
        info: &Info,
        only: &Option<Vec<usize>>,
        params: Params,
        info_hash: &str,
    ) -> Result<Self, String> {
        let chunk = params.chunk_size.get() as u64;
        let spans: Vec<Span> = info
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| Span {
                start: f.offset,
                length: f.length,
                wanted: !f.padding && only.as_ref().is_none_or(|o| o.contains(&i)),
                padding: f.padding,
            })
            .collect();
        let leaves = spans
            .iter()
            .map(|s| if s.wanted { vec![None; s.length.div_ceil(chunk) as usize] } else { Vec::new() })
            .collect();
        // The parameters decide the leaves: records made under others are not reused.
        let tag = multihash_codetable::Code::Sha2_256.digest(format!("{params:?}").as_bytes());
        let tag = btfs_chunker::torrent::to_hex(&tag.digest()[..8]);
        let mut record_prefix = leaf_prefix(info_hash);
        record_prefix.extend_from_slice(format!("{tag}/").as_bytes());
        let depth = usize::try_from(QUEUE_BYTES / info.piece_length.get()).unwrap_or(MIN_QUEUE).max(MIN_QUEUE);
        let (tx, rx) = sync_channel(depth);
        let inner = Arc::new(Inner {
            node,
            params,
            name: info.name.clone(),
            single: super::is_single_file(info),
            piece_length: info.piece_length.get(),
            piece_length_checked: info.piece_length,
            total: info.total_length,
            pieces: info.pieces.clone(),
            spans,
            paths: info.files.iter().map(|f| f.path.clone()).collect(),
            chunk,
            record_prefix,
            state: Mutex::new(State {
                verified: HashMap::new(),
                partial: HashMap::new(),
                partial_bytes: 0,
                held: vec![0; info.files.len()],
                leaves,
                fed: vec![false; info.pieces.len()],
                checking: true,
                error: None,
                refused: None,
            }),
            queue: Mutex::new(Some(tx)),
        });
        let resumed_bytes = inner.load_leaves().map_err(|e| format!("cannot read the import's progress: {e}"))?;
        let worker = inner.clone();
        let assembler = std::thread::Builder::new()
            .name("bt-assembler".into())
            .spawn(move || worker.assemble(rx))
            .map_err(|e| format!("cannot start the assembler thread: {e}"))?;
        Ok(Self { inner, resumed_bytes, assembler: Some(assembler) })
    }

    /// What the engine writes to.
    pub fn sink(&self) -> Arc<dyn PieceSink> {
        self.inner.clone()
    }

    /// Builds the DAG once the download is complete.
    pub async fn finish(self) -> Result<Built, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queue = self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
        let queue = queue.ok_or("the import was already stopped")?;
        // The assembler may be busy with queued pieces: wait for room without blocking the runtime.
        tokio::task::spawn_blocking(move || queue.send(Msg::Finish(tx)))
            .await
            .map_err(|e| describe(&e))?
            .map_err(|_| self.inner.failure_or("the assembler stopped"))?;
        rx.await.map_err(|_| self.inner.failure_or("the assembler stopped"))?
    }
}

impl Drop for StreamImport {
    /// An import that ends without `finish` stops the assembler; its stored leaves stay for a later run.
    /// Either way the assembler is done with the store when this returns (it may be writing a piece or its
    /// leaf records, a few milliseconds), so a process that exits next does not close the store under it.
    fn drop(&mut self) {
        self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = self.assembler.take()
            && t.join().is_err()
        {
            tracing::error!("the streaming import's assembler thread panicked");
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure_or(&self, default: &str) -> String {
        self.lock().error.clone().unwrap_or_else(|| default.to_string())
    }

    fn fail(&self, message: String) {
        tracing::warn!(error = %message, "streaming import failed");
        self.lock().error.get_or_insert(message);
    }

    fn piece_len(&self, piece: u64) -> u64 {
        self.piece_length.min(self.total - piece * self.piece_length)
    }

    /// The byte range of leaf `k` within file `f`.
    fn leaf_range(&self, f: usize, k: u64) -> (u64, u64) {
        let start = k * self.chunk;
        (start, (start + self.chunk).min(self.spans[f].length))
    }

    /// Loads the leaves recorded by an earlier run whose blocks are still held; returns their bytes.
    fn load_leaves(&self) -> Result<u64, String> {
        let store = self.node.repo().store();
        let rows = store.record_scan(Records::Torrents, &self.record_prefix).map_err(|e| describe(&e))?;
        let mut held = 0;
        let mut state = self.lock();
        for (key, value) in rows {
            let Some((f, k, link)) = decode_leaf_record(&key[self.record_prefix.len()..], &value) else { continue };
            let Some(slot) = state.leaves.get_mut(f).and_then(|l| l.get_mut(k as usize)) else { continue };
            let (start, end) = self.leaf_range(f, k);
            if link.filesize != end - start || !store.has(&link.cid).unwrap_or(false) {
                continue;
            }
            *slot = Some(link);
            state.held[f] += 1;
            held += link.filesize;
        }
        Ok(held)
    }

    /// Fills `buf` from file `f` at `offset`; unknown bytes are zeros when `zeros` is set, else an error.
    fn read(&self, f: usize, offset: u64, buf: &mut [u8], zeros: bool) -> Result<(), String> {
        let span = *self.spans.get(f).ok_or_else(|| format!("no file {f}"))?;
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= span.length);
        let end = end.ok_or_else(|| format!("read of {} bytes at {offset} past the end of file {f}", buf.len()))?;
        let mut pos = offset;
        while pos < end {
            let abs = span.start + pos;
            let piece = abs / self.piece_length;
            let in_piece = abs - piece * self.piece_length;
            // Within this piece, and within this leaf when the piece must be read from leaves.
            let piece_left = self.piece_len(piece) - in_piece;
            let leaf = pos / self.chunk;
            let leaf_left = (leaf + 1) * self.chunk - pos;
            let dst = (pos - offset) as usize;
            let state = self.lock();
            let buffered = state.verified.get(&(piece as u32)).map(|v| v.as_slice());
            if let Some(data) = buffered {
                let n = piece_left.min(end - pos) as usize;
                let from = in_piece as usize;
                buf[dst..dst + n].copy_from_slice(&data[from..from + n]);
                pos += n as u64;
                continue;
            }
            let n = piece_left.min(leaf_left).min(end - pos) as usize;
            let out = &mut buf[dst..dst + n];
            if span.padding {
                out.fill(0);
            } else if let Some(link) = state.leaves.get(f).and_then(|l| l.get(leaf as usize)).copied().flatten() {
                drop(state);
                let within = (pos - leaf * self.chunk) as usize;
                let bytes = self.leaf_bytes(&link.cid)?;
                let got = bytes.get(within..within + n).ok_or_else(|| format!("leaf {} is too short", link.cid))?;
                out.copy_from_slice(got);
            } else if let Some(p) = state.partial.get(&(f, leaf)).filter(|p| {
                let within = pos - leaf * self.chunk;
                p.covers(within, within + n as u64)
            }) {
                let within = (pos - leaf * self.chunk) as usize;
                out.copy_from_slice(&p.bytes[within..within + n]);
            } else if zeros || (state.checking && state.held[f] > 0) {
                // Zeros only where something of the file is held: a file with nothing held fails its check
                // at once, rather than have every piece of it hashed as zeros.
                out.fill(0);
            } else {
                return Err(format!("bytes {pos}..{} of file {f} are not held yet", pos + n as u64));
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// A stored leaf's file bytes.
    fn leaf_bytes(&self, cid: &Cid) -> Result<Vec<u8>, String> {
        let data = self.node.repo().store().get_local(cid).map_err(|e| describe(&e))?;
        let data = data.ok_or_else(|| format!("leaf {cid} is no longer in the store"))?;
        if cid.codec() == RAW {
            return Ok(data);
        }
        match UnixfsNode::decode(cid, &data) {
            Ok(UnixfsNode::File { own, .. }) => Ok(data[own].to_vec()),
            Ok(_) => Err(format!("leaf {cid} is not a file")),
            Err(e) => Err(format!("leaf {cid}: {e}")),
        }
    }

    /// The assembler thread: absorbs verified pieces until told to finish (or until the import stops).
    fn assemble(self: Arc<Self>, rx: Receiver<Msg>) {
        // Leaves are unpinned until the end: keep `repo gc` away while this runs.
        let node = self.node.clone();
        let _writing = node.writing();
        let mut records = Unsynced::default();
        // Syncs run beside the assembler, which goes on storing leaves meanwhile: waiting for each flush here
        // left both cores idle while the queue before it filled.
        let (to_syncer, batches) = sync_channel::<Unsynced>(1);
        let me = self.clone();
        let syncer = std::thread::Builder::new().name("bt-sync".into()).spawn(move || {
            for mut batch in batches {
                if let Err(e) = me.sync_and_record(&mut batch) {
                    me.fail(format!("cannot make the stored leaves durable: {e}"));
                }
            }
        });
        let syncer = match syncer {
            Ok(t) => t,
            Err(e) => {
                self.fail(format!("cannot start the sync thread: {e}"));
                return;
            }
        };
        let join = |syncer: std::thread::JoinHandle<()>| {
            if syncer.join().is_err() {
                tracing::error!("the streaming import's sync thread panicked");
            }
        };
        for msg in rx {
            match msg {
                Msg::Piece(piece, data) => {
                    if self.lock().error.is_some() {
                        continue;
                    }
                    if let Err(e) = self.absorb(piece, &data, &mut records) {
                        self.fail(format!("piece {piece}: {e}"));
                    }
                    if records.bytes >= SYNC_BYTES && to_syncer.send(std::mem::take(&mut records)).is_err() {
                        self.fail("the sync thread stopped".into());
                    }
                }
                Msg::Finish(reply) => {
                    // The records are dropped once the import is recorded: no need to write them now.
                    drop(to_syncer);
                    join(syncer);
                    let failed = self.lock().error.clone();
                    let built = match failed {
                        Some(e) => Err(e),
                        None => self.build(),
                    };
                    if let Err(e) = &built {
                        self.fail(e.clone());
                    }
                    let _ = reply.send(built);
                    return;
                }
            }
        }
        // Stopped: keep what is stored for the next run.
        let _ = to_syncer.send(records);
        drop(to_syncer);
        join(syncer);
    }

    /// Makes the leaves stored so far durable, then records them.
    fn sync_and_record(&self, pending: &mut Unsynced) -> Result<(), String> {
        if pending.records.is_empty() {
            return Ok(());
        }
        let store = self.node.repo().store();
        store.sync_blocks().map_err(|e| describe(&e))?;
        let puts: Vec<(Records, &[u8], &[u8])> =
            pending.records.iter().map(|(k, v)| (Records::Torrents, k.as_slice(), v.as_slice())).collect();
        store.record_write_relaxed(&puts, &[]).map_err(|e| describe(&e))?;
        *pending = Unsynced::default();
        Ok(())
    }

    /// Cuts a verified piece into leaves; stores the complete ones.
    fn absorb(&self, piece: u32, data: &[u8], pending: &mut Unsynced) -> Result<(), String> {
        let (ps, pe) = (u64::from(piece) * self.piece_length, u64::from(piece) * self.piece_length + data.len() as u64);
        // Leaves are hashed and stored as they are found: a whole one straight from the piece (never copied
        // out of it), a partial one from a copy of its buffer once it is complete.
        let store = self.node.repo().store();
        let mut made: Vec<(usize, u64, Link)> = Vec::new();
        let mut finished_partials = Vec::new();
        // The first file that ends after the piece starts.
        let first = self.spans.partition_point(|s| s.start + s.length <= ps);
        for (f, span) in self.spans.iter().enumerate().skip(first) {
            if span.start >= pe {
                break;
            }
            if !span.wanted || span.length == 0 {
                continue;
            }
            let (x, y) = (ps.max(span.start) - span.start, pe.min(span.start + span.length) - span.start);
            for k in x / self.chunk..=(y - 1) / self.chunk {
                let (ls, le) = self.leaf_range(f, k);
                let (s, e) = (ls.max(x), le.min(y));
                let bytes = &data[(span.start + s - ps) as usize..(span.start + e - ps) as usize];
                if (s, e) == (ls, le) {
                    let (frame, link) = self.params.file.leaf_parts(bytes);
                    store.put_parts(&link.cid, &[&frame.head, bytes, &frame.tail]).map_err(|e| describe(&e))?;
                    made.push((f, k, link));
                    continue;
                }
                // A partial leaf that this piece completes is copied out and hashed once the lock is released
                // (librqbit's reads wait on it); it stays in the table, serving reads, until it is stored.
                let completed = {
                    let mut state = self.lock();
                    let state = &mut *state;
                    let p = state
                        .partial
                        .entry((f, k))
                        .or_insert_with(|| Partial { bytes: Vec::new(), filled: Vec::new() });
                    if p.bytes.is_empty() {
                        p.bytes = vec![0; (le - ls) as usize];
                        state.partial_bytes += p.bytes.len();
                    }
                    p.bytes[(s - ls) as usize..(e - ls) as usize].copy_from_slice(bytes);
                    p.filled.push((s - ls, e - ls));
                    if p.filled_len() == le - ls {
                        Some(p.bytes.clone())
                    } else if state.partial_bytes > MAX_PARTIAL_BYTES {
                        return Err(format!(
                            "more than {} MiB of leaves wait for pieces that have not arrived (pieces far out of order)",
                            MAX_PARTIAL_BYTES >> 20
                        ));
                    } else {
                        None
                    }
                };
                if let Some(leaf) = completed {
                    let (block, link) = self.params.file.leaf(leaf);
                    store.put_many([&block]).map_err(|e| describe(&e))?;
                    made.push((f, k, link));
                    finished_partials.push((f, k));
                }
            }
        }
        let mut state = self.lock();
        for (f, k, link) in &made {
            if state.leaves[*f][*k as usize].replace(*link).is_none() {
                state.held[*f] += 1;
            }
            let mut key = self.record_prefix.clone();
            key.extend_from_slice(&(*f as u32).to_be_bytes());
            key.extend_from_slice(&k.to_be_bytes());
            pending.records.push((key, encode_leaf_value(link)));
            pending.bytes += link.filesize;
        }
        for key in finished_partials {
            if let Some(p) = state.partial.remove(&key) {
                state.partial_bytes -= p.bytes.len();
            }
        }
        state.verified.remove(&piece);
        Ok(())
    }

    /// Fills leaves no piece brought (pieces the engine found complete as zeros), builds every file and
    /// directory, and pins the root.
    fn build(&self) -> Result<Built, String> {
        let store = self.node.repo().store();
        let mut blocks: Vec<Block> = Vec::new();
        let mut bytes = 0usize;
        let mut push = |b: Block, blocks: &mut Vec<Block>| -> Result<(), String> {
            bytes += b.data.len();
            blocks.push(b);
            if bytes >= BLOCK_BATCH_BYTES {
                store.put_many(blocks.iter()).map_err(|e| describe(&e))?;
                blocks.clear();
                bytes = 0;
            }
            Ok(())
        };
        let mut files: Vec<Option<Link>> = vec![None; self.spans.len()];
        for (f, span) in self.spans.iter().enumerate() {
            if !span.wanted {
                continue;
            }
            let links = self.file_leaves(f)?;
            let mut builder = FileBuilder::new(self.params.file);
            let mut emitted = Vec::new();
            for link in links {
                builder.push(link, &mut |b| emitted.push(b));
            }
            let link = builder.finish(&mut |b| emitted.push(b));
            for b in emitted {
                push(b, &mut blocks)?;
            }
            files[f] = Some(link);
        }
        let root = if self.single {
            files.first().copied().flatten().ok_or("the torrent's one file was not stored")?
        } else {
            let mut tree = Tree::default();
            for (f, link) in files.iter().enumerate() {
                if let Some(link) = link {
                    tree.insert(&self.paths[f][1..], *link)?;
                }
            }
            let mut emitted = Vec::new();
            let link = tree.build(&self.params, &mut |b| emitted.push(b))?;
            for b in emitted {
                push(b, &mut blocks)?;
            }
            link
        };
        store.put_many(blocks.iter()).map_err(|e| describe(&e))?;
        store.update_pins(&[(root.cid, PinKind::Recursive)], &[]).map_err(|e| describe(&e))?;
        tracing::debug!(name = %self.name, root = %root.cid, "streamed import built");
        Ok(Built { root: root.cid, files: files.iter().map(|l| l.map(|l| l.cid)).collect() })
    }

    /// File `f`'s leaf links in order, making any leaf no piece brought.
    fn file_leaves(&self, f: usize) -> Result<Vec<Link>, String> {
        let table = self.lock().leaves[f].clone();
        let mut out = Vec::with_capacity(table.len());
        for (k, link) in table.into_iter().enumerate() {
            if let Some(link) = link {
                out.push(link);
                continue;
            }
            // Only a piece the engine's initial check accepted can be missing here, and it accepted only
            // bytes this side supplied: held ones, and zeros for the rest. Prove that by the piece hashes.
            let (ls, le) = self.leaf_range(f, k as u64);
            let (abs_s, abs_e) = (self.spans[f].start + ls, self.spans[f].start + le);
            for piece in abs_s / self.piece_length..=(abs_e - 1) / self.piece_length {
                self.check_piece(piece)?;
            }
            let mut bytes = vec![0; (le - ls) as usize];
            self.read(f, ls, &mut bytes, true)?;
            let (block, link) = self.params.file.leaf(bytes);
            self.node.repo().store().put_many([&block]).map_err(|e| describe(&e))?;
            out.push(link);
        }
        Ok(out)
    }

    /// Checks piece `piece` as this side would serve it (zeros where nothing is held) against its hash.
    fn check_piece(&self, piece: u64) -> Result<(), String> {
        let (ps, pe) = (piece * self.piece_length, piece * self.piece_length + self.piece_len(piece));
        let mut hasher = PieceHasher::new(self.piece_length_checked);
        let first = self.spans.partition_point(|s| s.start + s.length <= ps);
        for (f, span) in self.spans.iter().enumerate().skip(first) {
            if span.start >= pe {
                break;
            }
            let (x, y) = (ps.max(span.start) - span.start, pe.min(span.start + span.length) - span.start);
            let mut buf = vec![0; (y - x) as usize];
            self.read(f, x, &mut buf, true)?;
            hasher.update(&buf);
        }
        let want = self.pieces.get(piece as usize).ok_or_else(|| format!("no piece {piece}"))?;
        if hasher.finish().first() != Some(want) {
            return Err(format!("piece {piece} was reported complete but its bytes never arrived"));
        }
        Ok(())
    }
}

impl Inner {
    /// Queues a verified piece for the assembler (waiting while the queue is full).
    fn hand_on(&self, piece: u32, data: Arc<Vec<u8>>) -> Result<(), String> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let sent = queue.is_some_and(|q| q.send(Msg::Piece(piece, data)).is_ok());
        if !sent {
            self.fail(format!("piece {piece} arrived after the import stopped"));
            return Err(self.failure_or("stopped"));
        }
        Ok(())
    }

    /// Notes a refusal, for the stall message.
    fn refused<T>(&self, result: Result<T, String>) -> Result<T, String> {
        if let Err(e) = &result {
            let mut state = self.lock();
            let count = state.refused.as_ref().map_or(0, |r| r.1) + 1;
            state.refused = Some((e.clone(), count));
        }
        result
    }
}

impl SeedFiles for Inner {
    fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let checking = self.lock().checking;
        let result = self.read(file, offset, buf, false);
        // Refusals during the initial check are how it learns what is missing: not worth noting.
        if checking { result } else { self.refused(result) }
    }
}

impl PieceSink for Inner {
    fn piece_complete(&self, piece: u32, data: Vec<u8>) -> Result<(), String> {
        let data = {
            let mut state = self.lock();
            if let Some(e) = &state.error {
                return Err(e.clone());
            }
            match state.fed.get(piece as usize) {
                None => return Err(format!("no piece {piece}")),
                Some(true) => return Ok(()),
                Some(false) => {}
            }
            if data.len() as u64 != self.piece_len(u64::from(piece)) {
                return Err(format!("piece {piece} has {} bytes", data.len()));
            }
            let data = Arc::new(data);
            state.fed[piece as usize] = true;
            state.verified.insert(piece, data.clone());
            data
        };
        self.hand_on(piece, data)
    }

    fn initialized(&self) {
        self.lock().checking = false;
    }

    fn failure(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn state(&self) -> String {
        let state = self.lock();
        format!(
            "{} pieces verified and queued, {} handed on, {} leaves waiting for another piece{}",
            state.verified.len(),
            state.fed.iter().filter(|f| **f).count(),
            state.partial.len(),
            state.refused.as_ref().map_or(String::new(), |(e, n)| format!("; {n} reads refused, the last: {e}"))
        )
    }
}

/// An error with its sources, for messages that must name the cause (a full disk, say).
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A leaf record's value: the CID's bytes, then its tsize and filesize (8 bytes each, big-endian).
fn encode_leaf_value(link: &Link) -> Vec<u8> {
    let mut v = link.cid.to_bytes();
    v.extend_from_slice(&link.tsize.to_be_bytes());
    v.extend_from_slice(&link.filesize.to_be_bytes());
    v
}

/// A leaf record's (file, leaf, link) from its key (after the prefix) and value; `None` if malformed.
fn decode_leaf_record(key: &[u8], value: &[u8]) -> Option<(usize, u64, Link)> {
    let f = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let k = u64::from_be_bytes(key.get(4..12)?.try_into().ok()?);
    let split = value.len().checked_sub(16)?;
    let cid = Cid::try_from(&value[..split]).ok()?;
    let tsize = u64::from_be_bytes(value[split..split + 8].try_into().ok()?);
    let filesize = u64::from_be_bytes(value[split + 8..].try_into().ok()?);
    Some((f, k, Link { cid, tsize, filesize }))
}

/// A multi-file torrent's directories, built bottom-up as `add -r` builds them.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    File(Link),
    Dir(Tree),
}

impl Tree {
    fn insert(&mut self, path: &[String], link: Link) -> Result<(), String> {
        match path {
            [] => Err("a file with an empty path".into()),
            [name] => match self.entries.insert(name.clone(), Entry::File(link)) {
                None => Ok(()),
                Some(_) => Err(format!("{name} appears twice")),
            },
            [dir, rest @ ..] => {
                let entry = self.entries.entry(dir.clone()).or_insert_with(|| Entry::Dir(Tree::default()));
                match entry {
                    Entry::Dir(t) => t.insert(rest, link),
                    Entry::File(_) => Err(format!("{dir} is both a file and a directory")),
                }
            }
        }
    }

    fn build(self, params: &Params, emit: &mut impl FnMut(Block)) -> Result<Link, String> {
        let mut dir = DirectoryBuilder::new();
        for (name, entry) in self.entries {
            let link = match entry {
                Entry::File(l) => l,
                Entry::Dir(t) => t.build(params, emit)?,
            };
            dir.insert(name, link).map_err(|e| describe(&e))?;
        }
        Ok(dir.finish(&params.dir, emit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_records_round_trip_and_reject_garbage() {
        let cid = Cid::try_from("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy").expect("cid");
        let link = Link { cid, tsize: 262_144, filesize: 262_144 };
        let mut key = 3u32.to_be_bytes().to_vec();
        key.extend_from_slice(&7u64.to_be_bytes());
        let (f, k, back) = decode_leaf_record(&key, &encode_leaf_value(&link)).expect("decodes");
        assert_eq!((f, k, back), (3, 7, link));
        assert!(decode_leaf_record(&key[..5], &encode_leaf_value(&link)).is_none());
        assert!(decode_leaf_record(&key, &[1, 2, 3]).is_none());
        assert!(decode_leaf_record(&key, &[0; 20]).is_none());
    }

    #[test]
    fn partial_leaf_coverage_joins_adjacent_ranges() {
        let p = Partial { bytes: vec![0; 100], filled: vec![(40, 100), (0, 40)] };
        assert!(p.covers(0, 100));
        assert!(p.covers(30, 50));
        let q = Partial { bytes: vec![0; 100], filled: vec![(0, 40), (60, 100)] };
        assert!(!q.covers(30, 70));
        assert!(q.covers(60, 70));
        assert_eq!(q.filled_len(), 80);
    }
}
