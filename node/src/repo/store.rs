//! The block store: RocksDB, one column family per kind of record, blocks keyed by multihash.
//!
//! Column families: `blocks` (multihash bytes → bytes of blocks under `PACK_MIN`, and of large blocks stored
//! before packs existed, which live in RocksDB blob files), `packed` (multihash → where a block of `PACK_MIN`
//! bytes or more is in the pack files of `packs/`, see `packs`), `pins` (binary CID → pin kind), `meta` (small
//! records such as the repo version).
//!
//! Crash consistency, by construction (see docs/architecture.md):
//! - Block writes are content-addressed and idempotent, so they skip the write-ahead log: a crash loses at most
//!   the blocks written since the last sync, never corrupts one. Before anything that depends on blocks is
//!   recorded (a pin), `sync_blocks` syncs the packs, records where their new blocks are, and flushes the
//!   `blocks` memtable to synced files.
//! - Pins and metadata go through the WAL, synced, in one `WriteBatch` per change.
//! - RocksDB's block and blob checksums stay on, so on-disk corruption is caught on every read; `verify`
//!   rehashes every block against its key.
//!
//! This is synchronous on purpose: callers on an async runtime use `spawn_blocking` or a dedicated thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::packs::{self, Location, PACK_MIN, Packs};

use btfs_chunker::hash::{self, IDENTITY, Multihash};
use btfs_chunker::{Block, Cid};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

const CF_BLOCKS: &str = "blocks";
const CF_PACKED: &str = "packed";
const CF_PINS: &str = "pins";
const CF_META: &str = "meta";
const CF_DHT: &str = "dht";
const CF_CONTRACTS: &str = "contracts";
const CF_MARKET: &str = "market";
const CF_TORRENTS: &str = "torrents";

/// A write batch's header (sequence number and count), and the most an entry adds to its key and value (a
/// tag, the column family and the two lengths, as varints).
const BATCH_HEADER: usize = 12;
const BATCH_ENTRY_MAX: usize = 1 + 3 * 5;
/// Write buffer per memtable for blocks; two or three of these bound the store's write memory.
const BLOCK_WRITE_BUFFER: usize = 32 * 1024 * 1024;
/// Values from this size up go to blob files (blocks under `PACK_MIN` that are not small directory nodes).
const MIN_BLOB_SIZE: u64 = 4096;
/// Bytes appended to packs after which a write syncs them itself (see `BlockStore::put_packed`).
const MAX_UNSYNCED: u64 = 256 * 1024 * 1024;

/// Errors from the block store, carrying the key they failed on where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block store at {path} could not be opened")]
    Open { path: String, source: rocksdb::Error },
    #[error("block store read failed for {cid}")]
    Read { cid: Cid, source: rocksdb::Error },
    #[error("block store write failed")]
    Write(#[source] rocksdb::Error),
    #[error("block store scan failed")]
    Scan(#[source] rocksdb::Error),
    #[error("block store is missing column family {0} (is this a btfs repo?)")]
    MissingColumnFamily(&'static str),
    #[error("stored key {key} is not a multihash")]
    BadKey { key: String },
    #[error("block {cid} is not in the local store and could not be fetched: {reason}")]
    Fetch { cid: Cid, reason: String },
    #[error("block pack file {path} failed")]
    Pack { path: String, source: std::io::Error },
    #[error("block {cid} is damaged on disk: its bytes no longer match their checksum")]
    Corrupt { cid: Cid },
    #[error("the stored location of block {key} is not one this version wrote")]
    BadLocation { key: String },
}

/// A raw key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Where a read goes when a block is not stored locally: the network, when a daemon runs.
pub trait BlockFetcher: Send + Sync {
    /// Fetches, verifies and stores the block; returns its bytes. Blocks the calling (non-async) thread.
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, String>;
}

/// How a CID is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinKind {
    /// The block and everything below it.
    Recursive,
    /// Only the block itself.
    Direct,
}

impl PinKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Recursive => b'r',
            Self::Direct => b'd',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'r' => Some(Self::Recursive),
            b'd' => Some(Self::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recursive => "recursive",
            Self::Direct => "direct",
        }
    }
}

/// Whether files in `dir` (or, before it exists, its parent) can be opened with O_DIRECT: tmpfs before Linux
/// 6.6, and some FUSE and network file systems, refuse it, and RocksDB would then fail its first flush.
fn takes_direct_io(dir: &Path, create: bool) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let base = if !dir.exists() && create { dir.parent().unwrap_or(dir) } else { dir };
    let probe = base.join(format!(".direct-io-probe-{}", std::process::id()));
    let opened =
        std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    if !opened {
        tracing::info!(dir = %dir.display(), "this file system refuses O_DIRECT; block files are written through the page cache");
    }
    opened
}

/// The RocksDB-backed store of blocks, pins and metadata.
pub struct BlockStore {
    db: DB,
    packs: Packs,
    fetcher: OnceLock<Arc<dyn BlockFetcher>>,
    /// Bumped after every deletion of blocks, so caches of block bytes know to drop what they hold.
    deletions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore").field("path", &self.db.path()).finish()
    }
}

impl Drop for BlockStore {
    /// Records the packed blocks written since the last sync, as RocksDB flushes its memtables on close.
    fn drop(&mut self) {
        if let Err(e) = self.sync_packs() {
            tracing::error!(error = %e, "the blocks written last could not be made durable");
        }
    }
}

impl BlockStore {
    /// Opens (creating if asked) the store in `dir`. With `direct_writes`, RocksDB writes its files with
    /// O_DIRECT when the file system takes it (see `Datastore.DirectWrites`).
    pub fn open(dir: &Path, create: bool, direct_writes: bool) -> Result<Self, StoreError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(create);
        // Column families added by later versions are created on open; the database itself only on init.
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_db_write_buffer_size(3 * BLOCK_WRITE_BUFFER + 8 * 1024 * 1024);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_paranoid_checks(true);
        // Write flushed files back to disk as they grow instead of all at the final fsync, so disk writes
        // overlap with hashing during a large add.
        db_opts.set_bytes_per_sync(4 * 1024 * 1024);
        let direct = direct_writes && takes_direct_io(dir, create);
        if direct {
            // Flushes and compactions write every block file; WAL and manifest writes stay buffered.
            db_opts.set_use_direct_io_for_flush_and_compaction(true);
        }
        // One writer at a time writes batches here: spinning for a write group only burns the second core,
        // which the hashing workers need.
        db_opts.set_enable_write_thread_adaptive_yield(false);

        let cache = Cache::new_lru_cache(32 * 1024 * 1024);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);

        let mut blocks = Options::default();
        blocks.set_block_based_table_factory(&table);
        blocks.set_compression_type(DBCompressionType::None);
        blocks.set_write_buffer_size(BLOCK_WRITE_BUFFER);
        blocks.set_max_write_buffer_number(3);
        blocks.set_enable_blob_files(true);
        blocks.set_min_blob_size(MIN_BLOB_SIZE);
        blocks.set_blob_file_size(256 * 1024 * 1024);
        blocks.set_blob_compression_type(DBCompressionType::None);
        // Blocks are never overwritten, so garbage in blob files comes only from `repo gc`. Collecting it
        // during every compaction (RocksDB relocates every live blob of its oldest blob files) rewrote most
        // of what an add or a fetch wrote; `compact` turns collection on for its own run instead.
        blocks.set_enable_blob_gc(false);

        let mut small = Options::default();
        small.set_block_based_table_factory(&table);
        small.set_write_buffer_size(4 * 1024 * 1024);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_BLOCKS, blocks),
            ColumnFamilyDescriptor::new(CF_PACKED, small.clone()),
            ColumnFamilyDescriptor::new(CF_PINS, small.clone()),
            ColumnFamilyDescriptor::new(CF_META, small.clone()),
            ColumnFamilyDescriptor::new(CF_DHT, small.clone()),
            ColumnFamilyDescriptor::new(CF_CONTRACTS, small.clone()),
            ColumnFamilyDescriptor::new(CF_MARKET, small.clone()),
            ColumnFamilyDescriptor::new(CF_TORRENTS, small),
        ];
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)
            .map_err(|source| StoreError::Open { path: dir.display().to_string(), source })?;
        let packs_dir = dir.join("packs");
        let packs = Packs::open(&packs_dir, true, direct)
            .map_err(|source| StoreError::Pack { path: packs_dir.display().to_string(), source })?;
        Ok(Self { db, packs, fetcher: OnceLock::new(), deletions: std::sync::atomic::AtomicU64::new(0) })
    }

    /// Makes reads of missing blocks go to `fetcher` (set once, when the daemon's network starts).
    pub fn set_fetcher(&self, fetcher: Arc<dyn BlockFetcher>) {
        let _ = self.fetcher.set(fetcher);
    }

    /// Whether reads can reach the network.
    pub fn is_online(&self) -> bool {
        self.fetcher.get().is_some()
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
    }

    /// Reads the block named by `cid`, from the network when it is not stored and a daemon runs. Identity
    /// CIDs carry their block and are never stored.
    pub fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(data) = self.get_local(cid)? {
            return Ok(Some(data));
        }
        match self.fetcher.get() {
            Some(fetcher) => fetcher.fetch(cid).map(Some).map_err(|reason| StoreError::Fetch { cid: *cid, reason }),
            None => Ok(None),
        }
    }

    /// Reads the block named by `cid` from this store only.
    pub fn get_local(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if cid.hash().code() == IDENTITY {
            return Ok(Some(cid.hash().digest().to_vec()));
        }
        let key = cid.hash().to_bytes();
        if let Some(location) = self.location(cid, &key)? {
            return self.read_packed(cid, &key, location);
        }
        let cf = self.cf(CF_BLOCKS)?;
        self.db.get_cf(cf, &key).map_err(|source| StoreError::Read { cid: *cid, source })
    }

    /// Hands `read` the bytes of the block named by `cid` (this store only; `None` when it does not hold the
    /// block). Blocks in RocksDB are not copied into a buffer of our own.
    pub fn with_local<R>(&self, cid: &Cid, read: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, StoreError> {
        if cid.hash().code() == IDENTITY {
            return Ok(Some(read(cid.hash().digest())));
        }
        let key = cid.hash().to_bytes();
        if let Some(location) = self.location(cid, &key)? {
            return Ok(self.read_packed(cid, &key, location)?.map(|data| read(&data)));
        }
        let found = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS)?, &key)
            .map_err(|source| StoreError::Read { cid: *cid, source })?;
        Ok(found.map(|data| read(&data)))
    }

    /// Where a packed block is, and whether it was written since the last sync (and may still be staged).
    fn location(&self, cid: &Cid, key: &[u8]) -> Result<Option<(Location, bool)>, StoreError> {
        if let Some(location) = self.packs.pending(key) {
            return Ok(Some((location, true)));
        }
        let cf = self.cf(CF_PACKED)?;
        match self.db.get_pinned_cf(cf, key).map_err(|source| StoreError::Read { cid: *cid, source })? {
            None => Ok(None),
            Some(value) => Location::decode(&value)
                .map(|location| Some((location, false)))
                .ok_or_else(|| StoreError::BadLocation { key: hex(key) }),
        }
    }

    /// Reads a packed block. A pack that vanished under the read (compaction moved the block on) sends it
    /// back to the index once.
    fn read_packed(&self, cid: &Cid, key: &[u8], found: (Location, bool)) -> Result<Option<Vec<u8>>, StoreError> {
        let (mut location, mut fresh) = found;
        for attempt in 0..2 {
            match self.packs.read(&location, fresh) {
                Ok(data) => return Ok(Some(data)),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(StoreError::Corrupt { cid: *cid }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => match self.location(cid, key)? {
                    Some(moved) if moved.0 != location => (location, fresh) = moved,
                    Some(_) => return Err(self.pack_error(location.pack, e)),
                    None => return Ok(None),
                },
                Err(e) => return Err(self.pack_error(location.pack, e)),
            }
        }
        Ok(None)
    }

    fn pack_error(&self, pack: u32, source: std::io::Error) -> StoreError {
        StoreError::Pack { path: self.packs.path(pack).display().to_string(), source }
    }

    /// Whether the block named by `cid` is stored.
    pub fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        if cid.hash().code() == IDENTITY {
            return Ok(true);
        }
        let key = cid.hash().to_bytes();
        if self.location(cid, &key)?.is_some() {
            return Ok(true);
        }
        let cf = self.cf(CF_BLOCKS)?;
        if !self.db.key_may_exist_cf(cf, &key) {
            return Ok(false);
        }
        let found = self.db.get_pinned_cf(cf, &key).map_err(|source| StoreError::Read { cid: *cid, source })?;
        Ok(found.is_some())
    }

    /// Stores blocks in one batch, outside the WAL (see the module doc); identity blocks are skipped.
    pub fn put_many<'a>(&self, blocks: impl IntoIterator<Item = &'a Block>) -> Result<(), StoreError> {
        self.put_slices(blocks.into_iter().map(|b| (&b.cid, &b.data[..])))
    }

    /// `put_many` for blocks held as (CID, bytes) pairs in some other container. Blocks of `PACK_MIN` bytes
    /// and up go to the packs, the others to RocksDB in one batch.
    pub fn put_slices<'a>(&self, blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>) -> Result<(), StoreError> {
        let mut small = Vec::new();
        for (cid, data) in blocks {
            if cid.hash().code() == IDENTITY {
                continue;
            }
            if data.len() >= PACK_MIN {
                self.put_packed(cid, &[data])?;
            } else {
                small.push((cid.hash().to_bytes(), data));
            }
        }
        self.put_small(&small)
    }

    /// Stores one block given as consecutive parts (say a leaf's header, its bytes borrowed from a larger
    /// buffer, and its trailer), without first joining them when it goes to a pack.
    pub fn put_parts(&self, cid: &Cid, parts: &[&[u8]]) -> Result<(), StoreError> {
        if cid.hash().code() == IDENTITY {
            return Ok(());
        }
        if parts.iter().map(|p| p.len()).sum::<usize>() >= PACK_MIN {
            return self.put_packed(cid, parts);
        }
        let data = parts.concat();
        self.put_small(&[(cid.hash().to_bytes(), &data[..])])
    }

    /// Appends a block to the packs unless it is already stored (storing a file twice takes no more space).
    /// Past `MAX_UNSYNCED` bytes appended, syncs them, which bounds what a crash loses and what waits in memory.
    fn put_packed(&self, cid: &Cid, parts: &[&[u8]]) -> Result<(), StoreError> {
        if self.has(cid)? {
            return Ok(());
        }
        let waiting =
            self.packs.append(&cid.hash().to_bytes(), parts).map_err(|e| self.pack_error(self.packs.current(), e))?;
        if waiting >= MAX_UNSYNCED { self.sync_packs() } else { Ok(()) }
    }

    fn put_small(&self, blocks: &[(Vec<u8>, &[u8])]) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_BLOCKS)?;
        // Sized up front: a batch left to grow copies its bytes again at every doubling, each time into
        // freshly mapped memory.
        let size =
            BATCH_HEADER + blocks.iter().map(|(key, data)| BATCH_ENTRY_MAX + key.len() + data.len()).sum::<usize>();
        let mut batch = WriteBatch::with_capacity_bytes(size);
        for (key, data) in blocks {
            batch.put_cf(cf, key, data);
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(batch, &opts).map_err(StoreError::Write)
    }

    /// Makes every block written so far durable: syncs the packs and records where their new blocks are,
    /// then flushes the blocks memtable to synced files.
    pub fn sync_blocks(&self) -> Result<(), StoreError> {
        self.sync_packs()?;
        self.db.flush_cf(self.cf(CF_BLOCKS)?).map_err(StoreError::Write)
    }

    fn sync_packs(&self) -> Result<(), StoreError> {
        let index = self.packs.lock_index();
        self.sync_packs_locked(&index)
    }

    fn sync_packs_locked(&self, index: &std::sync::MutexGuard<'_, ()>) -> Result<(), StoreError> {
        let cf = self.cf(CF_PACKED)?;
        let recorded = self.packs.sync_locked(index, |entries| {
            let mut batch = WriteBatch::default();
            for (key, location) in entries {
                batch.put_cf(cf, key, location.encode());
            }
            self.write_synced(batch)
        });
        recorded.map_err(|e| match e {
            packs::SyncError::Durable { path, source } => StoreError::Pack { path: path.display().to_string(), source },
            packs::SyncError::Record(e) => e,
        })
    }

    /// Deletes blocks by multihash, durably.
    pub fn delete_many<'a>(&self, keys: impl IntoIterator<Item = &'a Multihash>) -> Result<(), StoreError> {
        let (cf, packed) = (self.cf(CF_BLOCKS)?, self.cf(CF_PACKED)?);
        let index = self.packs.lock_index();
        let mut batch = WriteBatch::default();
        for key in keys {
            let key = key.to_bytes();
            self.packs.forget(&key);
            batch.delete_cf(cf, &key);
            batch.delete_cf(packed, &key);
        }
        let result = self.write_synced(batch);
        drop(index);
        self.deletions.fetch_add(1, std::sync::atomic::Ordering::Release);
        result
    }

    /// How many deletions of blocks this store has seen; a cache of block bytes is valid while this holds.
    pub fn deletions(&self) -> u64 {
        self.deletions.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Visits every stored block as (multihash, bytes); stops at the first error the visitor returns. Packed
    /// blocks are handed over unchecked, so that `verify` can name each damaged one.
    pub fn for_each_block<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(Multihash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_small(&mut visit)?;
        self.for_each_location::<E>(|mh, location| {
            let data = match self.packs.read_unchecked(&location) {
                Ok(data) => data,
                // A `repo gc` running meanwhile moved the block to another pack, or deleted it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.read_moved(&mh, location, e)? {
                    Some(data) => data,
                    None => return Ok(()),
                },
                Err(e) => return Err(self.pack_error(location.pack, e).into()),
            };
            visit(mh, &data)
        })
    }

    /// The bytes of a packed block whose pack vanished under a scan: from where the index now says it is, or
    /// `None` if it was deleted. `gone` is the error to report if the index still points at the vanished pack.
    fn read_moved(&self, mh: &Multihash, old: Location, gone: std::io::Error) -> Result<Option<Vec<u8>>, StoreError> {
        let key = mh.to_bytes();
        let Some(value) = self.db.get_pinned_cf(self.cf(CF_PACKED)?, &key).map_err(StoreError::Scan)? else {
            return Ok(None);
        };
        let location = Location::decode(&value).ok_or_else(|| StoreError::BadLocation { key: hex(&key) })?;
        if location == old {
            return Err(self.pack_error(old.pack, gone));
        }
        self.packs.read_unchecked(&location).map(Some).map_err(|e| self.pack_error(location.pack, e))
    }

    /// Visits every block kept in RocksDB itself.
    fn for_each_small<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(Multihash, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_blocks(CF_BLOCKS, |mh, _, value| visit(mh, value))
    }

    /// Visits every record of a column family keyed by multihash, in key order.
    fn scan_blocks<E: From<StoreError>>(
        &self,
        cf: &'static str,
        mut visit: impl FnMut(Multihash, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        it.seek_to_first();
        while it.valid() {
            let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
            let mh = Multihash::from_bytes(key).map_err(|_| StoreError::BadKey { key: hex(key) })?;
            visit(mh, key, value)?;
            it.next();
        }
        it.status().map_err(StoreError::Scan)?;
        Ok(())
    }

    /// Visits every packed block's location, after recording those written since the last sync.
    fn for_each_location<E: From<StoreError>>(
        &self,
        visit: impl FnMut(Multihash, Location) -> Result<(), E>,
    ) -> Result<(), E> {
        self.sync_packs()?;
        self.scan_locations(visit)
    }

    /// `for_each_location` without the sync (for a caller that holds the index lock and synced).
    fn scan_locations<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(Multihash, Location) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_blocks(CF_PACKED, |mh, key, value| {
            let location = Location::decode(value).ok_or_else(|| StoreError::BadLocation { key: hex(key) })?;
            visit(mh, location)
        })
    }

    /// All stored multihashes.
    pub fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        let mut out = Vec::new();
        self.for_each_small::<StoreError>(|mh, _| {
            out.push(mh);
            Ok(())
        })?;
        self.for_each_location::<StoreError>(|mh, _| {
            out.push(mh);
            Ok(())
        })?;
        Ok(out)
    }

    /// Number of blocks and their total size.
    pub fn stat(&self) -> Result<(u64, u64), StoreError> {
        let (mut n, mut size) = (0u64, 0u64);
        self.for_each_small::<StoreError>(|_, data| {
            n += 1;
            size += data.len() as u64;
            Ok(())
        })?;
        self.for_each_location::<StoreError>(|_, location| {
            n += 1;
            size += u64::from(location.len);
            Ok(())
        })?;
        Ok((n, size))
    }

    /// Bytes the store occupies on disk: RocksDB's SST and blob files, as it reports them, and the packs.
    pub fn disk_usage(&self) -> u64 {
        let prop = |name: &str| {
            self.cf(CF_BLOCKS).ok().and_then(|cf| self.db.property_int_value_cf(cf, name).ok().flatten()).unwrap_or(0)
        };
        prop("rocksdb.total-sst-files-size") + prop("rocksdb.total-blob-file-size") + self.packs.size()
    }

    /// Reclaims space after deletions: rewrites the packs that are mostly garbage and removes those that are
    /// all garbage (`compact_packs`), then compacts every key in RocksDB with blob garbage collection on for all
    /// blob files, so the live blobs of files holding deleted ones are moved and those files removed.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.compact_packs()?;
        let cf = self.cf(CF_BLOCKS)?;
        let gc = |on: &str| {
            self.db.set_options_cf(
                cf,
                &[("enable_blob_garbage_collection", on), ("blob_garbage_collection_age_cutoff", "1.0")],
            )
        };
        gc("true").map_err(StoreError::Write)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        gc("false").map_err(StoreError::Write)
    }

    /// The pin on `cid`, if any.
    pub fn pin(&self, cid: &Cid) -> Result<Option<PinKind>, StoreError> {
        let v = self
            .db
            .get_cf(self.cf(CF_PINS)?, cid.to_bytes())
            .map_err(|source| StoreError::Read { cid: *cid, source })?;
        Ok(v.and_then(|v| v.first().copied()).and_then(PinKind::from_byte))
    }

    /// Sets and removes pins in one synced batch, after making all blocks durable.
    pub fn update_pins(&self, set: &[(Cid, PinKind)], remove: &[Cid]) -> Result<(), StoreError> {
        self.sync_blocks()?;
        let cf = self.cf(CF_PINS)?;
        let mut batch = WriteBatch::default();
        for cid in remove {
            batch.delete_cf(cf, cid.to_bytes());
        }
        for (cid, kind) in set {
            batch.put_cf(cf, cid.to_bytes(), [kind.to_byte()]);
        }
        self.write_synced(batch)
    }

    /// Every pin, in CID byte order.
    pub fn pins(&self) -> Result<Vec<(Cid, PinKind)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PINS)?, IteratorMode::Start) {
            let (k, v) = item.map_err(StoreError::Scan)?;
            let cid = Cid::try_from(&k[..]).map_err(|_| StoreError::BadKey { key: hex(&k) })?;
            if let Some(kind) = v.first().copied().and_then(PinKind::from_byte) {
                out.push((cid, kind));
            }
        }
        Ok(out)
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_META)?, key).map_err(StoreError::Scan)
    }

    /// Sets a metadata value durably.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, key, value);
        self.write_synced(batch)
    }

    /// A DHT record (provider records and values kept by Kademlia).
    pub fn dht_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_DHT)?, key).map_err(StoreError::Scan)
    }

    /// Writes and deletes DHT records in one batch (through the WAL, unsynced: records are soft state that
    /// peers re-announce).
    pub fn dht_write(&self, put: &[(&[u8], &[u8])], delete: &[&[u8]]) -> Result<(), StoreError> {
        let cf = self.cf(CF_DHT)?;
        let mut batch = WriteBatch::default();
        for (k, v) in put {
            batch.put_cf(cf, k, v);
        }
        for k in delete {
            batch.delete_cf(cf, k);
        }
        self.db.write(batch).map_err(StoreError::Write)
    }

    /// Up to `limit` DHT records whose keys start with `prefix`, in key order.
    pub fn dht_scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_DHT)?);
        it.seek(prefix);
        let mut out = Vec::new();
        while it.valid() && out.len() < limit {
            let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
            it.next();
        }
        it.status().map_err(StoreError::Scan)?;
        Ok(out)
    }

    /// A storage-market record: `Records::Contracts` (contract id → contract record) or `Records::Market`
    /// (uploads, cheques, reputation, host state; keys prefixed by kind).
    pub fn record_get(&self, kind: Records, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(kind.cf())?, key).map_err(StoreError::Scan)
    }

    /// Writes storage-market records durably (synced: they are contracts and money), in one batch so that a
    /// crash leaves either all of them or none.
    pub fn record_write(&self, put: &[(Records, &[u8], &[u8])], delete: &[(Records, &[u8])]) -> Result<(), StoreError> {
        self.write_synced(self.record_batch(put, delete)?)
    }

    /// Writes records that may be lost in a crash (hints such as an import's progress, checked again when
    /// read): through the WAL, without waiting for it to reach the disk.
    pub fn record_write_relaxed(
        &self,
        put: &[(Records, &[u8], &[u8])],
        delete: &[(Records, &[u8])],
    ) -> Result<(), StoreError> {
        self.db.write(self.record_batch(put, delete)?).map_err(StoreError::Write)
    }

    fn record_batch(
        &self,
        put: &[(Records, &[u8], &[u8])],
        delete: &[(Records, &[u8])],
    ) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        for (kind, k, v) in put {
            batch.put_cf(self.cf(kind.cf())?, k, v);
        }
        for (kind, k) in delete {
            batch.delete_cf(self.cf(kind.cf())?, k);
        }
        Ok(batch)
    }

    /// Every storage-market record whose key starts with `prefix`, in key order.
    pub fn record_scan(&self, kind: Records, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(kind.cf())?);
        it.seek(prefix);
        let mut out = Vec::new();
        while it.valid() {
            let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
            it.next();
        }
        it.status().map_err(StoreError::Scan)?;
        Ok(out)
    }

    /// Moves the live blocks of packs with a quarter or more of garbage to a new pack, records their new
    /// places, then deletes those packs and the ones nothing points at. Deletions and syncs wait meanwhile;
    /// reads and writes go on (a read that finds its pack gone looks the block up again). A pack with a block
    /// that fails its checksum is left as it is.
    fn compact_packs(&self) -> Result<(), StoreError> {
        let index = self.packs.lock_index();
        // The pack being written is closed first, so that it can be compacted too. Packs from `current` on
        // are written after this point (by others, or by the moves below) and left alone.
        let current = self.packs.close_current().map_err(|e| self.pack_error(self.packs.current(), e))?;
        self.sync_packs_locked(&index)?;
        let mut live: HashMap<u32, u64> = HashMap::new();
        self.scan_locations::<StoreError>(|_, location| {
            *live.entry(location.pack).or_default() += u64::from(location.len);
            Ok(())
        })?;
        let dir_error = |source| StoreError::Pack { path: self.packs.dir().display().to_string(), source };
        let on_disk = self.packs.list().map_err(dir_error)?;
        let (empty, rewrite) = packs::plan(&live, &on_disk, current);
        let mut moving: HashMap<u32, Vec<(Multihash, Location)>> = rewrite.iter().map(|id| (*id, Vec::new())).collect();
        self.scan_locations::<StoreError>(|mh, location| {
            if let Some(blocks) = moving.get_mut(&location.pack) {
                blocks.push((mh, location));
            }
            Ok(())
        })?;
        let mut emptied = empty;
        for (id, blocks) in moving {
            let mut intact = true;
            for (mh, location) in blocks {
                let data = match self.packs.read(&location, false) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!(pack = %self.packs.path(id).display(), error = %e, "a block of this pack cannot be read; the pack is kept");
                        intact = false;
                        break;
                    }
                };
                self.packs.append(&mh.to_bytes(), &[&data]).map_err(|e| self.pack_error(self.packs.current(), e))?;
            }
            self.sync_packs_locked(&index)?;
            if intact {
                emptied.push(id);
            }
        }
        self.packs.remove(&emptied).map_err(dir_error)
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(StoreError::Write)
    }
}

/// The storage market's column families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Contracts,
    Market,
    /// Imported and seeded torrents (`bittorrent`).
    Torrents,
}

impl Records {
    fn cf(self) -> &'static str {
        match self {
            Self::Contracts => CF_CONTRACTS,
            Self::Market => CF_MARKET,
            Self::Torrents => CF_TORRENTS,
        }
    }
}

/// Checks a stored block against its key.
pub fn verify_block(mh: &Multihash, data: &[u8]) -> bool {
    hash::verify_multihash(mh, data).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_chunker::CidParams;

    #[test]
    fn put_get_pin_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = CidParams::V0.block(btfs_chunker::block::RAW, b"hello".to_vec());
        {
            let store = BlockStore::open(dir.path(), true, true).expect("open");
            assert!(!store.has(&block.cid).expect("has"));
            store.put_many([&block]).expect("put");
            store.update_pins(&[(block.cid, PinKind::Recursive)], &[]).expect("pin");
        }
        let store = BlockStore::open(dir.path(), false, true).expect("reopen");
        assert_eq!(store.get(&block.cid).expect("get"), Some(b"hello".to_vec()));
        assert_eq!(store.pin(&block.cid).expect("pin"), Some(PinKind::Recursive));
        assert_eq!(store.stat().expect("stat"), (1, 5));
    }

    #[test]
    fn compact_reclaims_the_space_of_deleted_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path(), true, true).expect("open");
        // Four flushes make four blob files; every file keeps half of its blocks alive.
        let mut kept = Vec::new();
        let mut deleted = Vec::new();
        for file in 0..4u8 {
            let blocks: Vec<Block> = (0..16u8)
                .map(|i| CidParams::V0.block(btfs_chunker::block::RAW, vec![file * 16 + i; 256 * 1024]))
                .collect();
            store.put_many(blocks.iter()).expect("put");
            store.sync_blocks().expect("sync");
            for (i, b) in blocks.into_iter().enumerate() {
                if i % 2 == 0 { kept.push(b) } else { deleted.push(b) }
            }
        }
        let before = store.disk_usage();
        assert!(before >= 16 * 1024 * 1024, "{before}");
        store.delete_many(deleted.iter().map(|b| b.cid.hash())).expect("delete");
        store.compact().expect("compact");
        let after = store.disk_usage();
        assert!(after < before * 6 / 10, "{before} bytes before gc, {after} after");
        for b in &kept {
            assert_eq!(store.get_local(&b.cid).expect("get").as_deref(), Some(&b.data[..]));
        }
        for b in &deleted {
            assert!(!store.has(&b.cid).expect("has"));
        }
    }

    #[test]
    fn a_scan_goes_on_when_a_gc_moves_or_deletes_blocks_under_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path(), true, true).expect("open");
        let blocks: Vec<Block> =
            (0..8u8).map(|i| CidParams::V0.block(btfs_chunker::block::RAW, vec![i; 256 * 1024])).collect();
        store.put_many(blocks.iter()).expect("put");
        store.sync_blocks().expect("sync");
        let (kept, deleted) = blocks.split_at(4);
        let mut seen = Vec::new();
        let mut first = true;
        // The scan's iterator still sees the locations from before the gc, in the pack the gc removes.
        store
            .for_each_block::<StoreError>(|mh, data| {
                if std::mem::take(&mut first) {
                    store.delete_many(deleted.iter().map(|b| b.cid.hash())).expect("delete");
                    store.compact().expect("compact");
                }
                assert!(verify_block(&mh, data), "the bytes of {mh:?} do not match it");
                seen.push(mh);
                Ok(())
            })
            .expect("the scan survives the gc");
        for b in kept {
            assert!(seen.contains(b.cid.hash()), "a kept block was skipped");
        }
        assert!(seen.len() <= kept.len() + 1, "deleted blocks were visited: {}", seen.len());
    }

    #[test]
    fn missing_repo_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(BlockStore::open(&dir.path().join("nope"), false, true), Err(StoreError::Open { .. })));
    }
}
