//! Reads arbitrary bytes the ways BitTorrent metadata arrives: as bencode, as a .torrent file, as a bare info
//! dict (what ut_metadata delivers) and, made UTF-8 lossily, as a magnet link. Refusals are fine, panics are
//! not; whatever is accepted must hold what the parser promises: canonical bencode, file paths that cannot
//! leave their directory, lengths and offsets that add up, as many v1 pieces as the length needs, an info
//! dict that parses the same on its own, and a magnet link that survives `to_uri`.
#![no_main]

use btfs_chunker::torrent::{Info, Version, bencode, parse_info, parse_magnet, parse_torrent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = bencode::decode(data) {
        assert_eq!(bencode::encode(&value), data, "accepted bencode is canonical");
    }
    if let Ok(meta) = parse_torrent(data) {
        check(&meta.info);
        assert_eq!(parse_info(&meta.info.info_bytes).as_ref(), Ok(&meta.info));
    }
    if let Ok(info) = parse_info(data) {
        assert_eq!(info.info_bytes, data);
        check(&info);
    }
    if let Ok(magnet) = parse_magnet(&String::from_utf8_lossy(data)) {
        assert!(magnet.info_hash_v1.is_some() || magnet.info_hash_v2.is_some());
        assert_eq!(parse_magnet(&magnet.to_uri()).as_ref(), Ok(&magnet));
    }
});

fn check(info: &Info) {
    let mut total = 0u64;
    for file in &info.files {
        for c in &file.path {
            assert!(
                !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\\', '\0']),
                "bad path {:?}",
                file.path
            );
        }
        if info.version != Version::V2Only {
            assert_eq!(file.offset, total, "v1 files follow each other");
        }
        total += file.length;
    }
    assert_eq!(total, info.total_length);
    match info.version {
        Version::V2Only => assert!(info.pieces.is_empty() && info.info_hash_v1.is_none()),
        _ => assert_eq!(info.pieces.len() as u64, info.total_length.div_ceil(info.piece_length.get())),
    }
    assert_eq!(info.info_hash_v2.is_some(), info.version != Version::V1);
}
