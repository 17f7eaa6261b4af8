//! Torrents made by mktorrent 1.1 and libtorrent 2.0.8 (`data/torrents/README.md` says how), read through the
//! public API. Every expected infohash, piece count and file layout below is what libtorrent's `torrent_info`
//! reported for the same file.

use btfs_chunker::torrent::{
    FileEntry, PieceHasher, PieceLength, Version, make_torrent, make_v1_info, parse_info, parse_torrent, to_json,
};

const MKTORRENT_V1: &[u8] = include_bytes!("data/torrents/mktorrent-v1-multi.torrent");
const LIBTORRENT_HYBRID: &[u8] = include_bytes!("data/torrents/libtorrent-hybrid-multi.torrent");
const LIBTORRENT_V2: &[u8] = include_bytes!("data/torrents/libtorrent-v2-multi.torrent");

/// What libtorrent reported for one torrent.
struct Expected {
    bytes: &'static [u8],
    v1: Option<&'static str>,
    v2: Option<&'static str>,
    version: Version,
    piece_length: u64,
    pieces: u64,
    /// (path, length, offset, padding)
    files: &'static [(&'static str, u64, u64, bool)],
}

const TORRENTS: &[Expected] = &[
    Expected {
        bytes: MKTORRENT_V1,
        v1: Some("bb672d3bdc368750cc40e2cafe3018a0cdd1e776"),
        v2: None,
        version: Version::V1,
        piece_length: 32_768,
        pieces: 4,
        files: &[
            ("multi/c.bin", 5, 0, false),
            ("multi/dir/a.txt", 40_000, 5, false),
            ("multi/dir/sub/b.bin", 70_001, 40_005, false),
        ],
    },
    Expected {
        bytes: LIBTORRENT_HYBRID,
        v1: Some("0ae9fdca01e39c820d605b14238a177052652085"),
        v2: Some("bc3d4f6a44a4e7eacaf437406802030ae1537f60659c5b4b430be7f83f28a303"),
        version: Version::Hybrid,
        piece_length: 16_384,
        pieces: 9,
        // libtorrent pads every file to a piece, the last one too, and names each pad by its size.
        files: &[
            ("multi/c.bin", 5, 0, false),
            ("multi/.pad/16379", 16_379, 5, true),
            ("multi/dir/a.txt", 40_000, 16_384, false),
            ("multi/.pad/9152", 9_152, 56_384, true),
            ("multi/dir/sub/b.bin", 70_001, 65_536, false),
            ("multi/.pad/11919", 11_919, 135_537, true),
        ],
    },
    Expected {
        bytes: LIBTORRENT_V2,
        v1: None,
        v2: Some("d28cc7d2c24d6d9536d7e4bfa4d4ba0e5d2ef90e5830230783b7186a3294b9f4"),
        version: Version::V2Only,
        piece_length: 16_384,
        pieces: 9,
        // A v2 torrent lists no padding files; libtorrent shows the same pads as for the hybrid, at the same
        // offsets, which is where these files start.
        files: &[
            ("multi/c.bin", 5, 0, false),
            ("multi/dir/a.txt", 40_000, 16_384, false),
            ("multi/dir/sub/b.bin", 70_001, 65_536, false),
        ],
    },
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The README's generator: a 64-bit LCG, each state written little-endian.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The three files in torrent order.
fn files() -> [(&'static str, Vec<u8>); 3] {
    [
        ("multi/c.bin", content(5, 4)),
        ("multi/dir/a.txt", content(40_000, 2)),
        ("multi/dir/sub/b.bin", content(70_001, 3)),
    ]
}

#[test]
fn infohashes_and_layouts_match_libtorrent() {
    for expected in TORRENTS {
        let meta = parse_torrent(expected.bytes).expect("valid torrent");
        let info = &meta.info;
        assert_eq!(info.info_hash_v1.map(|h| hex(&h)).as_deref(), expected.v1);
        assert_eq!(info.info_hash_v2.map(|h| hex(&h)).as_deref(), expected.v2);
        assert_eq!(info.version, expected.version);
        assert_eq!(info.name, "multi");
        assert_eq!(info.piece_length.get(), expected.piece_length);
        assert_eq!(info.piece_count(), expected.pieces);
        let files: Vec<(String, u64, u64, bool)> =
            info.files.iter().map(|f| (f.path_string(), f.length, f.offset, f.padding)).collect();
        let want: Vec<(String, u64, u64, bool)> =
            expected.files.iter().map(|&(p, l, o, pad)| (p.to_owned(), l, o, pad)).collect();
        assert_eq!(files, want);
        // The info dict alone (as ut_metadata delivers it) gives the same.
        assert_eq!(parse_info(&info.info_bytes).as_ref(), Ok(info));
        assert_eq!(meta.announce[0], ["http://tracker.example/announce"]);
    }
}

#[test]
fn mktorrent_v1_pieces_and_info_dict_are_rebuilt_byte_for_byte() {
    let meta = parse_torrent(MKTORRENT_V1).expect("valid torrent");
    let piece_length = PieceLength::new(32_768).expect("valid");
    let mut hasher = PieceHasher::new(piece_length);
    let mut list = Vec::new();
    for (path, bytes) in files() {
        hasher.update(&bytes);
        list.push((path.split('/').map(str::to_owned).collect::<Vec<_>>(), bytes.len() as u64));
    }
    let pieces = hasher.finish();
    assert_eq!(pieces, meta.info.pieces);
    // mktorrent's info dict holds exactly what make_v1_info writes, so the infohash is libtorrent's.
    let info = make_v1_info("multi", piece_length, &list, &pieces).expect("valid");
    assert_eq!(info, meta.info.info_bytes);
    let made = parse_torrent(&make_torrent(&info, &[])).expect("valid torrent");
    assert_eq!(made.info.info_hash_v1.map(|h| hex(&h)).as_deref(), Some("bb672d3bdc368750cc40e2cafe3018a0cdd1e776"));
}

#[test]
fn libtorrent_hybrid_v1_pieces_cover_zero_padding() {
    // A hybrid's v1 stream is each file followed by its padding file's zeros.
    let meta = parse_torrent(LIBTORRENT_HYBRID).expect("valid torrent");
    let mut hasher = PieceHasher::new(meta.info.piece_length);
    let contents = files();
    let mut real = contents.iter();
    for file in &meta.info.files {
        if file.padding {
            hasher.update(&vec![0; usize::try_from(file.length).expect("small")]);
        } else {
            let (path, bytes) = real.next().expect("three files");
            assert_eq!(file.path_string(), *path);
            hasher.update(bytes);
        }
    }
    assert_eq!(hasher.finish(), meta.info.pieces);
    let roots = meta.info.files.iter().filter(|f| !f.padding).all(|f: &FileEntry| f.pieces_root.is_some());
    assert!(roots, "hybrid files carry their v2 piece roots");
}

#[test]
fn mktorrent_trackers_comment_and_web_seed() {
    let json = to_json(&parse_torrent(MKTORRENT_V1).expect("valid torrent"));
    assert_eq!(
        json["announce"],
        serde_json::json!([["http://tracker.example/announce"], ["udp://t2.example:6969/announce"]])
    );
    assert_eq!(json["comment"], "made by mktorrent");
    assert_eq!(json["created_by"], "mktorrent 1.1");
    assert_eq!(json["url_list"], serde_json::json!(["http://seed.example/"]));
    assert_eq!(json["info_hash"], "bb672d3bdc368750cc40e2cafe3018a0cdd1e776");
    assert_eq!(json["version"], "v1");
    assert_eq!(json["total_length"], 110_006);
    assert!(json.get("creation_date").is_none(), "made with -d");

    let v2 = to_json(&parse_torrent(LIBTORRENT_V2).expect("valid torrent"));
    assert_eq!(v2["version"], "v2");
    assert!(v2.get("info_hash").is_none());
    assert_eq!(v2["info_hash_v2"], "d28cc7d2c24d6d9536d7e4bfa4d4ba0e5d2ef90e5830230783b7186a3294b9f4");
}
