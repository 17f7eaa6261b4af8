//! A new v1 torrent for a UnixFS file or directory in the store: the files in path order, the pieces hashed
//! by streaming the DAG (nothing is written to disk).

use std::io::Write;

use btfs_chunker::Cid;
use btfs_chunker::torrent::{self as metainfo, Info, PieceHasher, PieceLength};

use super::{FileRecord, TorrentError};
use crate::Node;
use crate::read::{self, EntryKind};

/// Smallest and largest piece sizes picked.
const MIN_PIECE: u64 = 256 * 1024;
const MAX_PIECE: u64 = 16 * 1024 * 1024;
/// About how many pieces a torrent gets (the piece size doubles until it has at most this many).
const TARGET_PIECES: u64 = 2048;
/// Files in one torrent made here.
const MAX_FILES: usize = 100_000;

/// A torrent made from a DAG.
pub(super) struct Made {
    pub info: Info,
    pub files: Vec<FileRecord>,
}

/// The piece size for `total` bytes: a power of two from 256 KiB to 16 MiB.
pub(super) fn piece_length(total: u64) -> u64 {
    let mut p = MIN_PIECE;
    while p < MAX_PIECE && total.div_ceil(p) > TARGET_PIECES {
        p *= 2;
    }
    p
}

/// Makes the torrent for `root`, named `name` (default: the CID).
pub(super) fn torrent_for(node: &Node, root: &Cid, name: Option<String>) -> Result<Made, TorrentError> {
    let store = node.repo().store();
    let read_err = |e: read::ReadError| TorrentError::Invalid(format!("{root}: {e}"));
    let name = name.unwrap_or_else(|| root.to_string());
    // Paths as the info dict has them: `[name]` for a single file, `[name, dir.., file]` in a directory.
    let mut files: Vec<(Vec<String>, Cid, u64)> = Vec::new();
    let single = match read::file_size(store, root) {
        Ok(size) => {
            files.push((vec![name.clone()], *root, size));
            true
        }
        Err(read::ReadError::IsDirectory { .. }) => {
            collect(node, root, &mut vec![name.clone()], &mut files)?;
            files.sort_by(|a, b| a.0.cmp(&b.0));
            if files.is_empty() {
                return Err(TorrentError::Invalid(format!("{root} is an empty directory; a torrent needs a file")));
            }
            false
        }
        Err(e) => return Err(read_err(e)),
    };
    let total: u64 = files.iter().map(|f| f.2).sum();
    let piece = PieceLength::new(piece_length(total)).map_err(|e| TorrentError::Invalid(e.to_string()))?;
    let mut hasher = PieceHasher::new(piece);
    for (_, cid, size) in &files {
        let mut sink = HashSink { hasher: &mut hasher };
        let n = read::cat(store, cid, 0, None, &mut sink).map_err(read_err)?;
        if n != *size {
            return Err(TorrentError::Invalid(format!("{cid} holds {n} bytes but says {size}")));
        }
    }
    let pieces = hasher.finish();
    let entries: Vec<(Vec<String>, u64)> = files.iter().map(|(p, _, s)| (p.clone(), *s)).collect();
    let bad = |e: metainfo::MetainfoError| TorrentError::Invalid(format!("cannot make a torrent for {root}: {e}"));
    let info_bytes = metainfo::make_v1_info(&name, piece, &entries, &pieces).map_err(bad)?;
    let info = metainfo::parse_info(&info_bytes).map_err(bad)?;
    let records = files
        .iter()
        .map(|(p, cid, size)| FileRecord {
            path: if single { name.clone() } else { p[1..].join("/") },
            length: *size,
            cid: Some(cid.to_string()),
            padding: false,
        })
        .collect();
    Ok(Made { info, files: records })
}

/// Appends the files under directory `dir` (at `prefix`) to `out`. Symlinks have no place in a v1 torrent
/// and are left out.
fn collect(
    node: &Node,
    dir: &Cid,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Cid, u64)>,
) -> Result<(), TorrentError> {
    if prefix.len() > 65 {
        return Err(TorrentError::Invalid(format!("directories nest deeper than 64 under {dir}")));
    }
    let entries = read::ls(node.repo().store(), dir).map_err(|e| TorrentError::Invalid(format!("{dir}: {e}")))?;
    for e in entries {
        prefix.push(e.name.clone());
        match e.kind {
            EntryKind::Directory => collect(node, &e.cid, prefix, out)?,
            EntryKind::File => {
                let size = read::file_size(node.repo().store(), &e.cid)
                    .map_err(|err| TorrentError::Invalid(format!("{}: {err}", e.cid)))?;
                out.push((prefix.clone(), e.cid, size));
                if out.len() > MAX_FILES {
                    return Err(TorrentError::Invalid(format!("more than {MAX_FILES} files")));
                }
            }
            _ => {}
        }
        prefix.pop();
    }
    Ok(())
}

/// Feeds `cat`'s output to the piece hasher.
struct HashSink<'a> {
    hasher: &'a mut PieceHasher,
}

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_sizes_are_powers_of_two_in_range() {
        assert_eq!(piece_length(0), MIN_PIECE);
        assert_eq!(piece_length(1024 * 1024 * 1024), 512 * 1024, "1 GiB: 2048 pieces of 512 KiB");
        assert_eq!(piece_length(u64::MAX / 2), MAX_PIECE);
        for total in [1u64, 1 << 20, 3 << 30, 1 << 40] {
            let p = piece_length(total);
            assert!(p.is_power_of_two() && (MIN_PIECE..=MAX_PIECE).contains(&p), "{total}: {p}");
        }
    }
}
