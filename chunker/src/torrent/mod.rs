//! BitTorrent metadata, read strictly from outside bytes and written canonically.
//!
//! - [`bencode`]: the encoding, decoded without recursion, within fixed limits, keeping each value's raw bytes.
//! - [`metainfo`]: .torrent files and info dicts (v1, hybrid, v2-only), their validation and infohashes, and
//!   the parts of a new v1 torrent (info dict, .torrent wrapper, piece hasher).
//! - [`magnet`]: magnet links and bare infohashes.
//!
//! Pure like the rest of the crate: callers hand in bytes and strings; fetching metadata from peers, reading
//! files and talking to trackers belong to the node.

pub mod bencode;
pub mod magnet;
pub mod metainfo;

pub use magnet::{Magnet, MagnetError, parse_info_hash, parse_magnet};
pub use metainfo::{
    FileAttr, FileEntry, Info, Metainfo, MetainfoError, PieceHasher, PieceLength, PieceLengthError, Version,
    make_torrent, make_v1_info, parse_info, parse_torrent, to_json,
};

/// Lowercase hex, as infohashes are written.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
