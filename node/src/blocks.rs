//! Commands over raw blocks, pins, CAR files and the repo as a whole: `block`, `pin`, `dag import|export`,
//! `repo stat|verify|gc`. Each is a function over the `BlockStore`; the `Node` facade calls them.

use std::collections::HashSet;
use std::io::{Read, Write};

use btfs_chunker::block::RAW;
use btfs_chunker::car::{CarError, CarReader, CarWriter};
use btfs_chunker::hash::{HashFunction, Multihash};
use btfs_chunker::{Block, Cid};

use crate::repo::pins::{self, OnMissing, WalkError};
use crate::repo::store::verify_block;
use crate::repo::{BlockStore, PinKind, StoreError};

/// The largest block `block put` accepts: 2 MiB, the most a Bitswap peer will take (kubo's limit too).
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;
/// Bytes of blocks per write batch during a CAR import.
const IMPORT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Errors from block, pin, dag and repo commands.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {cid} not found in the local store")]
    NotFound { cid: Cid },
    #[error("block is {size} bytes, larger than the {MAX_BLOCK_SIZE}-byte limit")]
    TooLarge { size: usize },
    #[error("cannot remove {cid}: it is pinned ({kind})")]
    Pinned { cid: Cid, kind: &'static str },
    #[error("{cid} already pinned recursively")]
    AlreadyRecursive { cid: Cid },
    #[error("{cid} is not pinned")]
    NotPinned { cid: Cid },
    #[error("{cid} is pinned indirectly under {root}; unpin {root} instead")]
    PinnedIndirectly { cid: Cid, root: Cid },
    #[error("cannot read input")]
    Input(#[source] std::io::Error),
    #[error("write failed")]
    Output(#[source] std::io::Error),
    #[error("invalid CAR file")]
    Car(#[from] CarError),
    #[error("CAR import: root {cid} is not among the imported blocks or the store")]
    MissingRoot { cid: Cid },
    #[error("CAR import: cannot pin root {root}: block {missing} under it is missing")]
    Incomplete { root: Cid, missing: Cid },
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `block put`: stores bytes as one block named with `codec` and `hash` (CIDv1; CIDv0 for dag-pb with
/// sha2-256 when `v0` is set).
pub fn block_put(
    store: &BlockStore,
    data: Vec<u8>,
    codec: u64,
    hash: HashFunction,
    v0: bool,
) -> Result<Cid, BlockError> {
    if data.len() > MAX_BLOCK_SIZE {
        return Err(BlockError::TooLarge { size: data.len() });
    }
    let version = if v0 { btfs_chunker::CidVersion::V0 } else { btfs_chunker::CidVersion::V1 };
    let params = btfs_chunker::CidParams { version, hash, inline_limit: None };
    let block = params.block(codec, data);
    store.put_many([&block])?;
    store.sync_blocks()?;
    Ok(block.cid)
}

/// `block get`.
pub fn block_get(store: &BlockStore, cid: &Cid) -> Result<Vec<u8>, BlockError> {
    store.get(cid)?.ok_or(BlockError::NotFound { cid: *cid })
}

/// `block rm`: refuses pinned blocks.
pub fn block_rm(store: &BlockStore, cid: &Cid) -> Result<(), BlockError> {
    if !store.has(cid)? {
        return Err(BlockError::NotFound { cid: *cid });
    }
    if let Some(kind) = store.pin(cid)? {
        return Err(BlockError::Pinned { cid: *cid, kind: kind.as_str() });
    }
    if pins::pinned_set(store)?.contains(cid.hash()) {
        return Err(BlockError::Pinned { cid: *cid, kind: "indirect" });
    }
    store.delete_many([cid.hash()])?;
    Ok(())
}

/// `pin add`: the whole DAG must be present for a recursive pin. `complete` says the caller has just seen
/// all of it stored, so it is not walked again.
pub fn pin_add(store: &BlockStore, cid: &Cid, recursive: bool, complete: bool) -> Result<(), BlockError> {
    if recursive && !complete {
        let mut seen = HashSet::new();
        pins::walk(store, cid, &mut seen, OnMissing::Fail, |_, _| Ok(()))?;
    } else if !store.has(cid)? {
        return Err(BlockError::NotFound { cid: *cid });
    }
    let kind = if recursive { PinKind::Recursive } else { PinKind::Direct };
    if store.pin(cid)? == Some(PinKind::Recursive) && kind == PinKind::Direct {
        return Err(BlockError::AlreadyRecursive { cid: *cid });
    }
    store.update_pins(&[(*cid, kind)], &[])?;
    Ok(())
}

/// `pin rm`.
pub fn pin_rm(store: &BlockStore, cid: &Cid) -> Result<(), BlockError> {
    if store.pin(cid)?.is_some() {
        store.update_pins(&[], &[*cid])?;
        return Ok(());
    }
    for (root, kind) in store.pins()? {
        if kind == PinKind::Recursive {
            let mut seen = HashSet::new();
            let mut found = false;
            pins::walk(store, &root, &mut seen, OnMissing::Skip, |c, _| {
                found |= c.hash() == cid.hash();
                Ok(())
            })?;
            if found {
                return Err(BlockError::PinnedIndirectly { cid: *cid, root });
            }
        }
    }
    Err(BlockError::NotPinned { cid: *cid })
}

/// Which pins `pin ls` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinFilter {
    All,
    Recursive,
    Direct,
    Indirect,
}

/// `pin ls`: (cid, "recursive" | "direct" | "indirect").
pub fn pin_ls(store: &BlockStore, filter: PinFilter) -> Result<Vec<(Cid, &'static str)>, BlockError> {
    let mut out: Vec<(Cid, &'static str)> = Vec::new();
    for (cid, kind) in store.pins()? {
        let show = match filter {
            PinFilter::All => true,
            PinFilter::Recursive => kind == PinKind::Recursive,
            PinFilter::Direct => kind == PinKind::Direct,
            PinFilter::Indirect => false,
        };
        if show {
            out.push((cid, kind.as_str()));
        }
    }
    if matches!(filter, PinFilter::All | PinFilter::Indirect) {
        let explicit: HashSet<Multihash> = store.pins()?.iter().map(|(c, _)| *c.hash()).collect();
        for cid in pins::indirect(store)? {
            if !explicit.contains(cid.hash()) {
                out.push((cid, "indirect"));
            }
        }
    }
    Ok(out)
}

/// `pin ls <cid>...`: how each of `cids` is pinned, if it is one of the pins `filter` selects.
pub fn pin_status(
    store: &BlockStore,
    cids: &[Cid],
    filter: PinFilter,
) -> Result<Vec<Option<&'static str>>, BlockError> {
    let pins: std::collections::HashMap<Multihash, &'static str> =
        pin_ls(store, filter)?.into_iter().map(|(c, k)| (*c.hash(), k)).collect();
    Ok(cids.iter().map(|c| pins.get(c.hash()).copied()).collect())
}

/// `dag export`: the DAG under `root` as a CARv1, depth first, each block once. Every block must be present.
pub fn dag_export(store: &BlockStore, root: &Cid, out: &mut dyn Write) -> Result<u64, BlockError> {
    let mut writer = CarWriter::new(out, &[*root]).map_err(BlockError::Output)?;
    let mut seen = HashSet::new();
    let mut count = 0u64;
    let mut write_err = None;
    pins::walk(store, root, &mut seen, OnMissing::Fail, |cid, data| {
        if let Err(e) = writer.write_block(cid, data) {
            write_err = Some(e);
            // Stop the walk: report as a missing-free error through the walker's error type.
            return Err(WalkError::Missing { cid: *cid });
        }
        count += 1;
        Ok(())
    })
    .map_err(|e| match write_err.take() {
        Some(io) => BlockError::Output(io),
        None => e.into(),
    })?;
    writer.finish().map_err(BlockError::Output)?;
    Ok(count)
}

/// Result of `dag import`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub roots: Vec<Cid>,
    /// Blocks in the CAR, already stored ones included.
    pub blocks: u64,
    /// Bytes of block data in the CAR.
    pub bytes: u64,
}

/// `dag import`: verifies every block against its CID while streaming; on any error, removes the blocks
/// this import added (blocks that were already stored stay), so a bad CAR leaves the store as it was.
pub fn dag_import(store: &BlockStore, input: impl Read, pin_roots: bool) -> Result<ImportSummary, BlockError> {
    let mut added: Vec<Multihash> = Vec::new();
    let result = import_inner(store, input, &mut added);
    match result {
        Ok((roots, blocks, bytes)) => {
            if pin_roots {
                // A recursive pin promises the whole DAG is here: check it before recording the pin.
                for root in &roots {
                    let mut seen = HashSet::new();
                    if let Err(e) = pins::walk(store, root, &mut seen, OnMissing::Fail, |_, _| Ok(())) {
                        rollback(store, &added);
                        return Err(match e {
                            WalkError::Missing { cid } if cid == *root => BlockError::MissingRoot { cid },
                            WalkError::Missing { cid } => BlockError::Incomplete { root: *root, missing: cid },
                            other => other.into(),
                        });
                    }
                }
                let pins: Vec<(Cid, PinKind)> = roots.iter().map(|c| (*c, PinKind::Recursive)).collect();
                store.update_pins(&pins, &[])?;
            } else {
                store.sync_blocks()?;
            }
            Ok(ImportSummary { roots, blocks, bytes })
        }
        Err(e) => {
            rollback(store, &added);
            Err(e)
        }
    }
}

fn rollback(store: &BlockStore, added: &[Multihash]) {
    if let Err(e) = store.delete_many(added) {
        tracing::warn!(error = %e, blocks = added.len(), "could not roll back a failed import");
    }
}

fn import_inner(
    store: &BlockStore,
    input: impl Read,
    added: &mut Vec<Multihash>,
) -> Result<(Vec<Cid>, u64, u64), BlockError> {
    let mut reader = CarReader::new(input)?;
    let roots = reader.roots().to_vec();
    let mut batch: Vec<Block> = Vec::new();
    let mut batch_bytes = 0usize;
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some((cid, data)) = reader.next_block()? {
        count += 1;
        bytes += data.len() as u64;
        if !store.has(&cid)? {
            added.push(*cid.hash());
            batch_bytes += data.len();
            batch.push(Block { cid, data });
        }
        if batch_bytes >= IMPORT_BATCH_BYTES {
            store.put_many(&batch)?;
            batch.clear();
            batch_bytes = 0;
        }
    }
    store.put_many(&batch)?;
    Ok((roots, count, bytes))
}

/// `repo stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoStat {
    pub num_objects: u64,
    pub repo_size: u64,
}

pub fn repo_stat(store: &BlockStore) -> Result<RepoStat, BlockError> {
    let (num_objects, content) = store.stat()?;
    Ok(RepoStat { num_objects, repo_size: store.disk_usage().max(content) })
}

/// `repo verify`: rehashes every block; returns (blocks checked, corrupt multihashes).
pub fn repo_verify(store: &BlockStore) -> Result<(u64, Vec<Multihash>), BlockError> {
    let mut n = 0u64;
    let mut bad = Vec::new();
    store.for_each_block::<StoreError>(|mh, data| {
        n += 1;
        if !verify_block(&mh, data) {
            bad.push(mh);
        }
        Ok(())
    })?;
    Ok((n, bad))
}

/// kubo's message for a corrupt block found by `repo verify`, which its CLI prints as it is.
pub fn corrupt_message(mh: &Multihash) -> String {
    format!("block {} was corrupt (block does not match its hash)", Cid::new_v1(RAW, *mh))
}

/// `repo gc`: deletes every block not reachable from a pin; returns the removed blocks as raw CIDs.
pub fn repo_gc(store: &BlockStore) -> Result<Vec<Cid>, BlockError> {
    let keep = pins::pinned_set(store)?;
    let doomed: Vec<Multihash> = store.keys()?.into_iter().filter(|mh| !keep.contains(mh)).collect();
    for chunk in doomed.chunks(1024) {
        store.delete_many(chunk)?;
    }
    if !doomed.is_empty() {
        store.compact()?;
    }
    Ok(doomed.into_iter().map(|mh| Cid::new_v1(RAW, mh)).collect())
}
