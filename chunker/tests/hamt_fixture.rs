//! The HAMT encoder checked against a real sharded directory: the gateway conformance fixture
//! `single-layer-hamt-with-multi-block-files.car` (made by kubo). Rebuilding the directory from its
//! entries must give the same root CID, and every entry must sit in the slot our hash puts it in.

use std::collections::HashMap;

use btfs_chunker::block::{CidParams, CidVersion};
use btfs_chunker::car::CarReader;
use btfs_chunker::dagpb::PbNode;
use btfs_chunker::dir::{DirParams, DirectoryBuilder, ShardStrategy, hamt_index};
use btfs_chunker::hash::HashFunction;
use btfs_chunker::unixfs::{Data, DataType};
use btfs_chunker::{Cid, Link};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/gateway-conformance/trustless_gateway_car/single-layer-hamt-with-multi-block-files.car"
);

#[test]
fn rebuilds_kubo_hamt_byte_for_byte() {
    let bytes = std::fs::read(FIXTURE).expect("fixture present in ../shared");
    let mut reader = CarReader::new(&bytes[..]).expect("valid car");
    let root = reader.roots()[0];
    let mut blocks: HashMap<Cid, Vec<u8>> = HashMap::new();
    while let Some((cid, data)) = reader.next_block().expect("valid block") {
        blocks.insert(cid, data);
    }
    let node = PbNode::decode(&blocks[&root]).expect("dag-pb root");
    let data = Data::decode(node.data.as_deref().expect("unixfs data")).expect("unixfs");
    assert_eq!(data.kind, DataType::HamtShard);

    let mut dir = DirectoryBuilder::new();
    let mut entries = 0;
    collect(&blocks, &node, 0, &mut dir, &mut entries);
    assert!(entries > 1);
    let params = DirParams {
        cids: CidParams { version: CidVersion::V1, hash: HashFunction::Sha2_256, inline_limit: None },
        shard_threshold: Some(0),
        strategy: ShardStrategy::LinksBytes,
    };
    let mut out = Vec::new();
    let link = dir.finish(&params, &mut |b| out.push(b));
    assert_eq!(link.cid, root);
    assert_eq!(out.last().map(|b| &b.data), Some(&blocks[&root]));
}

/// Walks a shard and its sub-shards, checking each name's slot at its depth, and gathers the entries.
fn collect(
    blocks: &HashMap<Cid, Vec<u8>>,
    node: &PbNode,
    depth: usize,
    dir: &mut DirectoryBuilder,
    entries: &mut usize,
) {
    for link in &node.links {
        let name = link.name.as_deref().expect("named link");
        let slot = u8::from_str_radix(&name[..2], 16).expect("hex prefix");
        if name.len() == 2 {
            let child = PbNode::decode(&blocks[&link.hash]).expect("sub-shard");
            for grandchild in &child.links {
                let n = grandchild.name.as_deref().expect("named");
                if n.len() > 2 {
                    assert_eq!(hamt_index(&n.as_bytes()[2..], depth), slot, "parent slot of {n}");
                }
            }
            collect(blocks, &child, depth + 1, dir, entries);
            continue;
        }
        assert_eq!(hamt_index(&name.as_bytes()[2..], depth), slot, "slot of {name} at depth {depth}");
        let link = Link { cid: link.hash, tsize: link.tsize.expect("tsize"), filesize: 0 };
        dir.insert(name[2..].to_string(), link).expect("unique names");
        *entries += 1;
    }
}
