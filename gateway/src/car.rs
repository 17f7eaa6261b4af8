//! Streaming CARv1 responses for the trustless gateway: the blocks of the path, then the terminal DAG as
//! `dag-scope` and `entity-bytes` select, depth-first, each block once unless `car-dups=y`.

use std::collections::HashSet;

use btfs_chunker::Cid;
use btfs_chunker::car::encode_header;
use btfs_chunker::hash::Multihash;
use btfs_chunker::links::links;
use btfs_chunker::walk::{self, MAX_DEPTH, UnixfsNode};
use btfs_chunker::{block::RAW, dagpb, varint};
use bytes::Bytes;
use futures::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::content::{Blocks, CHANNEL, ContentError, PREFETCH, Resolved, children_in_range, decode, file_size};
use crate::request::{CarParams, DagScope};
use crate::source::ContentSource;

/// Distinct blocks remembered for de-duplication; past this, duplicates may be sent (still a valid CAR).
const MAX_SEEN: usize = 4 << 20;

struct Writer {
    tx: mpsc::Sender<Result<Bytes, ContentError>>,
    dups: bool,
    seen: HashSet<Multihash>,
}

/// What became of a block handed to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// Sent before, and `car-dups=n`: neither it nor what is under it needs sending again.
    Duplicate,
    /// The client went away.
    Closed,
}

impl Sent {
    /// Whether a walk stops here, and with what: `None` to go on into the block's children, `Some(true)`
    /// to skip them (already sent), `Some(false)` when the client is gone.
    fn stop(self) -> Option<bool> {
        match self {
            Sent::Yes => None,
            Sent::Duplicate => Some(true),
            Sent::Closed => Some(false),
        }
    }
}

impl Writer {
    async fn block(&mut self, cid: &Cid, data: &Bytes) -> bool {
        self.section(cid, data).await != Sent::Closed
    }

    /// Sends one CAR section.
    async fn section(&mut self, cid: &Cid, data: &Bytes) -> Sent {
        // An identity CID carries its block inside itself; the trustless gateway spec never sends it.
        if cid.hash().code() == btfs_chunker::hash::IDENTITY {
            return Sent::Yes;
        }
        if !self.dups && !self.seen.insert(*cid.hash()) {
            return Sent::Duplicate;
        }
        if self.seen.len() > MAX_SEEN {
            self.seen.clear();
        }
        let cid_bytes = cid.to_bytes();
        let mut head = Vec::with_capacity(cid_bytes.len() + 10);
        varint::encode((cid_bytes.len() + data.len()) as u64, &mut head);
        head.extend_from_slice(&cid_bytes);
        let ok = self.tx.send(Ok(Bytes::from(head))).await.is_ok() && self.tx.send(Ok(data.clone())).await.is_ok();
        if ok { Sent::Yes } else { Sent::Closed }
    }
}

/// Streams the CAR for a resolved path: header with the request's root CID, the path's blocks, then the
/// terminal DAG per `params`.
pub(crate) fn stream_car<S: ContentSource>(
    blocks: Blocks<S>,
    root: Cid,
    resolved: Resolved,
    params: CarParams,
) -> mpsc::Receiver<Result<Bytes, ContentError>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut w = Writer { tx: tx.clone(), dups: params.dups, seen: HashSet::new() };
        if let Err(e) = write_car(&blocks, root, resolved, &params, &mut w).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn write_car<S: ContentSource>(
    blocks: &Blocks<S>,
    root: Cid,
    resolved: Resolved,
    params: &CarParams,
    w: &mut Writer,
) -> Result<(), ContentError> {
    if w.tx.send(Ok(Bytes::from(encode_header(&[root])))).await.is_err() {
        return Ok(());
    }
    let Resolved { cid, block, mut path_blocks, .. } = resolved;
    // The terminal block is sent by the scope walk below (so that its duplicates follow the same rule).
    path_blocks.pop();
    for (c, data) in &path_blocks {
        if !w.block(c, data).await {
            return Ok(());
        }
    }
    let unixfs = matches!(cid.codec(), RAW | dagpb::CODEC);
    match params.scope {
        DagScope::Block => {
            w.block(&cid, &block).await;
        }
        DagScope::Entity | DagScope::All if unixfs => {
            let node = decode(&cid, &block)?;
            match node {
                UnixfsNode::File { .. } => {
                    let size = file_size(&cid, &node)?;
                    let range = match params.entity_bytes {
                        Some(eb) => eb.resolve(size),
                        None => Some((0, size)),
                    };
                    match range {
                        Some((from, to)) => {
                            file_blocks(blocks, cid, block, 0, from, to, 0, w).await?;
                        }
                        // An empty range still proves the file's root.
                        None => {
                            w.block(&cid, &block).await;
                        }
                    }
                }
                UnixfsNode::HamtShard { .. } if params.scope == DagScope::Entity => {
                    hamt_blocks(blocks, cid, block, w).await?;
                }
                UnixfsNode::Directory { .. } | UnixfsNode::Symlink { .. } | UnixfsNode::HamtShard { .. }
                    if params.scope == DagScope::Entity =>
                {
                    w.block(&cid, &block).await;
                }
                _ => {
                    all_blocks(blocks, cid, block, 0, w).await?;
                }
            }
        }
        DagScope::Entity => {
            w.block(&cid, &block).await;
        }
        DagScope::All => {
            all_blocks(blocks, cid, block, 0, w).await?;
        }
    }
    Ok(())
}

/// Sends the blocks of a file DAG that cover `[from, to)`, depth-first: each node, then its children.
#[allow(clippy::too_many_arguments)]
async fn file_blocks<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: Bytes,
    start: u64,
    from: u64,
    to: u64,
    depth: usize,
    w: &mut Writer,
) -> Result<bool, ContentError> {
    if depth > MAX_DEPTH {
        return Err(ContentError::TooDeep { cid });
    }
    if let Some(done) = w.section(&cid, &block).await.stop() {
        return Ok(done);
    }
    let UnixfsNode::File { own, children, .. } = decode(&cid, &block)? else {
        return Err(ContentError::malformed(&cid, "a file links to something that is not file data"));
    };
    drop(block);
    // Read PREFETCH children per call to the source, as file responses do.
    let wanted = children_in_range(cid, start, own.len(), children, from, to)?;
    for batch in wanted.chunks(PREFETCH) {
        let cids: Vec<Cid> = batch.iter().map(|(c, ..)| *c).collect();
        for (&(child, child_start, _), data) in batch.iter().zip(blocks.get_many(&cids).await) {
            let walk = Box::pin(file_blocks(blocks, child, data?, child_start, from, to, depth + 1, w));
            if !walk.await? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Sends a HAMT directory's own shard nodes (not the entries' contents), depth-first.
async fn hamt_blocks<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: Bytes,
    w: &mut Writer,
) -> Result<(), ContentError> {
    let mut stack = vec![(cid, block, 0usize)];
    while let Some((cid, block, depth)) = stack.pop() {
        if depth > walk::MAX_HAMT_DEPTH {
            return Err(ContentError::TooDeep { cid });
        }
        if !w.block(&cid, &block).await {
            return Ok(());
        }
        let UnixfsNode::HamtShard { links } = decode(&cid, &block)? else {
            return Err(ContentError::malformed(&cid, "HAMT link to a non-shard"));
        };
        let mut shards = Vec::new();
        for link in &links {
            if walk::hamt_entry(link).map_err(|e| ContentError::malformed(&cid, e))?.is_none() {
                shards.push(link.hash);
            }
        }
        let mut fetched = Vec::with_capacity(shards.len());
        let mut pending = stream::iter(shards).map(|s| async move { (s, blocks.get(&s).await) }).buffered(PREFETCH);
        while let Some((s, data)) = pending.next().await {
            fetched.push((s, data?, depth + 1));
        }
        // Reverse so that the first shard is popped first: depth-first, in link order.
        stack.extend(fetched.into_iter().rev());
    }
    Ok(())
}

/// Sends every block reachable from `cid`, depth-first in link order.
async fn all_blocks<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: Bytes,
    depth: usize,
    w: &mut Writer,
) -> Result<bool, ContentError> {
    if depth > MAX_DEPTH {
        return Err(ContentError::TooDeep { cid });
    }
    if let Some(done) = w.section(&cid, &block).await.stop() {
        return Ok(done);
    }
    let children = links(&cid, &block).map_err(|e| ContentError::malformed(&cid, e))?;
    drop(block);
    let mut fetched = stream::iter(children).map(|c| async move { (c, blocks.get(&c).await) }).buffered(PREFETCH);
    while let Some((child, data)) = fetched.next().await {
        if !Box::pin(all_blocks(blocks, child, data?, depth + 1, w)).await? {
            return Ok(false);
        }
    }
    Ok(true)
}
