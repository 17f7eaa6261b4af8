//! Reads arbitrary bytes as a dag-cbor, dag-json and UnixFS block the way the gateway does: links, an IPLD
//! path inside the block, and the UnixFS view. Each may refuse, none may panic, and a path step never
//! claims more segments than it was given.
#![no_main]

use btfs_chunker::Cid;
use btfs_chunker::hash::HashFunction;
use btfs_chunker::links::{DAG_CBOR, DAG_JSON, PathStep, links, resolve_in_block};
use btfs_chunker::walk::UnixfsNode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a path of up to three segments from a small alphabet, so that real keys match.
    let (choice, block) = data.split_first().map_or((0, data), |(c, rest)| (*c, rest));
    let names = ["foo", "link", "0", "1", "bar", "a"];
    let segments: Vec<String> =
        (0..(choice % 4)).map(|i| names[usize::from(choice >> (2 + i)) % names.len()].to_string()).collect();
    for codec in [DAG_CBOR, DAG_JSON, 0x70, 0x55] {
        let cid = Cid::new_v1(codec, HashFunction::Sha2_256.digest(block));
        let _ = links(&cid, block);
        if let Ok(node) = UnixfsNode::decode(&cid, block)
            && let UnixfsNode::File { own, .. } = node
        {
            assert!(own.end <= block.len(), "a file's own bytes lie inside its block");
        }
        if codec == DAG_CBOR || codec == DAG_JSON {
            match resolve_in_block(&cid, block, &segments) {
                Ok(PathStep::Link { consumed, .. }) => assert!(consumed <= segments.len()),
                Ok(PathStep::Missing { index }) => assert!(index < segments.len()),
                Ok(PathStep::Value) | Err(_) => {}
            }
        }
    }
});
