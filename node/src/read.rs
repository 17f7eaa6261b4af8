//! Reading UnixFS back out: path resolution (plain and HAMT directories), `cat` with ranges, `ls`, `get`
//! (to disk, or as a tar stream for the RPC API).
//!
//! `cat` runs a producer thread that walks the file's DAG and reads blocks while the caller's thread writes
//! bytes out; the channel between them is bounded, so memory stays at a few blocks. Blocks are not rehashed
//! on this path: RocksDB checksums every stored block on read and every block was hashed before it was
//! stored (`repo verify` rehashes on demand). DAG depth and sizes come from stored data that may have
//! arrived from outside, so the walk is bounded in depth and checks sizes instead of trusting them.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use btfs_chunker::Cid;
use btfs_chunker::block::RAW;
use btfs_chunker::dagpb::{self, DecodeError, PbNode};
use btfs_chunker::unixfs::{Data, DataType};
use btfs_chunker::walk::{HamtStep, MAX_DEPTH, MAX_HAMT_DEPTH, UnixfsNode, clip, hamt_step};

use crate::repo::{BlockStore, StoreError};

/// File segments in flight between the DAG walker and the writer.
const READ_AHEAD: usize = 16;

/// Errors reading content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("invalid path or CID {0:?}")]
    BadPath(String),
    #[error("block {cid} not found in the local store")]
    NotFound { cid: Cid },
    #[error("no link named {name:?} under {cid}")]
    NoLink { cid: Cid, name: String },
    #[error("{cid} is a directory (use `ls` or `get`)")]
    IsDirectory { cid: Cid },
    #[error("{cid} is not a directory")]
    NotDirectory { cid: Cid },
    #[error("block {cid} is not valid UnixFS: {reason}")]
    Malformed { cid: Cid, reason: String },
    #[error("DAG under {cid} is deeper than {MAX_DEPTH} levels")]
    TooDeep { cid: Cid },
    #[error("write failed")]
    Write(#[source] io::Error),
    #[error("cannot write {path}")]
    Output { path: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A decoded UnixFS node.
#[derive(Debug)]
pub enum Node {
    /// A raw block: file bytes.
    Raw(Vec<u8>),
    /// A dag-pb node with its UnixFS data.
    Pb(PbNode, Data),
}

fn malformed(cid: &Cid, e: impl std::fmt::Display) -> ReadError {
    ReadError::Malformed { cid: *cid, reason: e.to_string() }
}

/// Reads and decodes a UnixFS node.
pub fn load(store: &BlockStore, cid: &Cid) -> Result<Node, ReadError> {
    let bytes = store.get(cid)?.ok_or(ReadError::NotFound { cid: *cid })?;
    match cid.codec() {
        RAW => Ok(Node::Raw(bytes)),
        dagpb::CODEC => {
            let node = PbNode::decode(&bytes).map_err(|e: DecodeError| malformed(cid, e))?;
            let data = node.data.as_deref().ok_or_else(|| malformed(cid, "dag-pb node without UnixFS data"))?;
            let data = Data::decode(data).map_err(|e| malformed(cid, e))?;
            Ok(Node::Pb(node, data))
        }
        other => Err(malformed(cid, format!("codec {other:#x} is not UnixFS"))),
    }
}

/// Parses `<cid>`, `/ipfs/<cid>/a/b` or `/btfs/<cid>/a/b` and resolves the path through directories.
pub fn resolve(store: &BlockStore, path: &str) -> Result<Cid, ReadError> {
    let trimmed = path.strip_prefix("/ipfs/").or_else(|| path.strip_prefix("/btfs/")).unwrap_or(path);
    let mut parts = trimmed.split('/').filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(|| ReadError::BadPath(path.to_string()))?;
    let mut cid = Cid::try_from(first).map_err(|_| ReadError::BadPath(path.to_string()))?;
    for name in parts {
        cid = lookup(store, &cid, name)?;
    }
    Ok(cid)
}

/// Finds `name` in the directory `dir` (plain or HAMT).
pub fn lookup(store: &BlockStore, dir: &Cid, name: &str) -> Result<Cid, ReadError> {
    let Node::Pb(node, data) = load(store, dir)? else { return Err(ReadError::NotDirectory { cid: *dir }) };
    match data.kind {
        DataType::Directory => node
            .links
            .iter()
            .find(|l| l.name.as_deref() == Some(name))
            .map(|l| l.hash)
            .ok_or_else(|| ReadError::NoLink { cid: *dir, name: name.into() }),
        DataType::HamtShard => {
            let (mut node, mut shard_cid) = (node, *dir);
            for depth in 0..MAX_HAMT_DEPTH {
                match hamt_step(&node.links, name, depth) {
                    HamtStep::Found(cid) => return Ok(cid),
                    HamtStep::Absent => return Err(ReadError::NoLink { cid: *dir, name: name.into() }),
                    HamtStep::Descend(shard) => shard_cid = shard,
                }
                match load(store, &shard_cid)? {
                    Node::Pb(n, d) if d.kind == DataType::HamtShard => node = n,
                    _ => return Err(malformed(&shard_cid, "HAMT link to a non-shard")),
                }
            }
            Err(ReadError::TooDeep { cid: shard_cid })
        }
        _ => Err(ReadError::NotDirectory { cid: *dir }),
    }
}

/// The byte length of a file node.
pub fn file_size(store: &BlockStore, cid: &Cid) -> Result<u64, ReadError> {
    match load(store, cid)? {
        Node::Raw(b) => Ok(b.len() as u64),
        Node::Pb(_, d) if d.kind.is_directory() => Err(ReadError::IsDirectory { cid: *cid }),
        Node::Pb(_, d) => Ok(d.filesize.unwrap_or_else(|| d.data.as_ref().map_or(0, |x| x.len() as u64))),
    }
}

/// A run of file bytes inside a block, handed from the DAG walker to the writer without copying.
struct Segment {
    block: Vec<u8>,
    start: usize,
    end: usize,
}

/// Writes bytes `[offset, offset + length)` of the file at `cid` to `out`.
pub fn cat(
    store: &BlockStore,
    cid: &Cid,
    offset: u64,
    length: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, ReadError> {
    // Directories and missing blocks, the root included, are reported by the walker through the channel.
    let end = length.map_or(u64::MAX, |l| offset.saturating_add(l));
    std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<Result<Segment, ReadError>>(READ_AHEAD);
        s.spawn(move || {
            let mut emit = |seg: Segment| tx.send(Ok(seg)).is_ok();
            if let Err(e) = walk_file(store, cid, 0, offset, end, 0, &mut emit) {
                let _ = tx.send(Err(e));
            }
        });
        let mut written = 0u64;
        for item in rx {
            let seg = item?;
            out.write_all(&seg.block[seg.start..seg.end]).map_err(ReadError::Write)?;
            written += (seg.end - seg.start) as u64;
        }
        out.flush().map_err(ReadError::Write)?;
        Ok(written)
    })
}

/// Emits the part of the file DAG at `cid` (which starts at byte `start` of the file) that falls in
/// `[from, to)`. Returns false once `emit` asks to stop.
fn walk_file(
    store: &BlockStore,
    cid: &Cid,
    start: u64,
    from: u64,
    to: u64,
    depth: usize,
    emit: &mut dyn FnMut(Segment) -> bool,
) -> Result<bool, ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::TooDeep { cid: *cid });
    }
    let block = store.get(cid)?.ok_or(ReadError::NotFound { cid: *cid })?;
    // Raw blocks decode as a file whose own bytes are the whole block; other codecs are refused.
    let (own, children) = match UnixfsNode::decode(cid, &block).map_err(|e| malformed(cid, e))? {
        UnixfsNode::File { own, children, .. } => (own, children),
        UnixfsNode::Directory { .. } | UnixfsNode::HamtShard { .. } => {
            return Err(ReadError::IsDirectory { cid: *cid });
        }
        UnixfsNode::Symlink { .. } => return Err(malformed(cid, "not a file")),
    };
    let overflow = || malformed(cid, "sizes overflow 64 bits");
    let mut at = start;
    if own.is_empty() {
        // Only the child list is needed from here on; do not hold the block through the recursion.
        drop(block);
    } else {
        at = at.checked_add(own.len() as u64).ok_or_else(overflow)?;
        if let Some((lo, hi)) = clip(start, own.len(), from, to)
            && !emit(Segment { block, start: own.start + lo, end: own.start + hi })
        {
            return Ok(false);
        }
    }
    for (child, size) in children {
        let child_end = at.checked_add(size).ok_or_else(overflow)?;
        if child_end > from && at < to && !walk_file(store, &child, at, from, to, depth + 1, emit)? {
            return Ok(false);
        }
        at = child_end;
        if at >= to {
            break;
        }
    }
    Ok(true)
}

/// One entry of `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub name: String,
    pub cid: Cid,
    /// File size for files, 0 for directories.
    pub size: u64,
    pub kind: EntryKind,
    /// A symlink's target; empty for anything else.
    pub target: String,
}

/// What an `ls` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Unknown,
}

impl EntryKind {
    /// The UnixFS type number kubo reports in `ls` JSON: 1 directory, 2 file, 4 symlink, 0 unknown.
    pub fn unixfs_code(self) -> u8 {
        match self {
            Self::Directory => 1,
            Self::File => 2,
            Self::Symlink => 4,
            Self::Unknown => 0,
        }
    }
}

/// Lists a directory (plain or HAMT, in name order), or the chunks of a file.
pub fn ls(store: &BlockStore, cid: &Cid) -> Result<Vec<LsEntry>, ReadError> {
    let mut links = Vec::new();
    match load(store, cid)? {
        Node::Raw(_) => {}
        Node::Pb(node, data) => match data.kind {
            DataType::HamtShard => hamt_entries(store, node, 0, &mut links)?,
            _ => links = node.links.into_iter().map(|l| (l.name.unwrap_or_default(), l.hash)).collect(),
        },
    }
    let mut out = Vec::with_capacity(links.len());
    for (name, child) in links {
        let mut target = String::new();
        let (kind, size) = match load(store, &child) {
            Ok(Node::Raw(b)) => (EntryKind::File, b.len() as u64),
            Ok(Node::Pb(_, d)) => match d.kind {
                DataType::Directory | DataType::HamtShard => (EntryKind::Directory, 0),
                DataType::Symlink => {
                    let bytes = d.data.unwrap_or_default();
                    target = String::from_utf8_lossy(&bytes).into_owned();
                    (EntryKind::Symlink, bytes.len() as u64)
                }
                DataType::File | DataType::Raw => (EntryKind::File, d.filesize.unwrap_or(0)),
                DataType::Metadata => (EntryKind::Unknown, 0),
            },
            Err(ReadError::NotFound { .. }) => (EntryKind::Unknown, 0),
            Err(e) => return Err(e),
        };
        out.push(LsEntry { name, cid: child, size, kind, target });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn hamt_entries(store: &BlockStore, node: PbNode, depth: usize, out: &mut Vec<(String, Cid)>) -> Result<(), ReadError> {
    let mut seen = std::collections::HashSet::new();
    hamt_walk(store, node, depth, out, &mut seen)
}

/// Gathers a HAMT's entries. A shard has at most 256 links, each with a two-hex-digit slot prefix, and a
/// sub-shard is visited once, so a hostile DAG cannot make this loop or multiply entries.
fn hamt_walk(
    store: &BlockStore,
    node: PbNode,
    depth: usize,
    out: &mut Vec<(String, Cid)>,
    seen: &mut std::collections::HashSet<Cid>,
) -> Result<(), ReadError> {
    let first = node.links.first().map(|l| l.hash).unwrap_or_default();
    if depth > MAX_HAMT_DEPTH {
        return Err(ReadError::TooDeep { cid: first });
    }
    if node.links.len() > 256 {
        return Err(malformed(&first, "HAMT shard with more than 256 links"));
    }
    for link in node.links {
        let name = link.name.unwrap_or_default();
        let (prefix, rest) = (name.get(..2), name.get(2..));
        if !prefix.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))) {
            return Err(malformed(&link.hash, format!("HAMT link name {name:?} has no slot prefix")));
        }
        match rest {
            Some(entry) if !entry.is_empty() => out.push((entry.to_string(), link.hash)),
            _ => {
                if !seen.insert(link.hash) {
                    return Err(malformed(&link.hash, "HAMT sub-shard linked twice"));
                }
                match load(store, &link.hash)? {
                    Node::Pb(child, d) if d.kind == DataType::HamtShard => {
                        hamt_walk(store, child, depth + 1, out, seen)?
                    }
                    _ => return Err(malformed(&link.hash, "HAMT link to a non-shard")),
                }
            }
        }
    }
    Ok(())
}

/// Writes the file, directory tree or symlink at `cid` to `dest`. The tree is built under a temporary name
/// next to `dest` and renamed into place at the end, so a failure leaves no partial output behind.
pub fn get(store: &BlockStore, cid: &Cid, dest: &Path, progress: &dyn Fn(u64)) -> Result<(), ReadError> {
    let out_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| ReadError::Output { path, source }
    };
    if dest.exists() {
        return Err(out_err(dest)(io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists")));
    }
    let tmp =
        dest.with_file_name(format!(".{}.btfs-partial", dest.file_name().and_then(|n| n.to_str()).unwrap_or("get")));
    let result = write_tree(store, cid, &tmp, 0, progress);
    match result {
        Ok(()) => fs::rename(&tmp, dest).map_err(out_err(dest)),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
            Err(e)
        }
    }
}

fn write_tree(
    store: &BlockStore,
    cid: &Cid,
    dest: &Path,
    depth: usize,
    progress: &dyn Fn(u64),
) -> Result<(), ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::TooDeep { cid: *cid });
    }
    let out_err = |source| ReadError::Output { path: dest.display().to_string(), source };
    let kind = match load(store, cid)? {
        Node::Raw(_) => DataType::File,
        Node::Pb(_, d) => {
            if d.kind == DataType::Symlink {
                let target = String::from_utf8(d.data.unwrap_or_default()).map_err(|e| malformed(cid, e))?;
                return make_symlink(&target, dest).map_err(out_err);
            }
            d.kind
        }
    };
    if kind.is_directory() {
        fs::create_dir(dest).map_err(out_err)?;
        for entry in safe_entries(store, cid)? {
            write_tree(store, &entry.cid, &dest.join(&entry.name), depth + 1, progress)?;
        }
        Ok(())
    } else {
        // `create_new` refuses an existing path, a symlink included, so nothing outside `dest` is written.
        let file = fs::OpenOptions::new().write(true).create_new(true).open(dest).map_err(out_err)?;
        let mut file = io::BufWriter::with_capacity(1 << 20, file);
        cat(store, cid, 0, None, &mut Counting { inner: &mut file, progress })?;
        Ok(())
    }
}

/// Writes the file, directory tree or symlink at `cid` to `out` as a tar stream whose root entry is
/// `name`, as kubo's `get` sends it over the RPC API. Entry names get the same checks as `get` to disk.
pub fn get_tar(store: &BlockStore, cid: &Cid, name: &str, out: &mut dyn Write) -> Result<(), ReadError> {
    let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut tar = crate::tar::Writer::new(out, mtime);
    tar_tree(store, cid, name, 0, &mut tar)?;
    tar.finish().map_err(ReadError::Write)?;
    Ok(())
}

fn tar_tree(
    store: &BlockStore,
    cid: &Cid,
    path: &str,
    depth: usize,
    tar: &mut crate::tar::Writer<&mut dyn Write>,
) -> Result<(), ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::TooDeep { cid: *cid });
    }
    let kind = match load(store, cid)? {
        Node::Raw(bytes) => {
            let mut body = tar.file(path, bytes.len() as u64).map_err(ReadError::Write)?;
            body.write_all(&bytes).map_err(ReadError::Write)?;
            return body.finish().map_err(ReadError::Write);
        }
        Node::Pb(_, d) if d.kind == DataType::Symlink => {
            let target = String::from_utf8(d.data.unwrap_or_default()).map_err(|e| malformed(cid, e))?;
            return tar.symlink(path, &target).map_err(ReadError::Write);
        }
        Node::Pb(_, d) => d.kind,
    };
    if kind.is_directory() {
        tar.directory(path).map_err(ReadError::Write)?;
        for entry in safe_entries(store, cid)? {
            tar_tree(store, &entry.cid, &format!("{path}/{}", entry.name), depth + 1, tar)?;
        }
        Ok(())
    } else {
        let size = file_size(store, cid)?;
        let mut body = tar.file(path, size).map_err(ReadError::Write)?;
        cat(store, cid, 0, None, &mut body)?;
        // A DAG whose sizes disagree with its data would leave the entry short: refuse rather than corrupt.
        body.finish().map_err(|e| malformed(cid, e))
    }
}

/// A writer that reports how many bytes went through it.
struct Counting<'a, W> {
    inner: &'a mut W,
    progress: &'a dyn Fn(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A directory's entries, refusing names that could escape the output (empty, `.`, `..`, a path
/// separator) and repeated names (a second entry could write through a symlink made by the first).
fn safe_entries(store: &BlockStore, cid: &Cid) -> Result<Vec<LsEntry>, ReadError> {
    let entries = ls(store, cid)?;
    let mut names = std::collections::HashSet::new();
    for entry in &entries {
        if entry.name.is_empty() || entry.name == "." || entry.name == ".." || entry.name.contains(['/', '\\']) {
            return Err(malformed(cid, format!("unsafe entry name {:?}", entry.name)));
        }
        if !names.insert(entry.name.as_str()) {
            return Err(malformed(cid, format!("duplicate entry name {:?}", entry.name)));
        }
    }
    Ok(entries)
}

#[cfg(unix)]
pub(crate) fn make_symlink(target: &str, dest: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, dest)
}

#[cfg(not(unix))]
pub(crate) fn make_symlink(target: &str, dest: &Path) -> io::Result<()> {
    fs::write(dest, target)
}
