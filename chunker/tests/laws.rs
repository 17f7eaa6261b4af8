//! Property tests of the content model's laws: decoders never panic on arbitrary bytes, encode/decode round
//! trips, and any file imported under any layout reads back to the same bytes.

use std::collections::HashMap;

use btfs_chunker::block::RAW;
use btfs_chunker::chunk::import_bytes;
use btfs_chunker::dagpb::PbNode;
use btfs_chunker::import::{ChunkSize, Options};
use btfs_chunker::unixfs::Data;
use btfs_chunker::{Block, Cid};
use proptest::prelude::*;

/// Reassembles a file from its blocks by walking the DAG (links in order, a node's own data first), and
/// adds up the bytes of every block visited.
fn read_back(root: &Cid, blocks: &HashMap<Cid, Vec<u8>>, out: &mut Vec<u8>, walked: &mut u64) {
    let bytes = &blocks[root];
    *walked += bytes.len() as u64;
    if root.codec() == RAW {
        out.extend_from_slice(bytes);
        return;
    }
    let node = PbNode::decode(bytes).expect("valid dag-pb");
    let data = Data::decode(node.data.as_deref().expect("unixfs data")).expect("valid unixfs");
    if let Some(d) = data.data {
        out.extend_from_slice(&d);
    }
    assert_eq!(data.blocksizes.len(), node.links.len());
    for link in &node.links {
        read_back(&link.hash, blocks, out, walked);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PbNode::decode(&bytes);
        let _ = Data::decode(&bytes);
    }

    #[test]
    fn any_file_reads_back(
        len in 0usize..20_000,
        chunk in 1usize..700,
        links in 2usize..12,
        trickle in any::<bool>(),
        raw in any::<bool>(),
        v1 in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let opts = Options {
            chunk_size: ChunkSize::new(chunk),
            max_links: Some(links),
            trickle,
            raw_leaves: Some(raw),
            cid_version: Some(u64::from(v1)),
            ..Default::default()
        };
        let params = opts.resolve().expect("valid options");
        let (root, blocks) = import_bytes(&params, &data);
        let map: HashMap<Cid, Vec<u8>> = blocks.into_iter().map(|Block { cid, data }| (cid, data)).collect();
        let mut out = Vec::with_capacity(len);
        let mut walked = 0;
        read_back(&root.cid, &map, &mut out, &mut walked);
        prop_assert_eq!(out, data);
        prop_assert_eq!(root.filesize, len as u64);
        prop_assert_eq!(root.tsize, walked, "Tsize is the size of every block on every path of the DAG");
    }

    #[test]
    fn pbnode_round_trips(data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)), names in proptest::collection::vec("[a-z]{0,8}", 0..5)) {
        let target = btfs_chunker::CidParams::V0.cid(RAW, b"x");
        let links = names.into_iter().enumerate().map(|(i, n)| btfs_chunker::dagpb::PbLink::new(target, n, i as u64)).collect();
        let node = PbNode { links, data };
        prop_assert_eq!(PbNode::decode(&node.encode()), Ok(node));
    }
}
