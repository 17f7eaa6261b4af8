//! Checks arbitrary storage proofs against a real shard the way a renter does. Refusals are fine, panics are
//! not, and a proof is accepted only if its leaf is exactly the piece stored at that index: a forged proof
//! would have to find a SHA-256 collision.
//!
//! The input is either a valid proof with bytes flipped (first byte even) or a proof built from scratch
//! (first byte odd): a leaf index, a node count, length-prefixed path nodes, and the leaf.
#![no_main]

use std::sync::OnceLock;

use btfs_chunker::Cid;
use btfs_chunker::erasure::ShardFileBuilder;
use btfs_chunker::proof::{StorageProof, prove, verify};
use libfuzzer_sys::fuzz_target;

const PIECE: usize = 64;
/// Enough leaves for a two-level tree (174 links per node), so paths have a root and an inner node.
const LEAVES: u64 = 400;

struct Shard {
    root: Cid,
    blocks: std::collections::HashMap<Cid, Vec<u8>>,
    pieces: Vec<Vec<u8>>,
}

fn shard() -> &'static Shard {
    static SHARD: OnceLock<Shard> = OnceLock::new();
    SHARD.get_or_init(|| {
        let mut blocks = std::collections::HashMap::new();
        let mut builder = ShardFileBuilder::new(PIECE);
        let mut pieces = Vec::new();
        for i in 0..LEAVES {
            let mut piece = vec![0xa5u8; PIECE];
            piece[..8].copy_from_slice(&i.to_le_bytes());
            pieces.push(piece.clone());
            builder.push_owned(piece, &mut |b| drop(blocks.insert(b.cid, b.data))).expect("piece of the right size");
        }
        let root = builder.finish(&mut |b| drop(blocks.insert(b.cid, b.data))).cid;
        Shard { root, blocks, pieces }
    })
}

fn from_scratch(data: &[u8]) -> Option<(u64, StorageProof)> {
    let (&index, rest) = data.split_first()?;
    let (&count, mut rest) = rest.split_first()?;
    let mut path = Vec::new();
    for _ in 0..count % 8 {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        path.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Some((u64::from(index) * 2, StorageProof { path, leaf: rest.to_vec() }))
}

fuzz_target!(|data: &[u8]| {
    let s = shard();
    let Some((&mode, rest)) = data.split_first() else { return };
    let (index, proof) = if mode % 2 == 0 {
        let index = u64::from(mode) * 2 % (LEAVES + 10);
        let Ok(mut proof) = prove(&s.root, index.min(LEAVES - 1), &mut |c| s.blocks.get(c).cloned()) else {
            return;
        };
        for pair in rest.chunks(3) {
            if let [node, at, value] = *pair {
                let target = match proof.path.get_mut(usize::from(node % 3)) {
                    Some(bytes) if node % 4 != 3 => bytes,
                    _ => &mut proof.leaf,
                };
                if !target.is_empty() {
                    let i = usize::from(at) % target.len();
                    target[i] ^= value;
                }
            }
        }
        (index, proof)
    } else {
        let Some(built) = from_scratch(rest) else { return };
        built
    };
    if verify(&s.root, index, PIECE as u64, &proof).is_ok() {
        let expected = usize::try_from(index).ok().and_then(|i| s.pieces.get(i));
        assert_eq!(Some(&proof.leaf), expected, "an accepted proof carries the stored piece");
    }
});
