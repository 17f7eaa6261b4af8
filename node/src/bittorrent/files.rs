//! A seeded torrent's files read from the block store: each file's UnixFS DAG is walked once into a table of
//! leaves (offset, CID, byte range), and reads pick leaves from it through a small cache, so the engine's
//! 16 KiB requests do not each walk the DAG from the root.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use btfs_chunker::Cid;
use btfs_chunker::block::RAW;
use btfs_chunker::walk::UnixfsNode;
use hashlink::LruCache;

use super::engine::SeedFiles;
use crate::Node;

/// Leaves kept decoded: a few per peer being served.
const LEAF_CACHE: usize = 64;
/// Deepest DAG walked (kubo's balanced layout reaches depth 4 at 2 TiB).
const MAX_DEPTH: usize = 32;

/// One file of the torrent.
#[derive(Debug, Clone)]
pub enum SeedFile {
    /// The UnixFS file with this root and length.
    Stored { cid: Cid, length: u64 },
    /// A BEP 47 padding file: zeros, never stored.
    Padding { length: u64 },
    /// A file not imported (left out with `--only`): reads fail, so its pieces are not offered.
    Missing,
}

/// A run of file bytes held by one leaf block.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    offset: u64,
    cid: Cid,
    start: usize,
    len: usize,
}

/// Reads torrent files out of the block store.
pub struct StoreFiles {
    node: Arc<Node>,
    files: Vec<SeedFile>,
    leaves: Vec<OnceLock<Result<Vec<Leaf>, String>>>,
    cache: Mutex<LruCache<Cid, Arc<Vec<u8>>>>,
}

impl StoreFiles {
    pub fn new(node: Arc<Node>, files: Vec<SeedFile>) -> Self {
        let leaves = files.iter().map(|_| OnceLock::new()).collect();
        Self { node, files, leaves, cache: Mutex::new(LruCache::new(LEAF_CACHE)) }
    }

    fn leaves(&self, file: usize, cid: &Cid) -> Result<&[Leaf], String> {
        let table = self.leaves[file].get_or_init(|| {
            let mut out = Vec::new();
            self.walk(cid, 0, 0, &mut out).map(|_| out)
        });
        table.as_deref().map_err(Clone::clone)
    }

    /// Appends the leaves of the DAG at `cid`, which starts at byte `at`; returns the byte after it.
    fn walk(&self, cid: &Cid, at: u64, depth: usize, out: &mut Vec<Leaf>) -> Result<u64, String> {
        if depth > MAX_DEPTH {
            return Err(format!("the DAG under {cid} is deeper than {MAX_DEPTH}"));
        }
        let block = self.block(cid)?;
        let node = UnixfsNode::decode(cid, &block).map_err(|e| format!("block {cid}: {e}"))?;
        let UnixfsNode::File { own, children, .. } = node else {
            return Err(format!("{cid} is not a file"));
        };
        let mut at = at;
        if !own.is_empty() {
            out.push(Leaf { offset: at, cid: *cid, start: own.start, len: own.len() });
            at += own.len() as u64;
        }
        for (child, size) in children {
            if child.codec() == RAW {
                // A raw leaf is all file bytes; its size in the parent is enough, no need to read it now.
                let len = usize::try_from(size).map_err(|_| format!("leaf {child} claims {size} bytes"))?;
                out.push(Leaf { offset: at, cid: child, start: 0, len });
                at += size;
            } else {
                at = self.walk(&child, at, depth + 1, out)?;
            }
        }
        Ok(at)
    }

    fn block(&self, cid: &Cid) -> Result<Arc<Vec<u8>>, String> {
        if let Some(b) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(cid) {
            return Ok(b.clone());
        }
        let data = self
            .node
            .repo()
            .store()
            .get_local(cid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("block {cid} is not in the store"))?;
        let data = Arc::new(data);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(*cid, data.clone());
        Ok(data)
    }
}

impl SeedFiles for StoreFiles {
    fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let (cid, length) = match self.files.get(file) {
            Some(SeedFile::Stored { cid, length }) => (*cid, *length),
            Some(SeedFile::Padding { length }) => {
                if offset.saturating_add(buf.len() as u64) > *length {
                    return Err(format!("read past the end of padding file {file}"));
                }
                buf.fill(0);
                return Ok(());
            }
            Some(SeedFile::Missing) => return Err(format!("file {file} was not imported")),
            None => return Err(format!("no file {file}")),
        };
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= length);
        let Some(end) = end else {
            return Err(format!(
                "read of {} bytes at {offset} past the end of file {file} ({length} bytes)",
                buf.len()
            ));
        };
        let leaves = self.leaves(file, &cid)?;
        // The first leaf that ends after `offset`.
        let mut i = leaves.partition_point(|l| l.offset + l.len as u64 <= offset);
        let mut pos = offset;
        while pos < end {
            let leaf = leaves.get(i).ok_or_else(|| format!("file {file} is shorter than its torrent says"))?;
            let block = self.block(&leaf.cid)?;
            let within = (pos - leaf.offset) as usize;
            let take = (leaf.len - within).min((end - pos) as usize);
            let from = leaf.start + within;
            let dst = (pos - offset) as usize;
            if block.len() < from + take {
                return Err(format!("block {} is shorter than its parent says", leaf.cid));
            }
            buf[dst..dst + take].copy_from_slice(&block[from..from + take]);
            pos += take as u64;
            i += 1;
        }
        Ok(())
    }
}
