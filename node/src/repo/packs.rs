//! Pack files: blocks of `PACK_MIN` bytes and up, appended to files beside RocksDB, which keeps only where each
//! one is (the `packed` column family: multihash → `Location`).
//!
//! Why not RocksDB's own blob files: a value written through RocksDB is copied into a write batch, again into
//! the memtable (fresh memory each time, which is slow to touch on a VM), and once more by the flush into its
//! blob file. Appending a block to a pack copies it once, into one of a few reused buffers (`STAGE`s) that a
//! thread of its own writes with O_DIRECT. On a 1 GiB BitTorrent import the RocksDB path was about a third of
//! the CPU (docs/performance.md).
//!
//! Crash consistency:
//! - Packs are append-only, and a process never appends to a pack that an earlier process wrote: after a
//!   crash the tail of the newest pack may hold bytes that nothing points at, and nothing else.
//! - A block's location reaches RocksDB only after its bytes, and the directory entry of a new pack, are
//!   synced (`Packs::sync`). Until then the location is held here (`pending`): the block reads back at once
//!   (a read of one still staged sends the stage to disk first), and a crash forgets it, as RocksDB forgets
//!   blocks written outside its log and not yet flushed.
//! - Writes are whole 4 KiB pages, so the last page of a stage is padded with zeros and written again, with
//!   what follows, by the next stage.
//! - Every location carries the CRC32 of its block, checked on every read.
//!
//! Space: deleting a block deletes its location; `BlockStore::compact` rewrites packs that are mostly garbage
//! (`Packs::plan`) and removes them.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Blocks from this size up go to packs; smaller ones (directory nodes, small files) stay in RocksDB.
pub(crate) const PACK_MIN: usize = 64 * 1024;
/// A pack is closed once it holds this much; a single larger block gets a pack of its own.
const PACK_SIZE: u64 = 256 * 1024 * 1024;
/// Blocks are copied into a stage of this size, which a thread of its own writes whole: disk writes overlap
/// with whatever produces the blocks, and with O_DIRECT the bytes skip the page cache, whose fresh pages cost
/// about 2 CPU-seconds per GiB on our test VM (docs/performance.md).
const STAGE: usize = 4 * 1024 * 1024;
/// Stages that may exist at once: one filling, the others on their way to disk; appending waits for one.
const STAGES: usize = 3;
/// Direct I/O wants buffers, offsets and lengths aligned to the device's block size; 4 KiB covers them all.
const ALIGN: usize = 4096;
/// Open pack files kept for reading; past it the cache starts over.
const MAX_OPEN: usize = 128;
/// The first byte of an encoded location.
const LOCATION_VERSION: u8 = 1;
const LOCATION_LEN: usize = 1 + 4 + 8 + 4 + 4;

/// Where a block is: which pack, where in it, how long, and the CRC32 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) pack: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl Location {
    pub(crate) fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut out = [0u8; LOCATION_LEN];
        out[0] = LOCATION_VERSION;
        out[1..5].copy_from_slice(&self.pack.to_be_bytes());
        out[5..13].copy_from_slice(&self.offset.to_be_bytes());
        out[13..17].copy_from_slice(&self.len.to_be_bytes());
        out[17..21].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// `None` for anything that is not a location this version wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; LOCATION_LEN] = bytes.try_into().ok()?;
        if bytes[0] != LOCATION_VERSION {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[5..13]);
        Some(Self { pack: u32_at(1), offset: u64::from_be_bytes(offset), len: u32_at(13), crc: u32_at(17) })
    }
}

/// Locations written to packs but not yet synced and recorded, with the files to sync first.
struct Unrecorded {
    entries: Vec<(Vec<u8>, Location)>,
    files: Vec<(u32, Arc<File>)>,
    new_files: bool,
}

/// Why a sync failed: the packs could not be made durable (their unsynced blocks are lost, and every later
/// sync and append fails too), or recording the locations failed (they stay pending for the next sync).
#[derive(Debug)]
pub(crate) enum SyncError<E> {
    Durable { path: PathBuf, source: io::Error },
    Record(E),
}

/// The pack files of one store.
pub(crate) struct Packs {
    dir: PathBuf,
    direct: bool,
    writer: Mutex<Writer>,
    /// Blocks written since the last sync. A lock of its own, so that lookups never wait behind a write.
    pending: Mutex<Pending>,
    shared: Arc<Shared>,
    open: Mutex<HashMap<u32, Arc<File>>>,
    /// Held by a sync from its snapshot of `pending` until the locations are recorded, and by whoever changes
    /// the index otherwise (deletions, compaction), so that a sync never records a block deleted meanwhile.
    /// Locks are taken in the order index, writer, pending, then the writing thread's `written`.
    index: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    locations: HashMap<Vec<u8>, Location>,
    bytes: u64,
    /// Set when a sync failed and blocks were lost: every later sync and append fails with it, as RocksDB
    /// stops on a background error, since callers that stored the lost blocks may not have seen the error.
    lost: Option<(io::ErrorKind, String)>,
}

impl Pending {
    fn insert(&mut self, key: &[u8], location: Location) {
        self.bytes += u64::from(location.len);
        if let Some(old) = self.locations.insert(key.to_vec(), location) {
            self.bytes -= u64::from(old.len);
        }
    }

    fn remove_if(&mut self, key: &[u8], location: Option<&Location>) {
        if let Some(old) = self.locations.get(key).copied()
            && location.is_none_or(|l| *l == old)
        {
            self.locations.remove(key);
            self.bytes -= u64::from(old.len);
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.lost {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("blocks were lost when syncing the packs failed earlier ({message}); reopen the repo"),
            )),
        }
    }
}

struct Writer {
    next_id: u32,
    current: Option<(u32, Arc<File>)>,
    /// After a failed write the current pack's length is unknown: the next block starts a new pack.
    broken: bool,
    /// Packs closed since the last sync, whose bytes may not be on disk yet.
    closed: Vec<(u32, Arc<File>)>,
    /// A pack was created since the directory was last synced.
    new_files: bool,
    /// The stage being filled, where in the current pack it starts (aligned), and the bytes in it.
    stage: Option<Stage>,
    stage_offset: u64,
    stage_len: usize,
    /// Stages allocated so far (at most `STAGES`).
    stages: usize,
    /// The number of the last stage handed to the writing thread.
    seq: u64,
    /// The writing thread.
    jobs: Option<(SyncSender<Job>, std::thread::JoinHandle<()>)>,
}

impl Writer {
    /// Bytes in the current pack, staged ones included: where the next block goes.
    fn len(&self) -> u64 {
        self.stage_offset + self.stage_len as u64
    }
}

/// `STAGE` bytes aligned to `ALIGN`, inside a slightly larger vector.
struct Stage {
    raw: Vec<u8>,
    start: usize,
}

impl Stage {
    fn new() -> Self {
        let raw = vec![0u8; STAGE + ALIGN];
        // Always within ALIGN for a byte pointer; 0 otherwise keeps the slices valid (and a direct write would
        // then fail with a clear error).
        let start = Some(raw.as_ptr().align_offset(ALIGN)).filter(|s| *s < ALIGN).unwrap_or(0);
        Self { raw, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + STAGE]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + STAGE]
    }
}

/// A stage on its way to disk: `len` bytes (a multiple of `ALIGN`) at `offset` of pack `pack`.
struct Job {
    pack: u32,
    file: Arc<File>,
    offset: u64,
    stage: Stage,
    len: usize,
    seq: u64,
}

/// What the writing thread reports back.
#[derive(Default)]
struct Written {
    /// Every stage up to this number has been written, or has failed.
    done: u64,
    /// The first failed write of each pack.
    failed: HashMap<u32, io::Error>,
    /// Stages back from the disk, to be filled again (reused buffers: fresh pages are slow on a VM).
    free: Vec<Stage>,
    /// The writing thread has ended (only a panic ends it while the packs are open).
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    written: Mutex<Written>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pack_name(id: u32) -> String {
    format!("{id:08}.pack")
}

fn pack_id(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".pack")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn stopped_error() -> io::Error {
    io::Error::other("the pack writing thread stopped")
}

/// The writing thread: writes stages in the order they come, then hands them back.
fn write_stages(jobs: Receiver<Job>, shared: Arc<Shared>) {
    /// Marks the thread stopped however it ends, so that nobody waits for it forever.
    struct Stopped(Arc<Shared>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            lock(&self.0.written).stopped = true;
            self.0.changed.notify_all();
        }
    }
    let _stopped = Stopped(Arc::clone(&shared));
    while let Ok(job) = jobs.recv() {
        let result = job.file.write_all_at(&job.stage.bytes()[..job.len], job.offset);
        let mut written = lock(&shared.written);
        if let Err(e) = result {
            written.failed.entry(job.pack).or_insert(e);
        }
        written.done = job.seq;
        written.free.push(job.stage);
        shared.changed.notify_all();
    }
}

impl Packs {
    /// Opens the packs in `dir`, creating it if asked. New blocks go to a new pack, written with O_DIRECT if
    /// `direct` (the caller has checked that the file system takes it).
    pub(crate) fn open(dir: &Path, create: bool, direct: bool) -> io::Result<Self> {
        if create {
            std::fs::create_dir_all(dir)?;
        }
        let mut next_id = 0u32;
        if dir.exists() {
            for entry in std::fs::read_dir(dir)? {
                if let Some(id) = entry?.file_name().to_str().and_then(pack_id) {
                    next_id = next_id.max(id.saturating_add(1));
                }
            }
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel(STAGES);
        let thread_shared = Arc::clone(&shared);
        let thread =
            std::thread::Builder::new().name("pack-writer".into()).spawn(move || write_stages(rx, thread_shared))?;
        let writer = Writer {
            next_id,
            current: None,
            broken: false,
            closed: Vec::new(),
            new_files: false,
            stage: None,
            stage_offset: 0,
            stage_len: 0,
            stages: 0,
            seq: 0,
            jobs: Some((tx, thread)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            direct,
            writer: Mutex::new(writer),
            pending: Mutex::new(Pending::default()),
            shared,
            open: Mutex::new(HashMap::new()),
            index: Mutex::new(()),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path(&self, id: u32) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    /// Appends a block made of `parts` (concatenated) under `key`; it reads back at once and is recorded by the
    /// next `sync`. Returns the bytes now waiting for a sync.
    pub(crate) fn append(&self, key: &[u8], parts: &[&[u8]]) -> io::Result<u64> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let len = u32::try_from(total).map_err(|_| io::Error::other("a block of 4 GiB or more"))?;
        let mut crc = crc32fast::Hasher::new();
        for part in parts {
            crc.update(part);
        }
        let crc = crc.finalize();

        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        lock(&self.pending).check()?;
        if w.current.is_none() || w.broken || (w.len() > 0 && w.len() + total > PACK_SIZE) {
            self.start_pack(w)?;
        }
        let pack = w.current.as_ref().map_or(0, |(id, _)| *id);
        if let Some(e) = self.failure(pack) {
            w.broken = true;
            return Err(e);
        }
        let location = Location { pack, offset: w.len(), len, crc };
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let stage = match w.stage.take() {
                    Some(stage) => stage,
                    None => self.free_stage(w)?,
                };
                let stage = w.stage.insert(stage);
                let n = rest.len().min(STAGE - w.stage_len);
                stage.bytes_mut()[w.stage_len..w.stage_len + n].copy_from_slice(&rest[..n]);
                w.stage_len += n;
                rest = &rest[n..];
                if w.stage_len == STAGE {
                    self.submit(w, false)?;
                }
            }
        }
        let mut pending = lock(&self.pending);
        pending.insert(key, location);
        Ok(pending.bytes)
    }

    /// Closes the current pack (its staged bytes on their way to disk): the next block starts a new one.
    /// Returns the number the next pack will get; packs below it are closed.
    pub(crate) fn close_current(&self) -> io::Result<u32> {
        let mut w = lock(&self.writer);
        self.close(&mut w)?;
        Ok(w.next_id)
    }

    fn close(&self, w: &mut Writer) -> io::Result<()> {
        self.submit(w, false)?;
        if let Some(done) = w.current.take() {
            w.closed.push(done);
        }
        w.stage_offset = 0;
        w.stage_len = 0;
        Ok(())
    }

    /// Closes the current pack and creates the next one.
    fn start_pack(&self, w: &mut Writer) -> io::Result<()> {
        self.close(w)?;
        loop {
            let id = w.next_id;
            w.next_id = id.checked_add(1).ok_or_else(|| io::Error::other("pack numbers are exhausted"))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            if self.direct {
                options.custom_flags(libc::O_DIRECT);
            }
            match options.open(self.path(id)) {
                Ok(file) => {
                    w.current = Some((id, Arc::new(file)));
                    w.broken = false;
                    w.new_files = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A stage to fill: one back from the disk, a new one while there are fewer than `STAGES`, or else the
    /// first to come back (the writing thread never takes the writer's lock, so this cannot deadlock).
    fn free_stage(&self, w: &mut Writer) -> io::Result<Stage> {
        let mut written = lock(&self.shared.written);
        loop {
            if let Some(stage) = written.free.pop() {
                return Ok(stage);
            }
            if w.stages < STAGES {
                w.stages += 1;
                return Ok(Stage::new());
            }
            if written.stopped {
                return Err(stopped_error());
            }
            written = self.shared.changed.wait(written).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Hands the stage being filled to the writing thread, padded with zeros to `ALIGN`.
    ///
    /// A partial last page is copied to the start of the next stage, whose write rewrites it with what
    /// follows. Unless `seal`: a sync, after which the page may hold the tail of a recorded block, which must
    /// never be written again (a torn or failed rewrite would lose it). The next block then starts at the
    /// next page, leaving less than `ALIGN` bytes unused.
    fn submit(&self, w: &mut Writer, seal: bool) -> io::Result<()> {
        let Some((pack, file)) = w.current.clone() else {
            return Ok(());
        };
        let len = w.stage_len;
        if len == 0 {
            return Ok(());
        }
        let Some(mut stage) = w.stage.take() else {
            return Ok(());
        };
        let padded = len.next_multiple_of(ALIGN);
        stage.bytes_mut()[len..padded].fill(0);
        let whole = if seal { padded } else { len - len % ALIGN };
        let next = if whole < len {
            match self.free_stage(w) {
                Ok(mut next) => {
                    next.bytes_mut()[..len - whole].copy_from_slice(&stage.bytes()[whole..len]);
                    Some(next)
                }
                Err(e) => {
                    w.broken = true;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let job = Job { pack, file, offset: w.stage_offset, stage, len: padded, seq: w.seq + 1 };
        let sent = w.jobs.as_ref().map(|(tx, _)| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            w.broken = true;
            lock(&self.shared.written).failed.entry(pack).or_insert_with(stopped_error);
            return Err(stopped_error());
        }
        w.seq += 1;
        w.stage_offset += whole as u64;
        w.stage_len = len.saturating_sub(whole);
        w.stage = next;
        Ok(())
    }

    /// The first failed write to `pack`, if any.
    fn failure(&self, pack: u32) -> Option<io::Error> {
        lock(&self.shared.written).failed.get(&pack).map(|e| io::Error::new(e.kind(), e.to_string()))
    }

    /// Waits until the block at `location` is on disk. Only a block that reaches into the stage being filled
    /// sends that stage early (a padded write); the others are in stages already handed over.
    fn settle(&self, location: &Location) -> io::Result<()> {
        let seq = {
            let mut w = lock(&self.writer);
            let staged = w.current.as_ref().is_some_and(|(id, _)| *id == location.pack)
                && location.offset + u64::from(location.len) > w.stage_offset;
            if staged {
                self.submit(&mut w, false)?;
            }
            w.seq
        };
        self.wait_written(seq)
    }

    /// Waits until every stage up to `seq` is written (or has failed).
    fn wait_written(&self, seq: u64) -> io::Result<()> {
        let mut written = lock(&self.shared.written);
        while written.done < seq {
            if written.stopped {
                return Err(stopped_error());
            }
            written = self.shared.changed.wait(written).unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    /// Where a block written since the last sync is.
    pub(crate) fn pending(&self, key: &[u8]) -> Option<Location> {
        lock(&self.pending).locations.get(key).copied()
    }

    /// Forgets a block written since the last sync (it is being deleted).
    pub(crate) fn forget(&self, key: &[u8]) {
        lock(&self.pending).remove_if(key, None);
    }

    /// The pack new blocks go to, or would go to if none is open yet.
    pub(crate) fn current(&self) -> u32 {
        let w = lock(&self.writer);
        w.current.as_ref().map_or(w.next_id, |(id, _)| *id)
    }

    /// Keeps syncs out while the caller changes the index (see `sync_locked`).
    pub(crate) fn lock_index(&self) -> MutexGuard<'_, ()> {
        lock(&self.index)
    }

    /// Makes every block appended so far durable: syncs the packs and the directory, then hands the
    /// locations to `record`, which must write them durably; they leave `pending` once it has. (The store
    /// calls `sync_locked`, holding the index lock for longer.)
    #[cfg(test)]
    pub(crate) fn sync<E>(
        &self,
        record: impl FnOnce(&[(Vec<u8>, Location)]) -> Result<(), E>,
    ) -> Result<(), SyncError<E>> {
        let guard = self.lock_index();
        self.sync_locked(&guard, record)
    }

    /// `sync` for a caller that holds `lock_index`.
    pub(crate) fn sync_locked<E>(
        &self,
        _index: &MutexGuard<'_, ()>,
        record: impl FnOnce(&[(Vec<u8>, Location)]) -> Result<(), E>,
    ) -> Result<(), SyncError<E>> {
        // The snapshot and the hand-over of the last staged bytes happen under one lock: every block in it
        // is written once the wait is over.
        let (unrecorded, seq) = {
            let mut w = lock(&self.writer);
            let durable = |source| SyncError::Durable { path: self.dir.clone(), source };
            lock(&self.pending).check().map_err(durable)?;
            self.submit(&mut w, true).map_err(durable)?;
            let mut files = std::mem::take(&mut w.closed);
            files.extend(w.current.clone());
            let entries: Vec<(Vec<u8>, Location)> =
                lock(&self.pending).locations.iter().map(|(k, l)| (k.clone(), *l)).collect();
            (Unrecorded { entries, files, new_files: std::mem::take(&mut w.new_files) }, w.seq)
        };
        if unrecorded.entries.is_empty() && !unrecorded.new_files {
            return Ok(());
        }
        let written = self.wait_written(seq).map_err(|e| (self.dir.clone(), e));
        if let Err((path, source)) = written.and_then(|()| self.make_durable(&unrecorded)) {
            self.lose(&unrecorded, &source);
            return Err(SyncError::Durable { path, source });
        }
        record(&unrecorded.entries).map_err(SyncError::Record)?;
        let mut pending = lock(&self.pending);
        for (key, location) in &unrecorded.entries {
            pending.remove_if(key, Some(location));
        }
        Ok(())
    }

    fn make_durable(&self, unrecorded: &Unrecorded) -> Result<(), (PathBuf, io::Error)> {
        for (id, file) in &unrecorded.files {
            if let Some(e) = self.failure(*id) {
                return Err((self.path(*id), e));
            }
            file.sync_data().map_err(|e| (self.path(*id), e))?;
        }
        if unrecorded.new_files {
            File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(|e| (self.dir.clone(), e))?;
        }
        Ok(())
    }

    /// After a failed sync the bytes of the unsynced packs may never reach the disk (Linux marks the pages
    /// clean all the same): their blocks are dropped, new blocks would go to a new pack, and every later sync
    /// and append fails, since whoever stored the lost blocks may sync later and must not be told they are
    /// safe.
    fn lose(&self, unrecorded: &Unrecorded, cause: &io::Error) {
        let mut w = lock(&self.writer);
        w.broken = true;
        w.new_files |= unrecorded.new_files;
        let lost: Vec<u32> = unrecorded.files.iter().map(|(id, _)| *id).collect();
        let mut pending = lock(&self.pending);
        let before = pending.locations.len();
        pending.locations.retain(|_, l| !lost.contains(&l.pack));
        pending.bytes = pending.locations.values().map(|l| u64::from(l.len)).sum();
        pending.lost.get_or_insert_with(|| (cause.kind(), cause.to_string()));
        tracing::error!(
            lost = before - pending.locations.len(),
            error = %cause,
            "syncing block packs failed; their unsynced blocks are lost and the store takes no more blocks until it is reopened"
        );
    }

    /// Reads a block and checks it against its CRC (a mismatch is an `InvalidData` error). A block written
    /// since the last sync (`fresh`) may still be staged: it is sent to disk first.
    pub(crate) fn read(&self, location: &Location, fresh: bool) -> io::Result<Vec<u8>> {
        if fresh {
            self.settle(location)?;
            if let Some(e) = self.failure(location.pack) {
                return Err(e);
            }
        }
        let data = self.read_unchecked(location)?;
        if crc32fast::hash(&data) != location.crc {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "checksum mismatch"));
        }
        Ok(data)
    }

    /// Reads a block's bytes without checking them (`repo verify` rehashes them itself).
    pub(crate) fn read_unchecked(&self, location: &Location) -> io::Result<Vec<u8>> {
        let file = self.file(location.pack)?;
        let mut data = vec![0u8; location.len as usize];
        file.read_exact_at(&mut data, location.offset)?;
        Ok(data)
    }

    fn file(&self, id: u32) -> io::Result<Arc<File>> {
        if let Some(file) = lock(&self.open).get(&id) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(self.path(id))?);
        let mut open = lock(&self.open);
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(id, Arc::clone(&file));
        Ok(file)
    }

    /// Every pack on disk with its size, in order.
    pub(crate) fn list(&self) -> io::Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        if !self.dir.exists() {
            return Ok(out);
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(pack_id) {
                out.push((id, entry.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Bytes all packs take on disk.
    pub(crate) fn size(&self) -> u64 {
        self.list().map(|packs| packs.iter().map(|(_, size)| size).sum()).unwrap_or(0)
    }

    /// Deletes packs nothing points at any more, and syncs the directory.
    pub(crate) fn remove(&self, ids: &[u32]) -> io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        {
            let mut open = lock(&self.open);
            for id in ids {
                open.remove(id);
            }
        }
        for id in ids {
            match std::fs::remove_file(self.path(*id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()
    }
}

impl Drop for Packs {
    /// Lets the writing thread finish what it was given (the owner syncs first).
    fn drop(&mut self) {
        let jobs = lock(&self.writer).jobs.take();
        if let Some((tx, thread)) = jobs {
            drop(tx);
            if thread.join().is_err() {
                tracing::error!("the pack writing thread panicked");
            }
        }
    }
}

/// Which closed packs to delete outright (nothing live) and which to rewrite (a quarter or more of them is
/// garbage), given the live bytes per pack and the packs on disk. Packs from `current` on are still being
/// written. `repo gc` is run to get space back, so it takes most of it, at the price of copying live blocks.
pub(crate) fn plan(live: &HashMap<u32, u64>, on_disk: &[(u32, u64)], current: u32) -> (Vec<u32>, Vec<u32>) {
    let (mut empty, mut rewrite) = (Vec::new(), Vec::new());
    for &(id, size) in on_disk.iter().filter(|(id, _)| *id < current) {
        match live.get(&id).copied().unwrap_or(0) {
            0 => empty.push(id),
            bytes if bytes.saturating_mul(4) <= size.saturating_mul(3) => rewrite.push(id),
            _ => {}
        }
    }
    (empty, rewrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of packs (buffered writes), and an in-memory index to record their locations in.
    fn fresh() -> (tempfile::TempDir, Mutex<HashMap<Vec<u8>, Location>>, Packs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let packs = Packs::open(dir.path(), true, false).expect("open");
        (dir, Mutex::new(HashMap::new()), packs)
    }

    fn record_into(
        index: &Mutex<HashMap<Vec<u8>, Location>>,
    ) -> impl FnOnce(&[(Vec<u8>, Location)]) -> io::Result<()> + '_ {
        move |entries| {
            lock(index).extend(entries.iter().cloned());
            Ok(())
        }
    }

    #[test]
    fn locations_round_trip_and_garbage_is_refused() {
        let l = Location { pack: 7, offset: 1 << 40, len: 262_158, crc: 0xdead_beef };
        assert_eq!(Location::decode(&l.encode()), Some(l));
        assert_eq!(Location::decode(&l.encode()[..20]), None);
        let mut other = l.encode();
        other[0] = 2;
        assert_eq!(Location::decode(&other), None);
        assert_eq!(pack_id("00000012.pack"), Some(12));
        for name in ["12.pack", "0000001a.pack", "00000012.pak", "LOCK"] {
            assert_eq!(pack_id(name), None, "{name}");
        }
    }

    #[test]
    fn blocks_read_back_before_and_after_a_sync_and_a_reopen_starts_a_new_pack() {
        let (dir, index, packs) = fresh();
        let a = vec![1u8; 100_000];
        let b = vec![2u8; 70_000];
        packs.append(b"a", &[&a]).expect("append");
        packs.append(b"b", &[&b[..10], &b[10..]]).expect("append parts");
        let la = packs.pending(b"a").expect("pending");
        assert_eq!(packs.read(&la, true).expect("read"), a);
        packs.sync(record_into(&index)).expect("sync");
        assert_eq!(packs.pending(b"a"), None, "recorded blocks leave pending");
        let lb = lock(&index).get(&b"b"[..]).copied().expect("recorded");
        assert_eq!((lb.pack, lb.offset, lb.len), (la.pack, 100_000, 70_000));
        assert_eq!(packs.read(&lb, false).expect("read"), b);
        drop(packs);

        let packs = Packs::open(dir.path(), false, false).expect("reopen");
        assert_eq!(packs.read(&lb, false).expect("read after reopen"), b);
        packs.append(b"c", &[&a]).expect("append");
        let lc = packs.pending(b"c").expect("pending");
        assert_eq!((lc.pack, lc.offset), (la.pack + 1, 0), "a new process never appends to an old pack");
    }

    #[test]
    fn blocks_of_odd_sizes_survive_stages_partial_pages_and_a_reopen() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let index = Mutex::new(HashMap::new());
            let packs = Packs::open(dir.path(), true, direct).expect("open");
            let blocks: Vec<Vec<u8>> = (0..40u32)
                .map(|i| {
                    let len = 65_536 + (i as usize * 37_813) % 900_000;
                    (0..len).map(|j| (j as u32 ^ i.wrapping_mul(2_654_435_761)) as u8).collect()
                })
                .collect();
            // Where each block must land: right after the one before, or on the next page after a sync.
            let mut expected = 0u64;
            for (i, block) in blocks.iter().enumerate() {
                let key = i.to_be_bytes();
                packs.append(&key, &[&block[..7], &block[7..]]).expect("append");
                assert_eq!(packs.pending(&key).map(|l| l.offset), Some(expected), "block {i}, direct {direct}");
                expected += block.len() as u64;
                if i % 7 == 3 {
                    // A fresh block read back sends its stage out early, its last page padded.
                    let location = packs.pending(&key).expect("pending");
                    assert_eq!(&packs.read(&location, true).expect("fresh read"), block, "block {i}");
                }
                if i == 20 {
                    packs.sync(record_into(&index)).expect("sync");
                    expected = expected.next_multiple_of(ALIGN as u64);
                }
            }
            packs.sync(record_into(&index)).expect("sync");
            drop(packs);
            let packs = Packs::open(dir.path(), false, direct).expect("reopen");
            for (i, block) in blocks.iter().enumerate() {
                let location = lock(&index)[&i.to_be_bytes()[..]];
                assert_eq!(&packs.read(&location, false).expect("read"), block, "block {i}, direct {direct}");
            }
        }
    }

    #[test]
    fn a_sync_seals_its_last_page_so_recorded_bytes_are_never_written_again() {
        let (_dir, index, packs) = fresh();
        packs.append(b"a", &[&[1u8; 70_001]]).expect("append");
        packs.sync(record_into(&index)).expect("sync");
        packs.append(b"b", &[&[2u8; 70_000]]).expect("append");
        let b = packs.pending(b"b").expect("pending");
        assert_eq!(b.offset, 70_001u64.next_multiple_of(ALIGN as u64), "b starts on the page after a's tail");
        packs.sync(record_into(&index)).expect("sync");
        let a = lock(&index)[&b"a"[..]];
        assert_eq!(packs.read(&a, false).expect("read a"), vec![1u8; 70_001]);
        assert_eq!(packs.read(&b, false).expect("read b"), vec![2u8; 70_000]);
    }

    #[test]
    fn stages_all_come_back_whatever_closes_or_syncs_the_packs() {
        let (_dir, index, packs) = fresh();
        for round in 0..12u32 {
            packs.append(&round.to_be_bytes(), &[&vec![round as u8; 100_000 + round as usize]]).expect("append");
            if round % 3 == 0 {
                packs.close_current().expect("close");
            }
            let location = packs.pending(&round.to_be_bytes()).expect("pending");
            assert_eq!(packs.read(&location, true).expect("fresh read").len(), 100_000 + round as usize);
            packs.sync(record_into(&index)).expect("sync");
            let w = lock(&packs.writer);
            let free = lock(&packs.shared.written).free.len();
            assert!(w.stages <= STAGES, "round {round}: {} stages", w.stages);
            assert_eq!(free + usize::from(w.stage.is_some()), w.stages, "round {round}: a stage went missing");
        }
    }

    #[test]
    fn a_failed_write_loses_its_blocks_and_the_store_takes_no_more() {
        let (_dir, index, packs) = fresh();
        packs.append(b"k", &[&[5u8; 90_000]]).expect("append");
        let pack = packs.pending(b"k").expect("pending").pack;
        // What the writing thread records when the disk refuses a stage.
        lock(&packs.shared.written).failed.insert(pack, io::Error::other("disk on fire"));
        let failed = packs.sync(record_into(&index));
        assert!(matches!(failed, Err(SyncError::Durable { .. })), "the sync reports the failed write");
        assert!(lock(&index).is_empty(), "nothing is recorded");
        assert_eq!(packs.pending(b"k"), None, "the lost block is not served either");
        let again = packs.append(b"other", &[&[6u8; 90_000]]).expect_err("appends after a loss are refused");
        assert!(again.to_string().contains("disk on fire"), "{again}");
        assert!(packs.sync(record_into(&index)).is_err(), "a later sync must not report success");
    }

    #[test]
    fn a_flipped_byte_is_caught_on_read() {
        let (_dir, index, packs) = fresh();
        packs.append(b"k", &[&[9u8; 80_000]]).expect("append");
        packs.sync(record_into(&index)).expect("sync");
        let l = lock(&index).get(&b"k"[..]).copied().expect("recorded");
        let path = packs.path(l.pack);
        let mut bytes = std::fs::read(&path).expect("read pack");
        bytes[40_000] ^= 1;
        std::fs::write(&path, bytes).expect("write pack");
        let err = packs.read(&l, false).expect_err("corruption goes unnoticed");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(packs.read_unchecked(&l).expect("unchecked").len(), 80_000);
    }

    #[test]
    fn a_failed_record_keeps_blocks_pending_for_the_next_sync() {
        let (_dir, _, packs) = fresh();
        packs.append(b"k", &[&[3u8; 70_000]]).expect("append");
        let failed = packs.sync(|_| Err(io::Error::other("index write failed")));
        assert!(matches!(failed, Err(SyncError::Record(_))));
        assert!(packs.pending(b"k").is_some(), "the block is still readable and still to be recorded");
        let index = Mutex::new(HashMap::new());
        packs.sync(record_into(&index)).expect("sync");
        assert!(lock(&index).contains_key(&b"k"[..]));
    }

    #[test]
    fn compaction_plan_skips_open_packs_and_mostly_live_ones() {
        let live = HashMap::from([(1, 10), (2, 90), (3, 75), (5, 1)]);
        let on_disk = [(0, 100), (1, 100), (2, 100), (3, 100), (5, 100)];
        assert_eq!(plan(&live, &on_disk, 5), (vec![0], vec![1, 3]));
        assert_eq!(plan(&live, &on_disk, 9), (vec![0], vec![1, 3, 5]));
    }
}
