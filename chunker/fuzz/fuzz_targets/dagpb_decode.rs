//! Decodes arbitrary bytes as a dag-pb node and as UnixFS `Data`: neither decoder may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = btfs_chunker::dagpb::PbNode::decode(data);
    let _ = btfs_chunker::unixfs::Data::decode(data);
});
