//! Storage proofs over a shard's own DAG: "leaf `i` of shard X", answered with the leaf and the dag-pb nodes
//! from the shard root down to it, checked hash by hash up to the shard CID.
//!
//! A shard ([`crate::erasure`]) is a balanced UnixFS file whose leaves are raw blocks of exactly `piece_size`
//! bytes, so leaf `i` holds bytes `[i * piece_size, (i + 1) * piece_size)`. Both sides walk down by those
//! offsets using the UnixFS `blocksizes` of each node (never the dag-pb `Tsize`, which is only a hint). The
//! verifier trusts nothing in the proof but what hashes to the root: every node must be the block of the link
//! its parent chose, and is bounded ([`MAX_NODE_SIZE`], [`MAX_DEPTH`] nodes). A one-piece shard is a single
//! raw leaf: its proof has an empty path.

use cid::Cid;

use crate::block::RAW;
use crate::erasure::MAX_PIECE_SIZE;
use crate::hash::{self, VerifyError};
use crate::walk::{MAX_DEPTH, NodeError, UnixfsNode};

/// The largest path node a verifier reads: the 2 MiB Bitswap peers accept.
pub const MAX_NODE_SIZE: usize = 2 * 1024 * 1024;

/// A host's answer to a challenge: the dag-pb nodes from the root (first) to the leaf's parent, and the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProof {
    pub path: Vec<Vec<u8>>,
    pub leaf: Vec<u8>,
}

/// Why a proof could not be made or does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("block {cid} is not available")]
    Missing { cid: Cid },
    #[error(transparent)]
    Corrupt(#[from] VerifyError),
    #[error("piece size {size} is outside 1 ..= {MAX_PIECE_SIZE}")]
    PieceSize { size: u64 },
    #[error("leaf index {index} beyond shard of {leaves} leaves")]
    LeafIndexBeyond { index: u64, leaves: u64 },
    #[error("path node 0 does not match the shard root {root}")]
    RootMismatch { root: Cid },
    #[error("path node {depth} does not match the link from its parent")]
    PathNodeMismatch { depth: usize },
    #[error("path node {depth} is {size} bytes, more than {MAX_NODE_SIZE}")]
    NodeTooLarge { depth: usize, size: usize },
    #[error("path node {depth} is not UnixFS")]
    Node { depth: usize, source: NodeError },
    #[error("path node {depth} is not a shard node (a file node with links and no bytes of its own)")]
    NotAShard { depth: usize },
    #[error("path node {depth} has sizes that overflow")]
    SizeOverflow { depth: usize },
    #[error("the path ends after {len} nodes, above the leaf")]
    PathTooShort { len: usize },
    #[error("the path has {extra} nodes below the leaf's parent")]
    ExtraNodes { extra: usize },
    #[error("the path is deeper than {MAX_DEPTH} nodes")]
    TooDeep,
    #[error("leaf {index} is not a raw block of one piece at its offset in this shard")]
    Misaligned { index: u64 },
    #[error("leaf is {len} bytes, a piece is {expected}")]
    LeafLength { len: usize, expected: u64 },
    #[error("leaf does not match its CID")]
    LeafMismatch { index: u64 },
}

/// Walks from `root` to leaf `leaf_index` by byte offset; `node(depth, cid)` supplies each dag-pb node on the
/// way, already checked against `cid`. Returns the leaf's CID and how many nodes the walk used.
fn descend(
    root: &Cid,
    leaf_index: u64,
    piece_size: u64,
    node: &mut impl FnMut(usize, &Cid) -> Result<Vec<u8>, ProofError>,
) -> Result<(Cid, usize), ProofError> {
    if piece_size == 0 || piece_size > MAX_PIECE_SIZE as u64 {
        return Err(ProofError::PieceSize { size: piece_size });
    }
    if root.codec() == RAW {
        if leaf_index != 0 {
            return Err(ProofError::LeafIndexBeyond { index: leaf_index, leaves: 1 });
        }
        return Ok((*root, 0));
    }
    let beyond = |leaves| ProofError::LeafIndexBeyond { index: leaf_index, leaves };
    let mut offset = leaf_index.checked_mul(piece_size).ok_or(beyond(0))?;
    let mut cid = *root;
    for depth in 0..MAX_DEPTH {
        let data = node(depth, &cid)?;
        let decoded = UnixfsNode::decode(&cid, &data).map_err(|source| ProofError::Node { depth, source })?;
        let UnixfsNode::File { own, children, .. } = decoded else { return Err(ProofError::NotAShard { depth }) };
        if !own.is_empty() || children.is_empty() {
            return Err(ProofError::NotAShard { depth });
        }
        let mut start = 0u64;
        let mut chosen = None;
        for &(child, size) in &children {
            let end = start.checked_add(size).ok_or(ProofError::SizeOverflow { depth })?;
            if chosen.is_none() && offset < end {
                chosen = Some((child, offset - start, size));
            }
            start = end;
        }
        let Some((child, within, size)) = chosen else {
            // Only the root's total can put the index past the end; below it the parent's size bounds it.
            return Err(if depth == 0 { beyond(start / piece_size) } else { ProofError::NotAShard { depth } });
        };
        if child.codec() == RAW {
            if within != 0 || size != piece_size {
                return Err(ProofError::Misaligned { index: leaf_index });
            }
            return Ok((child, depth + 1));
        }
        offset = within;
        cid = child;
    }
    Err(ProofError::TooDeep)
}

/// Answers a challenge for leaf `leaf_index` of the shard under `root`, fetching through `get` the nodes on
/// the path (and, to learn the piece size, those down the left edge), each checked against its CID.
pub fn prove(
    root: &Cid,
    leaf_index: u64,
    get: &mut impl FnMut(&Cid) -> Option<Vec<u8>>,
) -> Result<StorageProof, ProofError> {
    let mut fetch = |cid: &Cid| -> Result<Vec<u8>, ProofError> {
        let data = get(cid).ok_or(ProofError::Missing { cid: *cid })?;
        hash::verify(cid, &data)?;
        Ok(data)
    };
    let piece_size = piece_size_of(root, &mut fetch)?;
    let mut path = Vec::new();
    let (leaf, _) = descend(root, leaf_index, piece_size, &mut |_, cid| {
        let data = fetch(cid)?;
        path.push(data.clone());
        Ok(data)
    })?;
    let leaf = fetch(&leaf)?;
    Ok(StorageProof { path, leaf })
}

/// The size of the shard's first leaf, read from the blocksizes down the left edge.
fn piece_size_of(root: &Cid, fetch: &mut impl FnMut(&Cid) -> Result<Vec<u8>, ProofError>) -> Result<u64, ProofError> {
    let mut cid = *root;
    for depth in 0..MAX_DEPTH {
        let data = fetch(&cid)?;
        if cid.codec() == RAW {
            return Ok(data.len() as u64);
        }
        let decoded = UnixfsNode::decode(&cid, &data).map_err(|source| ProofError::Node { depth, source })?;
        let UnixfsNode::File { children, .. } = decoded else { return Err(ProofError::NotAShard { depth }) };
        let &(first, size) = children.first().ok_or(ProofError::NotAShard { depth })?;
        if first.codec() == RAW {
            return Ok(size);
        }
        cid = first;
    }
    Err(ProofError::TooDeep)
}

/// Checks a proof that leaf `leaf_index` (of `piece_size` bytes) is in the shard under `root`.
pub fn verify(root: &Cid, leaf_index: u64, piece_size: u64, proof: &StorageProof) -> Result<(), ProofError> {
    if proof.path.len() > MAX_DEPTH {
        return Err(ProofError::TooDeep);
    }
    if proof.leaf.len() as u64 != piece_size {
        return Err(ProofError::LeafLength { len: proof.leaf.len(), expected: piece_size });
    }
    let (leaf, used) = descend(root, leaf_index, piece_size, &mut |depth, cid| {
        let data = proof.path.get(depth).ok_or(ProofError::PathTooShort { len: proof.path.len() })?;
        if data.len() > MAX_NODE_SIZE {
            return Err(ProofError::NodeTooLarge { depth, size: data.len() });
        }
        hash::verify(cid, data).map_err(|e| match (depth, e) {
            (0, VerifyError::Mismatch { .. }) => ProofError::RootMismatch { root: *root },
            (_, VerifyError::Mismatch { .. }) => ProofError::PathNodeMismatch { depth },
            (_, unsupported) => ProofError::Corrupt(unsupported),
        })?;
        Ok(data.clone())
    })?;
    if proof.path.len() > used {
        return Err(ProofError::ExtraNodes { extra: proof.path.len() - used });
    }
    hash::verify(&leaf, &proof.leaf).map_err(|e| match e {
        VerifyError::Mismatch { .. } => ProofError::LeafMismatch { index: leaf_index },
        unsupported => ProofError::Corrupt(unsupported),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::erasure::ShardFileBuilder;

    struct Shard {
        root: Cid,
        blocks: HashMap<Cid, Vec<u8>>,
    }

    /// A shard of `leaves` distinct pieces of `piece` bytes.
    fn shard(leaves: u64, piece: usize, salt: u8) -> Shard {
        let mut blocks = HashMap::new();
        let mut b = ShardFileBuilder::new(piece);
        for i in 0..leaves {
            let mut p = vec![salt; piece];
            p[..8].copy_from_slice(&i.to_le_bytes());
            b.push_owned(p, &mut |blk| {
                blocks.insert(blk.cid, blk.data);
            })
            .expect("piece");
        }
        let info = b.finish(&mut |blk| {
            blocks.insert(blk.cid, blk.data);
        });
        assert_eq!(info.size, leaves * piece as u64);
        Shard { root: info.cid, blocks }
    }

    impl Shard {
        fn prove(&self, index: u64) -> Result<StorageProof, ProofError> {
            prove(&self.root, index, &mut |c| self.blocks.get(c).cloned())
        }
    }

    #[test]
    fn proofs_hold_for_every_shape() {
        for (leaves, piece) in [(1u64, 256usize), (2, 256), (174, 256), (175, 256), (174 * 174 + 1, 64), (30_000, 1024)]
        {
            let s = shard(leaves, piece, 1);
            let mut indices = vec![0, leaves / 2, leaves - 1];
            indices.extend([1, 173, 174, 175, 174 * 174].into_iter().filter(|&i| i < leaves));
            for i in indices {
                let proof = s.prove(i).expect("prove");
                assert_eq!(&proof.leaf[..8], &i.to_le_bytes(), "{leaves} leaves: leaf {i} is piece {i}");
                assert_eq!(verify(&s.root, i, piece as u64, &proof), Ok(()), "{leaves} leaves, leaf {i}");
                let depth = if leaves == 1 {
                    0
                } else if leaves <= 174 {
                    1
                } else if leaves <= 174 * 174 {
                    2
                } else {
                    3
                };
                assert_eq!(proof.path.len(), depth, "{leaves} leaves");
            }
            assert_eq!(s.prove(leaves), Err(ProofError::LeafIndexBeyond { index: leaves, leaves }));
        }
    }

    #[test]
    fn tampered_proofs_fail_by_name() {
        let s = shard(30, 256, 1);
        let other = shard(30, 256, 2);
        let good = s.prove(7).expect("prove");
        let check = |proof: &StorageProof, index| verify(&s.root, index, 256, proof);

        let mut flipped = good.clone();
        flipped.leaf[100] ^= 1;
        assert_eq!(check(&flipped, 7), Err(ProofError::LeafMismatch { index: 7 }));
        assert_eq!(check(&good, 8), Err(ProofError::LeafMismatch { index: 8 }));
        assert_eq!(check(&good, 37), Err(ProofError::LeafIndexBeyond { index: 37, leaves: 30 }));
        assert_eq!(check(&good, 37).map_err(|e| e.to_string()), Err("leaf index 37 beyond shard of 30 leaves".into()));
        let foreign = other.prove(7).expect("prove");
        assert_eq!(check(&foreign, 7), Err(ProofError::RootMismatch { root: s.root }));
        let truncated = StorageProof { path: Vec::new(), leaf: good.leaf.clone() };
        assert_eq!(check(&truncated, 7), Err(ProofError::PathTooShort { len: 0 }));
        let mut extra = good.clone();
        extra.path.push(good.path[0].clone());
        assert_eq!(check(&extra, 7), Err(ProofError::ExtraNodes { extra: 1 }));
        let short_leaf = StorageProof { path: good.path.clone(), leaf: good.leaf[..255].to_vec() };
        assert_eq!(check(&short_leaf, 7), Err(ProofError::LeafLength { len: 255, expected: 256 }));
        assert_eq!(verify(&s.root, 7, 128, &good), Err(ProofError::LeafLength { len: 256, expected: 128 }));
        let oversized = StorageProof { path: vec![vec![0; MAX_NODE_SIZE + 1]], leaf: good.leaf.clone() };
        assert_eq!(check(&oversized, 7), Err(ProofError::NodeTooLarge { depth: 0, size: MAX_NODE_SIZE + 1 }));
        let deep = StorageProof { path: vec![Vec::new(); MAX_DEPTH + 1], leaf: good.leaf.clone() };
        assert_eq!(check(&deep, 7), Err(ProofError::TooDeep));
    }

    #[test]
    fn deep_paths_name_the_node_that_does_not_match() {
        let s = shard(174 * 3, 64, 1);
        let other = shard(174 * 3, 64, 2);
        let mut mixed = s.prove(200).expect("prove");
        mixed.path[1] = other.prove(200).expect("prove").path[1].clone();
        assert_eq!(verify(&s.root, 200, 64, &mixed), Err(ProofError::PathNodeMismatch { depth: 1 }));
        // The right path for leaf 200 is the wrong one for leaf 10 (another subtree).
        let right = s.prove(200).expect("prove");
        assert_eq!(verify(&s.root, 10, 64, &right), Err(ProofError::PathNodeMismatch { depth: 1 }));
    }

    #[test]
    fn single_leaf_shard() {
        let s = shard(1, 128, 3);
        assert_eq!(s.root.codec(), RAW);
        let proof = s.prove(0).expect("prove");
        assert!(proof.path.is_empty());
        assert_eq!(verify(&s.root, 0, 128, &proof), Ok(()));
        assert_eq!(verify(&s.root, 1, 128, &proof), Err(ProofError::LeafIndexBeyond { index: 1, leaves: 1 }));
        let mut extra = proof.clone();
        extra.path.push(vec![1, 2, 3]);
        assert_eq!(verify(&s.root, 0, 128, &extra), Err(ProofError::ExtraNodes { extra: 1 }));
        let missing = shard(3, 128, 3);
        let leaf =
            crate::erasure::shard_leaves(&missing.root, &mut |c| missing.blocks.get(c).cloned()).expect("leaves")[1];
        let mut store = missing.blocks.clone();
        store.remove(&leaf);
        assert_eq!(prove(&missing.root, 1, &mut |c| store.get(c).cloned()), Err(ProofError::Missing { cid: leaf }));
    }
}
