//! `add`: files and directories from disk or a stream into UnixFS DAGs in the block store.
//!
//! One file is imported by a small pipeline of scoped threads: a reader cuts the input into chunks, two
//! workers encode and hash leaves (the expensive part; SHA-256 runs at ~1.8 GB/s per core), and the calling
//! thread puts leaves back in order, feeds the layout builder and writes blocks to RocksDB in batches. Every
//! channel is bounded, so memory stays at a few chunks per thread plus one write batch, whatever the file
//! size. Directories are walked in name order and built bottom-up once their entries are known.
//!
//! Input comes from disk (`AddInput::Path`), from one stream (`AddInput::Stream`, stdin), or as a tree that
//! arrives entry by entry (`AddInput::Tree`, an HTTP multipart upload in kubo's layout: each entry a path,
//! a directory before its contents). A streamed tree is built with a stack of open directories, so it is
//! never held whole; hidden-file filtering and the `-r` check are the sender's business there, as in kubo.
//!
//! Durability: blocks are written without the WAL and synced once, before the pin that makes them
//! reachable is recorded (see `repo::store`). An add that fails part-way leaves no pin and no entry that
//! points at its blocks; the orphans are removed by `repo gc`, as kubo's are.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use btfs_chunker::chunk::Chunker;
use btfs_chunker::dagpb::{self, PbNode};
use btfs_chunker::dir::{DirectoryBuilder, EntryError};
use btfs_chunker::file::FileBuilder;
use btfs_chunker::import::{self, Params};
use btfs_chunker::unixfs::{Data, DataType};
use btfs_chunker::{Block, Cid, Link};

use crate::repo::{BlockStore, PinKind, StoreError};

/// Bytes of blocks gathered before one write batch goes to the store.
const WRITE_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Chunks in flight between pipeline stages (per channel).
const PIPELINE_DEPTH: usize = 8;
/// Leaf-hashing threads: the machine this targets has two cores.
const HASH_WORKERS: usize = 2;

/// What to add and how.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    pub import: import::Options,
    /// Pin the roots (kubo's default is true; callers set it).
    pub pin: bool,
    /// Compute CIDs without storing anything.
    pub only_hash: bool,
    /// Wrap the inputs in a directory (`-w`).
    pub wrap: bool,
    /// Allow directories (`-r`).
    pub recursive: bool,
    /// Include files and directories whose names start with a dot (`-H`).
    pub hidden: bool,
}

/// One input to `add`.
pub enum AddInput {
    Path(PathBuf),
    /// A stream (stdin, an HTTP body) and the name to report it under.
    Stream {
        name: Option<String>,
        reader: Box<dyn Read + Send>,
    },
    /// Files, directories and symlinks arriving one by one; each top-level entry is a root.
    Tree(Box<dyn TreeSource>),
}

impl std::fmt::Debug for AddInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Stream { name, .. } => f.debug_struct("Stream").field("name", name).finish_non_exhaustive(),
            Self::Tree(_) => f.debug_tuple("Tree").finish_non_exhaustive(),
        }
    }
}

/// One entry of a streamed tree.
pub struct TreeEntry {
    /// `/`-separated path relative to the upload's root; empty for an unnamed top-level file.
    pub path: String,
    pub kind: TreeEntryKind,
}

/// What a streamed tree entry is.
pub enum TreeEntryKind {
    Directory,
    /// A file's bytes, read to the end before the next entry is asked for.
    File(Box<dyn Read + Send>),
    Symlink(String),
}

/// A source of tree entries in depth-first order: a directory's entries follow it, contiguously. A file
/// whose parent directories were not sent gets them implicitly, as kubo does.
pub trait TreeSource: Send {
    /// The next entry, `None` at the end of the tree.
    fn next_entry(&mut self) -> io::Result<Option<TreeEntry>>;
}

/// One entry `add` reports, as kubo prints it: `added <cid> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub cid: Cid,
    pub name: String,
    /// Cumulative size of the entry's DAG.
    pub size: u64,
}

/// Progress and results as they happen.
pub trait AddEvents {
    /// An entry is complete.
    fn added(&mut self, entry: &Added);
    /// A file starts; `name` is what `added` will report for it.
    fn file_started(&mut self, _name: &str) {}
    /// `n` more content bytes were read.
    fn progress(&mut self, _n: u64) {}
}

/// Errors from `add`.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Options(#[from] import::OptionsError),
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path} is a directory (use -r to add directories)")]
    IsDirectory { path: String },
    #[error("cannot read {path}")]
    Read { path: String, source: io::Error },
    #[error("{path}: file name is not valid UTF-8")]
    BadName { path: String },
    #[error("{path}: unsupported file type (only files, directories and symlinks can be added)")]
    FileType { path: String },
    #[error("{path:?} is not a path inside the upload")]
    BadTreePath { path: String },
    #[error("cannot read the upload")]
    ReadTree(#[source] io::Error),
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("nothing to add")]
    Empty,
    #[error("internal error: {0}")]
    Bug(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes blocks to the store in batches (or drops them, for `--only-hash`).
struct BlockSink<'a> {
    store: Option<&'a BlockStore>,
    batch: Vec<Block>,
    bytes: usize,
    error: Option<StoreError>,
}

impl<'a> BlockSink<'a> {
    fn new(store: Option<&'a BlockStore>) -> Self {
        Self { store, batch: Vec::new(), bytes: 0, error: None }
    }

    fn push(&mut self, block: Block) {
        if self.store.is_none() || self.error.is_some() {
            return;
        }
        self.bytes += block.data.len();
        self.batch.push(block);
        if self.bytes >= WRITE_BATCH_BYTES {
            self.flush_batch();
        }
    }

    fn flush_batch(&mut self) {
        if let Some(store) = self.store
            && !self.batch.is_empty()
            && let Err(e) = store.put_many(&self.batch)
        {
            self.error.get_or_insert(e);
        }
        self.batch.clear();
        self.bytes = 0;
    }

    /// Writes what is left and reports the first write error.
    fn finish(&mut self) -> Result<(), StoreError> {
        self.flush_batch();
        self.error.take().map_or(Ok(()), Err)
    }
}

/// Runs an add. Returns the root entries (one per input, or the wrapper).
pub fn add(
    store: &BlockStore,
    inputs: Vec<AddInput>,
    opts: &AddOptions,
    events: &mut dyn AddEvents,
) -> Result<Vec<Added>, AddError> {
    if inputs.is_empty() {
        return Err(AddError::Empty);
    }
    let params = opts.import.resolve()?;
    let mut sink = BlockSink::new((!opts.only_hash).then_some(store));
    let mut ctx = Ctx { params, opts, sink: &mut sink, events, dirs: Vec::new() };
    let mut roots = Vec::new();
    for input in inputs {
        match input {
            AddInput::Path(path) => {
                let name = base_name(&path)?;
                let link = ctx.add_path(&path, &name)?;
                roots.push((name, link));
            }
            AddInput::Stream { name, reader } => roots.push(ctx.add_named_stream(name, reader, "<stdin>")?),
            AddInput::Tree(source) => ctx.add_tree(source, &mut roots)?,
        }
    }
    // An upload with no parts in it (kubo: "expected a file argument").
    if roots.is_empty() {
        return Err(AddError::Empty);
    }
    let mut dirs = std::mem::take(&mut ctx.dirs);
    let results = if opts.wrap {
        let mut wrapper = DirectoryBuilder::new();
        for (name, link) in &roots {
            wrapper.insert(name.clone(), *link)?;
        }
        let sink = &mut *ctx.sink;
        let link = wrapper.finish(&ctx.params.dir, &mut |b| sink.push(b));
        dirs.push(Added { cid: link.cid, name: String::new(), size: link.tsize });
        vec![Added { cid: link.cid, name: String::new(), size: link.tsize }]
    } else {
        roots.iter().map(|(name, link)| Added { cid: link.cid, name: name.clone(), size: link.tsize }).collect()
    };
    for d in &dirs {
        ctx.events.added(d);
    }
    sink.finish()?;
    if !opts.only_hash {
        if opts.pin {
            let pins: Vec<(Cid, PinKind)> = results.iter().map(|r| (r.cid, PinKind::Recursive)).collect();
            store.update_pins(&pins, &[])?;
        } else {
            store.sync_blocks()?;
        }
    }
    Ok(results)
}

struct Ctx<'a, 'b> {
    params: Params,
    opts: &'a AddOptions,
    sink: &'a mut BlockSink<'b>,
    events: &'a mut dyn AddEvents,
    /// Directory entries, reported after all files as kubo does (post-order).
    dirs: Vec<Added>,
}

pub(crate) fn base_name(path: &Path) -> Result<String, AddError> {
    let name = match path.file_name() {
        Some(n) => n,
        // "." or "/" : use the canonical directory's name.
        None => {
            let canon = fs::canonicalize(path).map_err(|source| read_err(path, source))?;
            return Ok(canon.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string());
        }
    };
    name.to_str().map(str::to_string).ok_or_else(|| AddError::BadName { path: path.display().to_string() })
}

/// Orders `/`-separated paths so that each comes after the paths under it, and siblings by name.
fn post_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some(p), Some(q)) if p == q => {}
            (Some(p), Some(q)) => return p.cmp(q),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
        }
    }
}

/// Splits a streamed entry's path into its names. `.` and empty segments are dropped (kubo cleans paths);
/// `..` is refused rather than resolved, so no entry can name something outside its own tree.
fn tree_path(path: &str) -> Result<Vec<&str>, AddError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(AddError::BadTreePath { path: path.to_string() }),
            name => parts.push(name),
        }
    }
    Ok(parts)
}

pub(crate) fn read_err(path: &Path, source: io::Error) -> AddError {
    if source.kind() == io::ErrorKind::NotFound {
        AddError::NotFound { path: path.display().to_string() }
    } else {
        AddError::Read { path: path.display().to_string(), source }
    }
}

impl Ctx<'_, '_> {
    fn add_path(&mut self, path: &Path, shown: &str) -> Result<Link, AddError> {
        let meta = fs::symlink_metadata(path).map_err(|e| read_err(path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| read_err(path, e))?;
            let target = target.to_str().ok_or_else(|| AddError::BadName { path: path.display().to_string() })?;
            let link = self.symlink(target);
            self.events.added(&Added { cid: link.cid, name: shown.to_string(), size: link.tsize });
            Ok(link)
        } else if ft.is_dir() {
            if !self.opts.recursive {
                return Err(AddError::IsDirectory { path: path.display().to_string() });
            }
            let mut entries = Vec::new();
            for entry in fs::read_dir(path).map_err(|e| read_err(path, e))? {
                let entry = entry.map_err(|e| read_err(path, e))?;
                let name = entry.file_name();
                let name =
                    name.to_str().ok_or_else(|| AddError::BadName { path: entry.path().display().to_string() })?;
                if !self.opts.hidden && name.starts_with('.') {
                    continue;
                }
                entries.push(name.to_string());
            }
            entries.sort();
            let mut dir = DirectoryBuilder::new();
            for name in entries {
                let child = self.add_path(&path.join(&name), &format!("{shown}/{name}"))?;
                dir.insert(name, child)?;
            }
            let sink = &mut *self.sink;
            let link = dir.finish(&self.params.dir, &mut |b| sink.push(b));
            self.dirs.push(Added { cid: link.cid, name: shown.to_string(), size: link.tsize });
            Ok(link)
        } else if ft.is_file() {
            let file = fs::File::open(path).map_err(|e| read_err(path, e))?;
            self.events.file_started(shown);
            let link = self.add_stream(Box::new(file), &path.display().to_string())?;
            self.events.added(&Added { cid: link.cid, name: shown.to_string(), size: link.tsize });
            Ok(link)
        } else {
            Err(AddError::FileType { path: path.display().to_string() })
        }
    }

    /// A top-level stream; without a name it is reported, and wrapped, under its CID as kubo does.
    fn add_named_stream(
        &mut self,
        name: Option<String>,
        reader: Box<dyn Read + Send>,
        what: &str,
    ) -> Result<(String, Link), AddError> {
        self.events.file_started(name.as_deref().unwrap_or(""));
        let link = self.add_stream(reader, what)?;
        let name = name.unwrap_or_else(|| link.cid.to_string());
        self.events.added(&Added { cid: link.cid, name: name.clone(), size: link.tsize });
        Ok((name, link))
    }

    /// Builds the entries of a streamed tree, pushing each top-level entry onto `roots`.
    fn add_tree(&mut self, mut source: Box<dyn TreeSource>, roots: &mut Vec<(String, Link)>) -> Result<(), AddError> {
        // The directories being built, outermost first: each is (its name, its builder).
        let mut open: Vec<(String, DirectoryBuilder)> = Vec::new();
        let first_dir = self.dirs.len();
        while let Some(entry) = source.next_entry().map_err(AddError::ReadTree)? {
            let parts = tree_path(&entry.path)?;
            let Some((name, parents)) = parts.split_last() else {
                // Only a file may be unnamed: it is a top-level stream.
                let TreeEntryKind::File(reader) = entry.kind else {
                    return Err(AddError::BadTreePath { path: entry.path });
                };
                self.close_dirs(&mut open, 0, roots)?;
                roots.push(self.add_named_stream(None, reader, "the upload")?);
                continue;
            };
            // Close the open directories this entry is not inside, then open the ones it is inside.
            let keep =
                open.iter().zip(parents).take_while(|((open_name, _), part)| open_name.as_str() == **part).count();
            self.close_dirs(&mut open, keep, roots)?;
            for part in &parents[open.len()..] {
                open.push(((*part).to_string(), DirectoryBuilder::new()));
            }
            let shown = parts.join("/");
            let link = match entry.kind {
                TreeEntryKind::Directory => {
                    open.push(((*name).to_string(), DirectoryBuilder::new()));
                    continue;
                }
                TreeEntryKind::File(reader) => {
                    self.events.file_started(&shown);
                    self.add_stream(reader, &shown)?
                }
                TreeEntryKind::Symlink(target) => self.symlink(&target),
            };
            self.events.added(&Added { cid: link.cid, name: shown, size: link.tsize });
            match open.last_mut() {
                Some((_, dir)) => dir.insert((*name).to_string(), link)?,
                None => roots.push(((*name).to_string(), link)),
            }
        }
        self.close_dirs(&mut open, 0, roots)?;
        // Entries arrive in the sender's order; kubo reports a tree's directories in its own order, each
        // after everything under it and siblings by name, as a walk of the disk does.
        self.dirs[first_dir..].sort_by(|a, b| post_order(&a.name, &b.name));
        Ok(())
    }

    /// Finishes open directories of a streamed tree, innermost first, until `keep` remain.
    fn close_dirs(
        &mut self,
        open: &mut Vec<(String, DirectoryBuilder)>,
        keep: usize,
        roots: &mut Vec<(String, Link)>,
    ) -> Result<(), AddError> {
        while open.len() > keep {
            let shown = open.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("/");
            let Some((name, dir)) = open.pop() else { break };
            let sink = &mut *self.sink;
            let link = dir.finish(&self.params.dir, &mut |b| sink.push(b));
            self.dirs.push(Added { cid: link.cid, name: shown, size: link.tsize });
            match open.last_mut() {
                Some((_, parent)) => parent.insert(name, link)?,
                None => roots.push((name, link)),
            }
        }
        Ok(())
    }

    fn symlink(&mut self, target: &str) -> Link {
        let mut data = Data::new(DataType::Symlink);
        data.data = Some(target.as_bytes().to_vec());
        let node = PbNode { links: Vec::new(), data: Some(data.encode()) };
        let block = self.params.file.cids.block(dagpb::CODEC, node.encode());
        let link = Link { cid: block.cid, tsize: block.data.len() as u64, filesize: 0 };
        self.sink.push(block);
        link
    }

    /// Imports one file's bytes through the hashing pipeline.
    fn add_stream(&mut self, reader: Box<dyn Read + Send>, what: &str) -> Result<Link, AddError> {
        let params = self.params;
        let read_error: Mutex<Option<io::Error>> = Mutex::new(None);
        let mut builder = FileBuilder::new(params.file);
        let sink = &mut *self.sink;
        let events = &mut *self.events;
        let mut worker_failed = false;
        std::thread::scope(|s| {
            // Each chunk travels to a worker with a one-place reply slot; the slots travel in file order to
            // this thread, which waits on each in turn. Every queue is bounded, so a stalled worker stops
            // the reader instead of letting finished leaves pile up.
            type Slot = crossbeam_channel::Receiver<(Block, Link)>;
            let (work_tx, work_rx) =
                crossbeam_channel::bounded::<(Vec<u8>, crossbeam_channel::Sender<(Block, Link)>)>(PIPELINE_DEPTH);
            let (order_tx, order_rx) = crossbeam_channel::bounded::<Slot>(PIPELINE_DEPTH);
            let read_error = &read_error;
            s.spawn(move || {
                let mut chunker = Chunker::new(reader, params.chunk_size);
                loop {
                    match chunker.next_chunk() {
                        Ok(Some(chunk)) => {
                            let (slot_tx, slot_rx) = crossbeam_channel::bounded(1);
                            if order_tx.send(slot_rx).is_err() || work_tx.send((chunk, slot_tx)).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            if let Ok(mut slot) = read_error.lock() {
                                *slot = Some(e);
                            }
                            break;
                        }
                    }
                }
            });
            for _ in 0..HASH_WORKERS {
                let work_rx = work_rx.clone();
                s.spawn(move || {
                    for (chunk, slot) in work_rx {
                        // The receiver is gone only when the consumer stopped early; nothing to do then.
                        let _ = slot.send(params.file.leaf(chunk));
                    }
                });
            }
            drop(work_rx);
            for slot in order_rx {
                let Ok((block, link)) = slot.recv() else {
                    worker_failed = true;
                    break;
                };
                events.progress(link.filesize);
                sink.push(block);
                builder.push(link, &mut |b| sink.push(b));
                if sink.error.is_some() {
                    // Stop reading and hashing: dropping the receivers unblocks the other threads.
                    break;
                }
            }
        });
        if worker_failed {
            return Err(AddError::Bug("a hashing worker stopped without a result"));
        }
        if let Some(e) = read_error.into_inner().ok().flatten() {
            return Err(AddError::Read { path: what.to_string(), source: e });
        }
        let sink = &mut *self.sink;
        let link = builder.finish(&mut |b| sink.push(b));
        if let Some(e) = sink.error.take() {
            return Err(e.into());
        }
        Ok(link)
    }
}
