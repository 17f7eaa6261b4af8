//! The storage-market round trip through the public API only: a file added with some `add` options is
//! erasure-coded, described by a manifest that travels as a dag-cbor block, challenged with storage proofs,
//! half its shards lost, one shard repaired to its original CID, and the file rebuilt and re-added to its
//! original root CID with the detected recipe.

use std::collections::HashMap;

use btfs_chunker::chunk::import_bytes;
use btfs_chunker::erasure::{ErasureParams, ShardDecoder, ShardEncoder, ShardFileBuilder, shard_leaves};
use btfs_chunker::import::{ChunkSize, Options};
use btfs_chunker::manifest::UploadManifest;
use btfs_chunker::proof::{prove, verify};
use btfs_chunker::recipe::{ImportRecipe, RecipeHasher};
use btfs_chunker::{Block, Cid};

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn upload_challenge_lose_repair_and_rebuild() {
    let erasure = ErasureParams { data_shards: 4, parity_shards: 6, piece_size: 1024 };
    let added_with = Options { trickle: true, chunk_size: ChunkSize::new(700), ..Default::default() };
    let data = bytes(4 * 1024 * 37 + 123, 5);

    // The renter added the file long ago; it finds the recipe from the DAG alone.
    let (file, file_blocks) = import_bytes(&added_with.resolve().expect("valid"), &data);
    let store: HashMap<Cid, Vec<u8>> = file_blocks.into_iter().map(|b| (b.cid, b.data)).collect();
    let recipe = ImportRecipe::detect(&file.cid, &mut |c| store.get(c).cloned()).expect("a file");

    // Encoding and checking the recipe in the same pass over the bytes.
    let mut shard_blocks: HashMap<Cid, Vec<u8>> = HashMap::new();
    let mut emit = |b: Block| {
        shard_blocks.insert(b.cid, b.data);
    };
    let mut encoder = ShardEncoder::new(erasure).expect("valid");
    let mut hasher = RecipeHasher::new(&recipe);
    for part in data.chunks(10_000) {
        encoder.push(part, &mut emit).expect("push");
        hasher.push(part);
    }
    let encoded = encoder.finish(&mut emit).expect("finish");
    assert_eq!(hasher.finish(), file.cid, "the recipe re-adds the bytes to the original CID");

    let manifest = UploadManifest::new(file.cid, recipe, erasure, &encoded).expect("consistent");
    let block = manifest.to_block();
    let manifest = UploadManifest::from_block(&block.data).expect("round trip");
    assert_eq!(manifest.shards.len(), 10);

    // Every host proves a random-ish leaf of its shard.
    let stripes = encoded.stripes;
    for (j, shard) in manifest.shards.iter().enumerate() {
        let index = (j as u64 * 7) % stripes;
        let proof = prove(shard, index, &mut |c| shard_blocks.get(c).cloned()).expect("host has the shard");
        verify(shard, index, 1024, &proof).expect("proof holds");
    }

    // Six shards are lost (only the minimum four remain, none of them data shard 0).
    let pieces: Vec<Vec<Vec<u8>>> = manifest
        .shards
        .iter()
        .map(|s| {
            let leaves = shard_leaves(s, &mut |c| shard_blocks.get(c).cloned()).expect("leaves");
            leaves.iter().map(|l| shard_blocks[l].clone()).collect()
        })
        .collect();
    let alive = [1usize, 5, 7, 9];
    let mut decoder = ShardDecoder::new(manifest.erasure, manifest.file_size).expect("decoder");
    let mut repaired = ShardFileBuilder::new(manifest.erasure.piece_size);
    let mut rebuilt = Vec::new();
    let mut hasher = RecipeHasher::new(&manifest.recipe);
    for stripe in 0..decoder.stripes() {
        let i = usize::try_from(stripe).expect("small");
        let mut stripe_pieces: Vec<Option<Vec<u8>>> =
            (0..10).map(|j| alive.contains(&j).then(|| pieces[j][i].clone())).collect();
        // Repair shard 0 first (all pieces), then read the stripe's bytes.
        let mut all = stripe_pieces.clone();
        decoder.reconstruct_all(&mut all).expect("repair");
        repaired.push_piece(all[0].as_deref().expect("rebuilt"), &mut |_| {}).expect("piece");
        let part = decoder.decode_stripe(&mut stripe_pieces).expect("decode");
        hasher.push(&part);
        rebuilt.extend(part);
    }
    assert_eq!(repaired.finish(&mut |_| {}).cid, manifest.shards[0], "repaired shard keeps its CID");
    assert_eq!(rebuilt, data);
    assert_eq!(hasher.finish(), manifest.file, "rebuilt bytes re-add to the original CID");
}
