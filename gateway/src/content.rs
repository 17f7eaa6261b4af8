//! Reading UnixFS through a [`ContentSource`]: path resolution (plain and HAMT directories), file bytes as a
//! stream with read-ahead, and directory entries.
//!
//! Streams are produced by a spawned task that walks the DAG depth-first and fetches up to [`PREFETCH`]
//! children of a node at once, in order, into a bounded channel: memory per response is a few blocks per
//! level, and a slow client slows the walk instead of filling memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_chunker::links::{DAG_CBOR, DAG_JSON, PathStep, resolve_in_block};
use btfs_chunker::walk::{self, HamtStep, MAX_DEPTH, MAX_HAMT_DEPTH, NodeError, UnixfsNode};
use bytes::Bytes;
use futures::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::source::{ContentSource, Fetch, Origin, SourceError};

/// Blocks fetched ahead of the one being sent, per DAG level.
pub(crate) const PREFETCH: usize = 8;
/// Stream items (file segments or CAR sections) waiting for the connection.
pub(crate) const CHANNEL: usize = 16;

/// Why content could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContentError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("no link named {name:?} under {cid}")]
    NoLink { cid: Cid, name: String },
    #[error("{cid} is a file, not a directory, so it has no {name:?}")]
    NotDirectory { cid: Cid, name: String },
    #[error("{cid} is not valid UnixFS: {reason}")]
    Malformed { cid: Cid, reason: String },
    #[error("DAG under {cid} is deeper than {MAX_DEPTH} levels")]
    TooDeep { cid: Cid },
    #[error("{cid} has sizes that do not add up")]
    Sizes { cid: Cid },
    #[error("the request took longer than the gateway's limit")]
    Deadline,
    #[error("the path ends inside block {cid}, on a value that is not a link")]
    InsideBlock { cid: Cid },
}

impl ContentError {
    pub(crate) fn malformed(cid: &Cid, e: impl std::fmt::Display) -> Self {
        Self::Malformed { cid: *cid, reason: e.to_string() }
    }
}

/// A block reader for one request: remembers whether anything came from the network, and enforces the
/// per-block time limit.
pub(crate) struct Blocks<S> {
    source: Arc<S>,
    fetch: Fetch,
    timeout: Duration,
    used_network: Arc<AtomicBool>,
}

impl<S> Clone for Blocks<S> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            fetch: self.fetch,
            timeout: self.timeout,
            used_network: self.used_network.clone(),
        }
    }
}

impl<S: ContentSource> Blocks<S> {
    pub(crate) fn new(source: Arc<S>, fetch: Fetch, timeout: Duration) -> Self {
        Self { source, fetch, timeout, used_network: Arc::new(AtomicBool::new(false)) }
    }

    pub(crate) async fn get(&self, cid: &Cid) -> Result<Bytes, ContentError> {
        let (data, origin) = match tokio::time::timeout(self.timeout, self.source.get(cid, self.fetch)).await {
            Ok(result) => result?,
            Err(_) => return Err(SourceError::Timeout(*cid).into()),
        };
        if origin == Origin::Network {
            self.used_network.store(true, Ordering::Relaxed);
        }
        Ok(data)
    }

    /// Reads several blocks in one call to the source (in order), each under the per-block time limit.
    pub(crate) async fn get_many(&self, cids: &[Cid]) -> Vec<Result<Bytes, ContentError>> {
        let limit = self.timeout.saturating_mul(u32::try_from(cids.len().max(1)).unwrap_or(u32::MAX));
        match tokio::time::timeout(limit, self.source.get_many(cids, self.fetch)).await {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    let (data, origin) = r?;
                    if origin == Origin::Network {
                        self.used_network.store(true, Ordering::Relaxed);
                    }
                    Ok(data)
                })
                .collect(),
            Err(_) => cids.iter().map(|c| Err(SourceError::Timeout(*c).into())).collect(),
        }
    }

    pub(crate) fn used_network(&self) -> bool {
        self.used_network.load(Ordering::Relaxed)
    }
}

pub(crate) fn decode(cid: &Cid, data: &[u8]) -> Result<UnixfsNode, ContentError> {
    UnixfsNode::decode(cid, data).map_err(|e: NodeError| ContentError::malformed(cid, e))
}

/// A path resolved to its last block.
pub(crate) struct Resolved {
    pub cid: Cid,
    pub block: Bytes,
    /// The CID of the root and of each path segment, in order (`X-Ipfs-Roots`).
    pub roots: Vec<Cid>,
    /// Every block read on the way, in order, the terminal block last (CAR responses start with them).
    pub path_blocks: Vec<(Cid, Bytes)>,
}

/// Follows `segments` from `root` through UnixFS directories (plain and HAMT) and through the maps, lists
/// and links of dag-cbor and dag-json blocks.
pub(crate) async fn resolve<S: ContentSource>(
    blocks: &Blocks<S>,
    root: Cid,
    segments: &[String],
) -> Result<Resolved, ContentError> {
    let mut cid = root;
    let mut block = blocks.get(&cid).await?;
    let mut roots = vec![cid];
    let mut path_blocks = vec![(cid, block.clone())];
    let mut index = 0;
    // Every hop reads a block; a chain of blocks that are nothing but links still ends here.
    for _ in 0..segments.len() + MAX_LINK_HOPS {
        if index == segments.len() {
            return Ok(Resolved { cid, block, roots, path_blocks });
        }
        let next = match cid.codec() {
            DAG_CBOR | DAG_JSON => match resolve_in_block(&cid, &block, &segments[index..])
                .map_err(|e| ContentError::malformed(&cid, e))?
            {
                PathStep::Link { cid: target, consumed } => {
                    index += consumed;
                    target
                }
                PathStep::Value => return Err(ContentError::InsideBlock { cid }),
                PathStep::Missing { index: at } => {
                    return Err(ContentError::NoLink { cid, name: segments[index + at].clone() });
                }
            },
            _ => {
                let name = &segments[index];
                index += 1;
                unixfs_child(blocks, cid, &block, name, &mut path_blocks).await?
            }
        };
        cid = next;
        block = blocks.get(&cid).await?;
        roots.push(cid);
        path_blocks.push((cid, block.clone()));
    }
    Err(ContentError::TooDeep { cid })
}

/// Links followed inside IPLD blocks without consuming a path segment (a block that is only a link).
const MAX_LINK_HOPS: usize = 64;

/// The entry `name` of the UnixFS directory `cid`, recording the HAMT shards read on the way.
async fn unixfs_child<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: &Bytes,
    name: &str,
    path_blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<Cid, ContentError> {
    match decode(&cid, block)? {
        UnixfsNode::Directory { entries } => entries
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.cid)
            .ok_or_else(|| ContentError::NoLink { cid, name: name.to_string() }),
        UnixfsNode::HamtShard { mut links } => {
            for depth in 0..MAX_HAMT_DEPTH {
                match walk::hamt_step(&links, name, depth) {
                    HamtStep::Found(target) => return Ok(target),
                    HamtStep::Absent => return Err(ContentError::NoLink { cid, name: name.to_string() }),
                    HamtStep::Descend(shard) => {
                        let data = blocks.get(&shard).await?;
                        path_blocks.push((shard, data.clone()));
                        match decode(&shard, &data)? {
                            UnixfsNode::HamtShard { links: inner } => links = inner,
                            _ => return Err(ContentError::malformed(&shard, "HAMT link to a non-shard")),
                        }
                    }
                }
            }
            Err(ContentError::TooDeep { cid })
        }
        _ => Err(ContentError::NotDirectory { cid, name: name.to_string() }),
    }
}

/// The size of a file node, after checking that its own bytes and its children's sizes add up to it.
pub(crate) fn file_size(cid: &Cid, node: &UnixfsNode) -> Result<u64, ContentError> {
    let UnixfsNode::File { own, children, filesize } = node else {
        return Err(ContentError::malformed(cid, "not a file"));
    };
    let sum = children.iter().try_fold(own.len() as u64, |acc, (_, size)| acc.checked_add(*size));
    match sum {
        Some(total) if total == *filesize => Ok(total),
        _ => Err(ContentError::Sizes { cid: *cid }),
    }
}

/// Streams bytes `[from, to)` of the file whose root block is `block`.
pub(crate) fn stream_file<S: ContentSource>(
    blocks: Blocks<S>,
    cid: Cid,
    block: Bytes,
    from: u64,
    to: u64,
) -> mpsc::Receiver<Result<Bytes, ContentError>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut emit = |seg: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(seg)).await.is_ok() }
        };
        let walk = match decode(&cid, &block) {
            Ok(node) => walk_file(&blocks, cid, block, node, 0, from, to, 0, &mut emit).await,
            Err(e) => Err(e),
        };
        if let Err(e) = walk {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// Reads bytes `[from, to)` of a file into memory (for sniffing the first bytes).
pub(crate) async fn read_range<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: Bytes,
    from: u64,
    to: u64,
) -> Result<Vec<u8>, ContentError> {
    let mut out = Vec::new();
    let mut emit = |seg: Bytes| {
        out.extend_from_slice(&seg);
        async { true }
    };
    let node = decode(&cid, &block)?;
    walk_file(blocks, cid, block, node, 0, from, to, 0, &mut emit).await?;
    Ok(out)
}

/// The walk behind [`stream_file`]: emits the part of the file DAG at `cid` (its block and what it decodes
/// to; starting at byte `start` of the file) that falls in `[from, to)`. Returns false once `emit` asks to
/// stop (the client went away).
#[allow(clippy::too_many_arguments)]
async fn walk_file<S, F, Fut>(
    blocks: &Blocks<S>,
    cid: Cid,
    block: Bytes,
    node: UnixfsNode,
    start: u64,
    from: u64,
    to: u64,
    depth: usize,
    emit: &mut F,
) -> Result<bool, ContentError>
where
    S: ContentSource,
    F: FnMut(Bytes) -> Fut + Send,
    Fut: std::future::Future<Output = bool> + Send,
{
    if depth > MAX_DEPTH {
        return Err(ContentError::TooDeep { cid });
    }
    let UnixfsNode::File { own, children, .. } = node else {
        return Err(ContentError::malformed(&cid, "a file links to something that is not file data"));
    };
    if let Some((lo, hi)) = walk::clip(start, own.len(), from, to)
        && !emit(block.slice(own.start + lo..own.start + hi)).await
    {
        return Ok(false);
    }
    drop(block);
    let wanted = children_in_range(cid, start, own.len(), children, from, to)?;
    // Children are read PREFETCH at a time, in one call to the source; the walk reaches the connection
    // through a bounded channel, so reading the next batch overlaps with sending this one.
    for batch in wanted.chunks(PREFETCH) {
        let cids: Vec<Cid> = batch.iter().map(|(c, ..)| *c).collect();
        let datas = blocks.get_many(&cids).await;
        for (&(child, child_start, size), data) in batch.iter().zip(datas) {
            if !file_child(blocks, child, data?, child_start, size, from, to, depth, emit).await? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The children of the file node `cid` (which starts at byte `start` of the file and holds `own` bytes
/// itself) that overlap `[from, to)`: each with where it starts and how many bytes its parent says it holds.
pub(crate) fn children_in_range(
    cid: Cid,
    start: u64,
    own: usize,
    children: Vec<(Cid, u64)>,
    from: u64,
    to: u64,
) -> Result<Vec<(Cid, u64, u64)>, ContentError> {
    let mut at = start.checked_add(own as u64).ok_or(ContentError::Sizes { cid })?;
    let mut wanted = Vec::new();
    for (child, size) in children {
        let end = at.checked_add(size).ok_or(ContentError::Sizes { cid })?;
        if end > from && at < to {
            wanted.push((child, at, size));
        }
        at = end;
    }
    Ok(wanted)
}

/// One child of a file node: checks its size against what the parent claims, then walks it.
#[allow(clippy::too_many_arguments)]
async fn file_child<S, F, Fut>(
    blocks: &Blocks<S>,
    child: Cid,
    data: Bytes,
    child_start: u64,
    size: u64,
    from: u64,
    to: u64,
    depth: usize,
    emit: &mut F,
) -> Result<bool, ContentError>
where
    S: ContentSource,
    F: FnMut(Bytes) -> Fut + Send,
    Fut: std::future::Future<Output = bool> + Send,
{
    let node = decode(&child, &data)?;
    if file_size(&child, &node)? != size {
        return Err(ContentError::Sizes { cid: child });
    }
    Box::pin(walk_file(blocks, child, data, node, child_start, from, to, depth + 1, emit)).await
}

/// Every entry of a directory, plain or HAMT (for HAMTs, fetching the shard nodes of this directory only).
pub(crate) async fn dir_entries<S: ContentSource>(
    blocks: &Blocks<S>,
    cid: Cid,
    node: UnixfsNode,
) -> Result<Vec<walk::Entry>, ContentError> {
    match node {
        UnixfsNode::Directory { entries } => Ok(entries),
        UnixfsNode::HamtShard { links } => {
            let mut entries = Vec::new();
            let mut level = vec![(cid, links)];
            for _ in 0..MAX_HAMT_DEPTH {
                let mut shards = Vec::new();
                for (shard, links) in level {
                    for link in &links {
                        match walk::hamt_entry(link).map_err(|e| ContentError::malformed(&shard, e))? {
                            Some(entry) => entries.push(entry),
                            None => shards.push(link.hash),
                        }
                    }
                }
                if shards.is_empty() {
                    entries.sort_by(|a, b| a.name.cmp(&b.name));
                    return Ok(entries);
                }
                let mut next = Vec::new();
                let mut fetched =
                    stream::iter(shards).map(|s| async move { (s, blocks.get(&s).await) }).buffered(PREFETCH);
                while let Some((shard, data)) = fetched.next().await {
                    match decode(&shard, &data?)? {
                        UnixfsNode::HamtShard { links } => next.push((shard, links)),
                        _ => return Err(ContentError::malformed(&shard, "HAMT link to a non-shard")),
                    }
                }
                level = next;
            }
            Err(ContentError::TooDeep { cid })
        }
        _ => Err(ContentError::malformed(&cid, "not a directory")),
    }
}
