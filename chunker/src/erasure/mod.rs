//! Streaming Reed-Solomon erasure coding of one file into `k + m` shards, each stored as its own UnixFS file.
//!
//! The layout (the storage market's, after go-btfs):
//! - the input is cut into **stripes** of `k` consecutive pieces of `piece_size` bytes; the last stripe is
//!   zero-padded to a full stripe. A 0-byte file has **zero stripes** (and so every shard is the empty file);
//! - each stripe gets `m` parity pieces (Reed-Solomon over GF(2^8), `reed-solomon-erasure`);
//! - shard `j` is the concatenation of piece `j` of every stripe, so all `k + m` shards have the same length,
//!   `stripes * piece_size`, and piece `i` of a shard belongs to stripe `i`;
//! - each shard is a UnixFS file with raw leaves, CIDv1 blake3, one leaf per piece and the balanced layout
//!   with 174 links ([`SHARD_FILE`]): exactly `btfs add --cid-version=1 --hash=blake3 --chunker=size-<piece>` of the
//!   shard's bytes, so a shard rebuilt from any `k` others gets its original CID back.
//!
//! Memory: [`ShardEncoder`] holds one stripe (`(k + m) * piece_size` bytes; on `t` threads, up to `t + 2`) and
//! the open right edge of each shard's tree (at most 174 links per level, a few levels), whatever the file
//! size; the pieces of a finished
//! stripe leave as blocks through `emit`. [`ShardDecoder`] holds nothing but the codec: the caller hands it
//! one stripe's pieces at a time.

use std::num::NonZeroUsize;

use cid::Cid;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::block::{Block, CidParams, CidVersion, Link, RAW};
use crate::dagpb;
use crate::file::{FileBuilder, FileParams, Layout, LeafKind};
use crate::hash::{self, HashFunction, VerifyError};
use crate::import::{DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, MAX_CHUNK_SIZE};
use crate::walk::{MAX_DEPTH, NodeError, UnixfsNode};

mod parity;
pub use parity::{Kernel, ParityCoder};

/// At most this many shards in all: Reed-Solomon over GF(2^8) has 256 distinct evaluation points.
pub const MAX_SHARDS: usize = 256;
/// The largest piece: kubo's largest chunk (1 MiB), so that every piece is one leaf and every block stays
/// under the 2 MiB Bitswap peers accept.
pub const MAX_PIECE_SIZE: usize = MAX_CHUNK_SIZE;
/// Pieces are a multiple of 64 bytes, the widest SIMD lane the codec uses, so no piece ends in a scalar tail.
pub const PIECE_ALIGN: usize = 64;
/// go-btfs's default data shards.
pub const DEFAULT_DATA_SHARDS: usize = 10;
/// go-btfs's default parity shards.
pub const DEFAULT_PARITY_SHARDS: usize = 20;

/// How a shard is written as a UnixFS file: raw leaves, CIDv1 blake3, balanced with kubo's 174 links. Every
/// input byte becomes (k + m) / k bytes of leaves, all hashed: BLAKE3 (several GB/s per core with SIMD) keeps
/// the encoder near the codec's speed where SHA-256 (about 1.5 GB/s with SHA-NI) capped it at a third.
/// kubo makes the same CIDs with `add --cid-version=1 --hash=blake3 --chunker=size-<piece>`.
pub const SHARD_FILE: FileParams = FileParams {
    cids: CidParams { version: CidVersion::V1, hash: HashFunction::Blake3, inline_limit: None },
    leaf: LeafKind::Raw,
    layout: Layout::Balanced { max_links: DEFAULT_MAX_LINKS },
};

/// The erasure code of an upload: `data_shards` (k) data and `parity_shards` (m) parity shards, cut in pieces
/// of `piece_size` bytes. Any `k` of the `k + m` shards rebuild the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureParams {
    pub data_shards: usize,
    pub parity_shards: usize,
    pub piece_size: usize,
}

impl Default for ErasureParams {
    /// go-btfs's 10 + 20 with kubo's 256 KiB chunk as the piece.
    fn default() -> Self {
        Self { data_shards: DEFAULT_DATA_SHARDS, parity_shards: DEFAULT_PARITY_SHARDS, piece_size: DEFAULT_CHUNK_SIZE }
    }
}

/// Erasure parameters outside what the codec and the shard files support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("an erasure code needs at least one data shard")]
    NoDataShards,
    #[error("an erasure code needs at least one parity shard")]
    NoParityShards,
    #[error("{data} data and {parity} parity shards make more than {MAX_SHARDS} shards")]
    TooManyShards { data: usize, parity: usize },
    #[error("piece size {size} must be a multiple of {PIECE_ALIGN} between {PIECE_ALIGN} and {MAX_PIECE_SIZE} bytes")]
    PieceSize { size: usize },
}

impl ErasureParams {
    /// Checks the bounds: `1 <= k`, `1 <= m`, `k + m <= 256`, and a piece size that is a multiple of 64 bytes
    /// between 64 bytes and 1 MiB.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.data_shards == 0 {
            return Err(ParamsError::NoDataShards);
        }
        if self.parity_shards == 0 {
            return Err(ParamsError::NoParityShards);
        }
        if self.data_shards.saturating_add(self.parity_shards) > MAX_SHARDS {
            return Err(ParamsError::TooManyShards { data: self.data_shards, parity: self.parity_shards });
        }
        let size = self.piece_size;
        if size == 0 || size > MAX_PIECE_SIZE || !size.is_multiple_of(PIECE_ALIGN) {
            return Err(ParamsError::PieceSize { size });
        }
        Ok(())
    }

    /// `k + m`.
    pub fn total_shards(&self) -> usize {
        self.data_shards + self.parity_shards
    }

    /// Input bytes per stripe: `k * piece_size`.
    pub fn stripe_size(&self) -> usize {
        self.data_shards * self.piece_size
    }

    /// Stripes of a file of `file_size` bytes (0 for an empty file).
    pub fn stripes(&self, file_size: u64) -> u64 {
        file_size.div_ceil(self.stripe_size().max(1) as u64)
    }

    /// Bytes of every shard of a file of `file_size` bytes, or `None` if that overflows a u64.
    pub fn shard_size(&self, file_size: u64) -> Option<u64> {
        self.stripes(file_size).checked_mul(self.piece_size as u64)
    }

    fn codec(&self) -> Result<ReedSolomon, ErasureError> {
        self.validate()?;
        Ok(ReedSolomon::new(self.data_shards, self.parity_shards)?)
    }
}

/// Why encoding, decoding or rebuilding failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("a stripe has {expected} pieces, got {got}")]
    PieceCount { got: usize, expected: usize },
    #[error("piece {index} is {len} bytes, expected {expected}")]
    PieceLength { index: usize, len: usize, expected: usize },
    #[error("only {present} of the {needed} pieces needed to rebuild stripe {stripe} are present")]
    TooFewPieces { stripe: u64, present: usize, needed: usize },
    #[error("stripe {stripe} is past the last of {stripes} stripes")]
    PastLastStripe { stripe: u64, stripes: u64 },
    #[error("the file is {file_size} bytes, more than shards of u64 length can hold")]
    FileTooLarge { file_size: u64 },
    #[error("bug: an encoder thread panicked")]
    BugThread,
    #[error("bug: the reed-solomon codec refused a stripe: {0}")]
    BugCodec(#[from] reed_solomon_erasure::Error),
}

/// One shard as stored: its UnixFS root and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    pub cid: Cid,
    pub size: u64,
}

/// What [`ShardEncoder::finish`] reports: the input size, the stripe count and the `k + m` shards in order
/// (data shards first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedShards {
    pub file_size: u64,
    pub stripes: u64,
    pub shards: Vec<ShardInfo>,
}

/// Builds one shard's UnixFS file from its pieces, in stripe order ([`SHARD_FILE`] parameters). The encoder
/// uses one per shard; a repair uses one to rebuild a lost shard, which then gets its original CID.
#[derive(Debug)]
pub struct ShardFileBuilder {
    piece_size: usize,
    builder: FileBuilder,
    pieces: u64,
}

impl ShardFileBuilder {
    /// An empty shard of pieces of `piece_size` bytes.
    pub fn new(piece_size: usize) -> Self {
        Self { piece_size, builder: FileBuilder::new(SHARD_FILE), pieces: 0 }
    }

    /// Appends the next piece (copied into its leaf block).
    pub fn push_piece(&mut self, piece: &[u8], emit: &mut impl FnMut(Block)) -> Result<(), ErasureError> {
        self.check(piece.len())?;
        self.push_owned(piece.to_vec(), emit)
    }

    /// Appends the next piece, which becomes its leaf block without a copy.
    pub fn push_owned(&mut self, piece: Vec<u8>, emit: &mut impl FnMut(Block)) -> Result<(), ErasureError> {
        self.check(piece.len())?;
        let (block, link) = SHARD_FILE.leaf(piece);
        self.push_leaf(block, link, emit);
        Ok(())
    }

    /// Appends a leaf made from a checked piece by `SHARD_FILE.leaf` (possibly on another thread).
    fn push_leaf(&mut self, block: Block, link: Link, emit: &mut impl FnMut(Block)) {
        emit(block);
        self.builder.push(link, emit);
        self.pieces += 1;
    }

    fn check(&self, len: usize) -> Result<(), ErasureError> {
        if len == self.piece_size {
            Ok(())
        } else {
            let index = usize::try_from(self.pieces).unwrap_or(usize::MAX);
            Err(ErasureError::PieceLength { index, len, expected: self.piece_size })
        }
    }

    /// Closes the shard's tree; `emit` receives its remaining internal nodes.
    pub fn finish(self, emit: &mut impl FnMut(Block)) -> ShardInfo {
        let root = self.builder.finish(emit);
        ShardInfo { cid: root.cid, size: root.filesize }
    }
}

/// Erasure-codes a stream into `k + m` shard files, one stripe at a time.
///
/// `push` the file's bytes in any slicing; every block (leaves as their stripe completes, internal nodes as
/// their subtree closes) goes to `emit` as soon as it exists. Memory is one stripe of `k + m` pieces plus each
/// shard's open tree edge; the data pieces move into their leaf blocks without a copy.
#[derive(Debug)]
pub struct ShardEncoder {
    params: ErasureParams,
    coder: ParityCoder,
    /// The open stripe's data pieces; all before `filling` are full, the rest empty.
    data: Vec<Vec<u8>>,
    filling: usize,
    files: Vec<ShardFileBuilder>,
    file_size: u64,
    stripes: u64,
    /// With two or more threads: the workers that encode and hash whole stripes.
    workers: Option<StripeWorkers>,
}

/// A stripe's `k` data pieces and its sequence number, on its way to a worker.
type StripeJob = (u64, Vec<Vec<u8>>);
/// What a worker makes of a stripe: its `k + m` leaves in shard order, or why the codec refused it.
type StripeDone = (u64, Result<Vec<(Block, Link)>, ErasureError>);

/// Threads that each take a whole stripe, compute its parity and hash its `k + m` pieces into leaf blocks.
/// Every stripe is the same work, so the threads stay evenly loaded with no step between them that only one
/// can do; the caller's thread only copies the input into pieces and hands out the finished leaves, in stripe
/// order, from a small reorder buffer. At most `threads + 1` stripes are in flight.
#[derive(Debug)]
struct StripeWorkers {
    jobs: std::sync::mpsc::SyncSender<StripeJob>,
    done: std::sync::mpsc::Receiver<StripeDone>,
    /// Finished stripes that arrived before an earlier one, by sequence number.
    early: std::collections::BTreeMap<u64, Vec<(Block, Link)>>,
    /// Stripes sent and not yet handed out.
    in_flight: usize,
    /// The next stripe to hand out.
    next: u64,
    limit: usize,
}

impl StripeWorkers {
    fn start(threads: usize, coder: &ParityCoder) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<StripeJob>(1);
        let (finished, done) = std::sync::mpsc::channel::<StripeDone>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..threads {
            let (queue, finished, coder) = (queue.clone(), finished.clone(), coder.clone());
            // A worker ends when the encoder drops its end of the job queue.
            std::thread::spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    // A panic is reported as this stripe's result: the other workers keep the channel open,
                    // so the encoder would otherwise wait for the stripe forever.
                    let encode = std::panic::AssertUnwindSafe(|| {
                        coder
                            .encode_new(&data)
                            .map(|parity| data.into_iter().chain(parity).map(|p| SHARD_FILE.leaf(p)).collect())
                    });
                    let leaves = std::panic::catch_unwind(encode).unwrap_or(Err(ErasureError::BugThread));
                    if finished.send((seq, leaves)).is_err() {
                        return;
                    }
                }
            });
        }
        Self { jobs, done, early: std::collections::BTreeMap::new(), in_flight: 0, next: 0, limit: threads + 1 }
    }

    fn send(&mut self, seq: u64, data: Vec<Vec<u8>>) -> Result<(), ErasureError> {
        self.jobs.send((seq, data)).map_err(|_| ErasureError::BugThread)?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next stripe's leaves in order, waiting for it.
    fn take(&mut self) -> Result<Vec<(Block, Link)>, ErasureError> {
        loop {
            if let Some(leaves) = self.early.remove(&self.next) {
                self.next += 1;
                self.in_flight -= 1;
                return Ok(leaves);
            }
            let (seq, leaves) = self.done.recv().map_err(|_| ErasureError::BugThread)?;
            self.early.insert(seq, leaves?);
        }
    }
}

impl ShardEncoder {
    /// An encoder for `params`, which must validate.
    pub fn new(params: ErasureParams) -> Result<Self, ErasureError> {
        Self::with_kernel(params, Kernel::detect())
    }

    /// An encoder for `params` whose parity comes from `kernel` (where this CPU runs it; the codec's
    /// otherwise): the benchmark's way to compare kernels. The shards are the same whatever the kernel.
    pub fn with_kernel(params: ErasureParams, kernel: Kernel) -> Result<Self, ErasureError> {
        let coder = ParityCoder::with_kernel(params, kernel)?;
        let piece = params.piece_size;
        Ok(Self {
            params,
            coder,
            data: (0..params.data_shards).map(|_| Vec::with_capacity(piece)).collect(),
            filling: 0,
            files: (0..params.total_shards()).map(|_| ShardFileBuilder::new(piece)).collect(),
            file_size: 0,
            stripes: 0,
            workers: None,
        })
    }

    /// Encodes on `threads` threads (default 1: no thread is started). With two or more, each thread takes
    /// whole stripes, parity and leaf hashing both (the hashing is of `(k + m) / k` times the input and, with
    /// the GFNI kernel, costs more than the parity), while the caller's thread fills the next stripes. The
    /// blocks still reach `emit` in the same order, on the caller's thread, up to `threads + 1` stripes later
    /// than without threads; memory grows by as many stripes.
    pub fn with_threads(mut self, threads: NonZeroUsize) -> Self {
        self.workers = (threads.get() > 1).then(|| StripeWorkers::start(threads.get(), &self.coder));
        self
    }

    /// The parameters this encoder was made with.
    pub fn params(&self) -> ErasureParams {
        self.params
    }

    /// Feeds the next bytes of the file.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(Block)) -> Result<(), ErasureError> {
        let piece = self.params.piece_size;
        self.file_size += data.len() as u64;
        while !data.is_empty() {
            let buf = &mut self.data[self.filling];
            let take = (piece - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == piece {
                self.filling += 1;
                if self.filling == self.params.data_shards {
                    self.flush_stripe(emit)?;
                }
            }
        }
        Ok(())
    }

    /// Encodes the full open stripe and hands each of its `k + m` pieces to its shard's file (with workers:
    /// hands the stripe to them, and any stripe now due out to the files).
    fn flush_stripe(&mut self, emit: &mut impl FnMut(Block)) -> Result<(), ErasureError> {
        let piece = self.params.piece_size;
        let data: Vec<Vec<u8>> =
            self.data.iter_mut().map(|buf| std::mem::replace(buf, Vec::with_capacity(piece))).collect();
        match &mut self.workers {
            None => {
                let parity = self.coder.encode_new(&data)?;
                for (file, piece) in self.files.iter_mut().zip(data.into_iter().chain(parity)) {
                    file.push_owned(piece, emit)?;
                }
            }
            Some(workers) => {
                workers.send(self.stripes, data)?;
                if workers.in_flight >= workers.limit {
                    let leaves = workers.take()?;
                    for (file, (block, link)) in self.files.iter_mut().zip(leaves) {
                        file.push_leaf(block, link, emit);
                    }
                }
            }
        }
        self.filling = 0;
        self.stripes += 1;
        Ok(())
    }

    /// Pads and encodes the last stripe, closes every shard file and reports them.
    pub fn finish(mut self, emit: &mut impl FnMut(Block)) -> Result<EncodedShards, ErasureError> {
        let piece = self.params.piece_size;
        let open = self.filling > 0 || self.data.first().is_some_and(|d| !d.is_empty());
        if open {
            for buf in &mut self.data {
                buf.resize(piece, 0);
            }
            self.flush_stripe(emit)?;
        }
        if let Some(workers) = &mut self.workers {
            while workers.in_flight > 0 {
                let leaves = workers.take()?;
                for (file, (block, link)) in self.files.iter_mut().zip(leaves) {
                    file.push_leaf(block, link, emit);
                }
            }
        }
        debug_assert_eq!(self.stripes, self.params.stripes(self.file_size));
        let shards = self.files.into_iter().map(|f| f.finish(emit)).collect();
        Ok(EncodedShards { file_size: self.file_size, stripes: self.stripes, shards })
    }
}

/// Rebuilds a file's bytes stripe by stripe from any `k` pieces of each stripe, and rebuilds lost shards.
#[derive(Debug)]
pub struct ShardDecoder {
    params: ErasureParams,
    codec: ReedSolomon,
    file_size: u64,
    stripes: u64,
    next: u64,
}

impl ShardDecoder {
    /// A decoder of a file of `file_size` bytes encoded with `params`.
    pub fn new(params: ErasureParams, file_size: u64) -> Result<Self, ErasureError> {
        let codec = params.codec()?;
        if params.shard_size(file_size).is_none() {
            return Err(ErasureError::FileTooLarge { file_size });
        }
        Ok(Self { params, codec, file_size, stripes: params.stripes(file_size), next: 0 })
    }

    /// Stripes in the file.
    pub fn stripes(&self) -> u64 {
        self.stripes
    }

    /// The stripe the next [`ShardDecoder::decode_stripe`] call decodes.
    pub fn next_stripe(&self) -> u64 {
        self.next
    }

    /// Decodes the next stripe from its `k + m` pieces (`None` for missing, at least `k` present): rebuilds the
    /// missing data pieces in place and returns the stripe's file bytes (the last stripe clipped to the file).
    ///
    /// Reed-Solomon cannot tell a wrong piece from a right one: pass only pieces checked against their leaf
    /// CIDs (as every block read from the store or a peer is).
    pub fn decode_stripe(&mut self, pieces: &mut [Option<Vec<u8>>]) -> Result<Vec<u8>, ErasureError> {
        let stripe = self.next;
        if stripe >= self.stripes {
            return Err(ErasureError::PastLastStripe { stripe, stripes: self.stripes });
        }
        self.check(stripe, pieces)?;
        self.codec.reconstruct_data(pieces)?;
        let stripe_size = self.params.stripe_size() as u64;
        let remaining = self.file_size - stripe * stripe_size;
        let len = usize::try_from(remaining.min(stripe_size)).unwrap_or(self.params.stripe_size());
        let mut out = Vec::with_capacity(len);
        for piece in pieces.iter().take(self.params.data_shards).flatten() {
            let take = (len - out.len()).min(piece.len());
            out.extend_from_slice(&piece[..take]);
        }
        debug_assert_eq!(out.len(), len);
        self.next += 1;
        Ok(out)
    }

    /// Fills in every missing piece of one stripe, data and parity (a repair: rebuild a lost shard's piece
    /// from any `k` others). Does not move the stripe cursor.
    pub fn reconstruct_all(&self, pieces: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        self.check(self.next, pieces)?;
        self.codec.reconstruct(pieces)?;
        Ok(())
    }

    fn check(&self, stripe: u64, pieces: &[Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let expected = self.params.total_shards();
        if pieces.len() != expected {
            return Err(ErasureError::PieceCount { got: pieces.len(), expected });
        }
        let mut present = 0;
        for (index, piece) in pieces.iter().enumerate() {
            if let Some(piece) = piece {
                if piece.len() != self.params.piece_size {
                    return Err(ErasureError::PieceLength {
                        index,
                        len: piece.len(),
                        expected: self.params.piece_size,
                    });
                }
                present += 1;
            }
        }
        if present < self.params.data_shards {
            return Err(ErasureError::TooFewPieces { stripe, present, needed: self.params.data_shards });
        }
        Ok(())
    }
}

/// Why a shard's leaves could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardLeavesError {
    #[error("block {cid} is not available")]
    Missing { cid: Cid },
    #[error(transparent)]
    Corrupt(#[from] VerifyError),
    #[error("block {cid} is not UnixFS")]
    Node { cid: Cid, source: NodeError },
    #[error("block {cid} is not a shard file node (a shard is a UnixFS file with raw leaves)")]
    NotAShard { cid: Cid },
    #[error("shard {root} is deeper than {MAX_DEPTH} levels")]
    TooDeep { root: Cid },
}

/// The CIDs of a shard's leaves in order (leaf `i` is piece `i`, from stripe `i`), fetching only its internal
/// nodes through `get`, each checked against its CID. A one-piece shard is its own single leaf.
pub fn shard_leaves(root: &Cid, get: &mut impl FnMut(&Cid) -> Option<Vec<u8>>) -> Result<Vec<Cid>, ShardLeavesError> {
    let mut out = Vec::new();
    // Depth-first, children pushed in reverse so they pop in file order.
    let mut stack = vec![(*root, 0usize)];
    while let Some((cid, depth)) = stack.pop() {
        if cid.codec() == RAW {
            out.push(cid);
            continue;
        }
        if cid.codec() != dagpb::CODEC {
            return Err(ShardLeavesError::NotAShard { cid });
        }
        if depth >= MAX_DEPTH {
            return Err(ShardLeavesError::TooDeep { root: *root });
        }
        let data = get(&cid).ok_or(ShardLeavesError::Missing { cid })?;
        hash::verify(&cid, &data)?;
        let node = UnixfsNode::decode(&cid, &data).map_err(|source| ShardLeavesError::Node { cid, source })?;
        let UnixfsNode::File { own, children, .. } = node else {
            return Err(ShardLeavesError::NotAShard { cid });
        };
        if !own.is_empty() || children.is_empty() {
            return Err(ShardLeavesError::NotAShard { cid });
        }
        stack.extend(children.iter().rev().map(|(c, _)| (*c, depth + 1)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::chunk::import_bytes;
    use crate::import::{ChunkSize, Options};

    fn params(k: usize, m: usize, piece: usize) -> ErasureParams {
        ErasureParams { data_shards: k, parity_shards: m, piece_size: piece }
    }

    use crate::testdata::bytes;

    struct Encoded {
        shards: EncodedShards,
        blocks: HashMap<Cid, Vec<u8>>,
    }

    /// Encodes `data` fed in slices of `write` bytes.
    fn encode(p: ErasureParams, data: &[u8], write: usize) -> Encoded {
        let mut blocks = HashMap::new();
        let mut emit = |b: Block| {
            blocks.insert(b.cid, b.data);
        };
        let mut enc = ShardEncoder::new(p).expect("valid params");
        for part in data.chunks(write.max(1)) {
            enc.push(part, &mut emit).expect("push");
        }
        let shards = enc.finish(&mut emit).expect("finish");
        Encoded { shards, blocks }
    }

    /// Every shard's pieces, read back through `shard_leaves`: `pieces[shard][stripe]`.
    fn pieces(e: &Encoded) -> Vec<Vec<Vec<u8>>> {
        let mut get = |c: &Cid| e.blocks.get(c).cloned();
        e.shards
            .shards
            .iter()
            .map(|s| {
                let leaves = shard_leaves(&s.cid, &mut get).expect("leaves");
                leaves.iter().map(|l| e.blocks[l].clone()).collect()
            })
            .collect()
    }

    /// Decodes with the shards in `drop` missing.
    fn decode(p: ErasureParams, e: &Encoded, drop: &[usize]) -> Vec<u8> {
        let all = pieces(e);
        let mut dec = ShardDecoder::new(p, e.shards.file_size).expect("decoder");
        let mut out = Vec::new();
        for stripe in 0..dec.stripes() {
            let i = usize::try_from(stripe).expect("small");
            let mut stripe_pieces: Vec<Option<Vec<u8>>> =
                (0..p.total_shards()).map(|j| (!drop.contains(&j)).then(|| all[j][i].clone())).collect();
            out.extend(dec.decode_stripe(&mut stripe_pieces).expect("decode"));
        }
        out
    }

    const SMALL: usize = 128;

    fn sizes(p: ErasureParams) -> Vec<usize> {
        let stripe = p.stripe_size();
        vec![0, 1, p.piece_size - 1, p.piece_size, stripe - 1, stripe, stripe + 1, 5 * stripe + 77]
    }

    #[test]
    fn params_bounds() {
        assert_eq!(ErasureParams::default().validate(), Ok(()));
        assert_eq!(ErasureParams::default().stripe_size(), 10 * 256 * 1024);
        let cases = [
            (params(0, 2, 64), ParamsError::NoDataShards),
            (params(2, 0, 64), ParamsError::NoParityShards),
            (params(200, 57, 64), ParamsError::TooManyShards { data: 200, parity: 57 }),
            (params(2, 2, 0), ParamsError::PieceSize { size: 0 }),
            (params(2, 2, 100), ParamsError::PieceSize { size: 100 }),
            (params(2, 2, MAX_PIECE_SIZE + 64), ParamsError::PieceSize { size: MAX_PIECE_SIZE + 64 }),
        ];
        for (p, err) in cases {
            assert_eq!(p.validate(), Err(err), "{p:?}");
        }
        assert_eq!(params(128, 128, MAX_PIECE_SIZE).validate(), Ok(()));
    }

    #[test]
    fn every_size_survives_the_loss_of_any_m_shards() {
        for p in [params(3, 2, SMALL), params(4, 4, SMALL), params(10, 20, 1024)] {
            for (n, len) in sizes(p).into_iter().enumerate() {
                let data = bytes(len, n as u64);
                let e = encode(p, &data, 1000);
                assert_eq!(e.shards.stripes, p.stripes(len as u64));
                assert_eq!(e.shards.shards.len(), p.total_shards());
                for s in &e.shards.shards {
                    assert_eq!(Some(s.size), p.shard_size(len as u64));
                }
                // Drop the first m, the last m, and every other shard up to m.
                let m = p.parity_shards;
                let k = p.data_shards;
                let first: Vec<usize> = (0..m).collect();
                let last: Vec<usize> = (k..k + m).collect();
                let spread: Vec<usize> = (0..k + m).step_by(2).take(m).collect();
                for drop in [&first, &last, &spread] {
                    assert_eq!(decode(p, &e, drop), data, "{p:?} len {len} drop {drop:?}");
                }
            }
        }
    }

    #[test]
    fn threads_change_nothing_but_speed() {
        let p = params(10, 20, 1024);
        let data = bytes(10 * 1024 * 200 + 11, 4);
        let one = encode(p, &data, 5000);
        for threads in [2usize, 3, 7, 64] {
            let mut blocks = HashMap::new();
            let mut emit = |b: Block| {
                blocks.insert(b.cid, b.data);
            };
            let mut enc = ShardEncoder::new(p).expect("valid").with_threads(NonZeroUsize::new(threads).expect("> 0"));
            enc.push(&data, &mut emit).expect("push");
            let shards = enc.finish(&mut emit).expect("finish");
            assert_eq!(shards, one.shards, "{threads} threads");
            assert!(blocks == one.blocks, "{threads} threads: the same blocks");
        }
    }

    #[test]
    fn empty_file_has_no_stripes_and_empty_shards() {
        let p = params(3, 2, SMALL);
        let e = encode(p, &[], 1);
        assert_eq!(e.shards.stripes, 0);
        // The empty UnixFS file with raw leaves is the empty raw block, as `add --cid-version=1 --hash=blake3`
        // makes it.
        let empty = CidParams { version: CidVersion::V1, hash: HashFunction::Blake3, ..CidParams::V0 }.cid(RAW, &[]);
        assert!(e.shards.shards.iter().all(|s| s.cid == empty && s.size == 0));
        let mut dec = ShardDecoder::new(p, 0).expect("decoder");
        let mut none: Vec<Option<Vec<u8>>> = vec![None; 5];
        assert_eq!(dec.decode_stripe(&mut none), Err(ErasureError::PastLastStripe { stripe: 0, stripes: 0 }));
    }

    #[test]
    fn shard_cid_equals_add_of_the_shard_bytes() {
        // The outside reference is the importer driven by kubo's flags, not the shard builder itself.
        let p = params(4, 2, 1024);
        let data = bytes(4 * 1024 * 200 + 5, 1);
        let e = encode(p, &data, 4096);
        let opts = Options {
            cid_version: Some(1),
            chunk_size: ChunkSize::new(1024),
            hash: Some(HashFunction::Blake3),
            ..Default::default()
        };
        let add = opts.resolve().expect("valid");
        for (j, shard) in pieces(&e).iter().enumerate() {
            let (root, _) = import_bytes(&add, &shard.concat());
            assert_eq!(root.cid, e.shards.shards[j].cid, "shard {j}");
        }
        // The data shards hold the file itself, piece by piece.
        let all = pieces(&e);
        assert_eq!(&all[0][0][..], &data[..1024]);
        assert_eq!(&all[1][0][..], &data[1024..2048]);
        assert_eq!(&all[0][1][..], &data[4096..5120]);
    }

    #[test]
    fn a_lost_shard_is_rebuilt_to_its_original_cid() {
        let p = params(10, 20, 1024);
        let data = bytes(10 * 1024 * 180 + 3, 9);
        let e = encode(p, &data, 1 << 20);
        let all = pieces(&e);
        let dec = ShardDecoder::new(p, e.shards.file_size).expect("decoder");
        for lost in [0usize, 9, 10, 29] {
            let mut rebuilt = ShardFileBuilder::new(p.piece_size);
            let mut blocks = Vec::new();
            for stripe in 0..dec.stripes() {
                let stripe = usize::try_from(stripe).expect("small");
                // Keep k shards only, none of them the lost one.
                let keep: Vec<usize> = (0..30).filter(|&j| j != lost).rev().take(10).collect();
                let mut ps: Vec<Option<Vec<u8>>> =
                    (0..30).map(|j| keep.contains(&j).then(|| all[j][stripe].clone())).collect();
                dec.reconstruct_all(&mut ps).expect("reconstruct");
                let piece = ps[lost].take().expect("rebuilt");
                rebuilt.push_piece(&piece, &mut |b| blocks.push(b)).expect("piece");
            }
            let info = rebuilt.finish(&mut |b| blocks.push(b));
            assert_eq!(info, e.shards.shards[lost], "shard {lost}");
        }
    }

    #[test]
    fn decoder_errors_name_what_is_wrong() {
        let p = params(3, 2, SMALL);
        let mut dec = ShardDecoder::new(p, 1000).expect("decoder");
        let full = || Some(vec![0u8; SMALL]);
        let mut short = vec![full(), full(), None, None, None];
        assert_eq!(dec.decode_stripe(&mut short), Err(ErasureError::TooFewPieces { stripe: 0, present: 2, needed: 3 }));
        let mut wrong = vec![full(), Some(vec![0u8; 7]), full(), None, None];
        assert_eq!(dec.decode_stripe(&mut wrong), Err(ErasureError::PieceLength { index: 1, len: 7, expected: SMALL }));
        let mut four = vec![full(), full(), full(), full()];
        assert_eq!(dec.decode_stripe(&mut four), Err(ErasureError::PieceCount { got: 4, expected: 5 }));
        let mut b = ShardFileBuilder::new(SMALL);
        assert_eq!(
            b.push_piece(&[1, 2], &mut |_| {}),
            Err(ErasureError::PieceLength { index: 0, len: 2, expected: SMALL })
        );
    }

    #[test]
    fn shard_leaves_refuses_what_is_not_a_shard() {
        let mut blocks = HashMap::new();
        let node = dagpb::PbNode { links: Vec::new(), data: Some(crate::unixfs::Data::directory().encode()) };
        let block = CidParams::V0.block(dagpb::CODEC, node.encode());
        blocks.insert(block.cid, block.data.clone());
        let mut get = |c: &Cid| blocks.get(c).cloned();
        assert_eq!(shard_leaves(&block.cid, &mut get), Err(ShardLeavesError::NotAShard { cid: block.cid }));
        let absent = CidParams::V0.cid(dagpb::CODEC, b"absent");
        assert_eq!(shard_leaves(&absent, &mut get), Err(ShardLeavesError::Missing { cid: absent }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_k_of_k_plus_m_shards_rebuild_the_file(
            k in 1usize..8,
            m in 1usize..8,
            len in 0usize..6000,
            write in 1usize..3000,
            seed in any::<u64>(),
            drop_seed in any::<u64>(),
        ) {
            let p = params(k, m, 64);
            let data = bytes(len, seed);
            let e = encode(p, &data, write);
            // A random subset of m shards to drop, chosen by a seeded shuffle.
            let mut order: Vec<usize> = (0..k + m).collect();
            let mut x = drop_seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, usize::try_from(x % (i as u64 + 1)).expect("small"));
            }
            let drop = &order[..m];
            prop_assert_eq!(decode(p, &e, drop), data);
        }
    }
}
