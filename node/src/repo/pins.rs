//! Pin sets: recursive pins protect a whole DAG, direct pins one block, and every block under a recursive
//! pin is pinned indirectly. Garbage collection keeps exactly the blocks reachable this way.

use std::collections::HashSet;

use btfs_chunker::Cid;
use btfs_chunker::hash::Multihash;
use btfs_chunker::links::{LinksError, links};

use super::store::{BlockStore, PinKind, StoreError};

/// Errors walking a pinned DAG.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("block {cid} is not in the local store")]
    Missing { cid: Cid },
    #[error(transparent)]
    Links(#[from] LinksError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do when a block under a root is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    Fail,
    Skip,
}

/// Visits every block reachable from `root` once (depth first, links in order), calling `visit` with the
/// block's CID and bytes. `seen` carries visited multihashes across calls.
pub fn walk(
    store: &BlockStore,
    root: &Cid,
    seen: &mut HashSet<Multihash>,
    on_missing: OnMissing,
    mut visit: impl FnMut(&Cid, &[u8]) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    // An explicit stack rather than recursion: DAG depth comes from outside data.
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        if !seen.insert(*cid.hash()) {
            continue;
        }
        // Local only: online reads fetch whole DAGs up front (`Node::prefetch`), and gc must never wait on
        // the network.
        let Some(data) = store.get_local(&cid)? else {
            match on_missing {
                OnMissing::Fail => return Err(WalkError::Missing { cid }),
                OnMissing::Skip => continue,
            }
        };
        visit(&cid, &data)?;
        let children = links(&cid, &data)?;
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// The multihashes of every pinned block (recursive DAGs in full, direct pins alone), skipping blocks that are
/// missing under a pin.
pub fn pinned_set(store: &BlockStore) -> Result<HashSet<Multihash>, WalkError> {
    let mut seen = HashSet::new();
    let pins = store.pins()?;
    for (cid, kind) in &pins {
        if *kind == PinKind::Recursive {
            walk(store, cid, &mut seen, OnMissing::Skip, |_, _| Ok(()))?;
        }
    }
    for (cid, kind) in &pins {
        if *kind == PinKind::Direct {
            seen.insert(*cid.hash());
        }
    }
    Ok(seen)
}

/// Blocks pinned indirectly (under a recursive pin, excluding the recursive roots themselves).
pub fn indirect(store: &BlockStore) -> Result<Vec<Cid>, WalkError> {
    let pins = store.pins()?;
    let roots: HashSet<Multihash> =
        pins.iter().filter(|(_, k)| *k == PinKind::Recursive).map(|(c, _)| *c.hash()).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (cid, kind) in &pins {
        if *kind == PinKind::Recursive {
            walk(store, cid, &mut seen, OnMissing::Skip, |c, _| {
                if !roots.contains(c.hash()) {
                    out.push(*c);
                }
                Ok(())
            })?;
        }
    }
    Ok(out)
}
