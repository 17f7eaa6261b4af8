//! Reads arbitrary bytes as an upload manifest the way a host or downloader does. Refusals are fine, panics
//! are not; anything accepted must be consistent (k + m shards, the shard size the code makes) and must
//! re-encode to exactly the bytes it came from, so one manifest has one CID.
#![no_main]

use btfs_chunker::manifest::UploadManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = UploadManifest::from_block(data) {
        assert_eq!(manifest.shards.len(), manifest.erasure.total_shards());
        assert_eq!(manifest.erasure.shard_size(manifest.file_size), Some(manifest.shard_size));
        assert_eq!(manifest.encode(), data, "an accepted manifest is canonical");
    }
});
