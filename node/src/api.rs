//! `Node`: the one facade that the CLI (and, with the daemon, the RPC API and the gateway) calls. Command
//! logic lives in the modules it delegates to; nothing here parses arguments or prints.
//!
//! A `Node` is shared (`Arc<Node>`) by every request of a daemon, so commands run concurrently. One rule
//! keeps that safe, as kubo's GC lock does: `repo gc` and `block rm`, which delete blocks, never run while a
//! command that writes blocks it has not pinned yet (`add`, `dag import`, `block put`, `pin add`) is under
//! way; those hold `gc_lock` shared, the deleting ones exclusively.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use btfs_chunker::Cid;
use btfs_chunker::hash::HashFunction;
use serde_json::Value;

use crate::add::{self, AddError, AddEvents, AddInput, AddOptions, Added};
use crate::blocks::{self, BlockError, ImportSummary, PinFilter, RepoStat};
use crate::read::{self, LsEntry, ReadError};
use crate::repo::config::{self, ConfigError, SizeError};
use crate::repo::{InitProfile, REPO_VERSION, Repo, RepoError};

/// The agent version reported by `id` and `version`.
pub const AGENT_VERSION: &str = concat!("btfs/", env!("CARGO_PKG_VERSION"));

/// A btfs node over an open repo.
#[derive(Debug)]
pub struct Node {
    repo: Repo,
    /// Set once by the daemon when the network is up.
    pub(crate) online: std::sync::OnceLock<crate::online::Online>,
    /// Set once by the daemon when the storage market runs.
    pub(crate) market: std::sync::OnceLock<std::sync::Arc<crate::market::Market>>,
    /// Set once by the daemon when its BitTorrent seeding session runs.
    pub(crate) torrents: std::sync::OnceLock<std::sync::Arc<crate::bittorrent::Torrents>>,
    /// Shared by commands that write unpinned blocks, exclusive for those that delete (see module doc).
    gc_lock: RwLock<()>,
}

/// What `id` reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub public_key: String,
    pub addresses: Vec<String>,
    pub agent_version: String,
    pub protocols: Vec<String>,
}

/// What `version` reports, in kubo's shape (`Golang` has no counterpart here and is left out).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub repo: String,
    /// `<arch>/<os>` with Go's names, as kubo prints it (`amd64/linux`).
    pub system: String,
}

/// What `repo stat` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    pub num_objects: u64,
    pub repo_size: u64,
    pub storage_max: u64,
    pub repo_path: String,
    /// `fs-repo@<n>`.
    pub version: String,
}

/// Errors from `repo stat`.
#[derive(Debug, thiserror::Error)]
pub enum RepoStatError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("Datastore.StorageMax is invalid")]
    StorageMax(#[source] SizeError),
}

/// How `config <key> <value>` reads its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigValueKind {
    String,
    /// `--json`
    Json,
    /// `--bool`
    Bool,
}

impl Node {
    /// Creates a repo and opens a node on it.
    pub fn init(path: &Path, profile: InitProfile) -> Result<Self, RepoError> {
        Ok(Self {
            repo: Repo::init(path, profile)?,
            gc_lock: RwLock::new(()),
            online: Default::default(),
            market: Default::default(),
            torrents: Default::default(),
        })
    }

    /// Opens the node whose repo is at `path`.
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        Ok(Self {
            repo: Repo::open(path)?,
            gc_lock: RwLock::new(()),
            online: Default::default(),
            market: Default::default(),
            torrents: Default::default(),
        })
    }

    /// Held while blocks are written that no pin protects yet.
    pub(crate) fn writing(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic while it was held leaves nothing inconsistent.
        self.gc_lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held while unpinned blocks are deleted.
    fn deleting(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    pub fn add(
        &self,
        inputs: Vec<AddInput>,
        opts: &AddOptions,
        events: &mut dyn AddEvents,
    ) -> Result<Vec<Added>, AddError> {
        let _writing = self.writing();
        let added = add::add(self.repo.store(), inputs, opts, events)?;
        if opts.pin && !opts.only_hash {
            self.announce(added.iter().map(|a| a.cid).collect());
        }
        Ok(added)
    }

    /// Resolves a CID or `/ipfs/<cid>/path`.
    pub fn resolve(&self, path: &str) -> Result<Cid, ReadError> {
        read::resolve(self.repo.store(), path)
    }

    pub fn cat(&self, path: &str, offset: u64, length: Option<u64>, out: &mut dyn Write) -> Result<u64, ReadError> {
        let cid = self.resolve(path)?;
        read::cat(self.repo.store(), &cid, offset, length, out)
    }

    /// `cat` of several files as one stream, as kubo's `cat` takes them: `offset` and `length` apply to
    /// the concatenation. Returns the bytes written.
    pub fn cat_all(
        &self,
        paths: &[String],
        mut offset: u64,
        length: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<u64, ReadError> {
        let mut left = length;
        let mut written = 0;
        for path in paths {
            if left == Some(0) {
                break;
            }
            let cid = self.resolve(path)?;
            let size = read::file_size(self.repo.store(), &cid)?;
            if offset >= size {
                offset -= size;
                continue;
            }
            let n = read::cat(self.repo.store(), &cid, offset, left, out)?;
            offset = 0;
            written += n;
            left = left.map(|l| l.saturating_sub(n));
        }
        Ok(written)
    }

    /// How many bytes `cat_all` will write.
    pub fn cat_len(&self, paths: &[String], offset: u64, length: Option<u64>) -> Result<u64, ReadError> {
        let mut total = 0u64;
        for path in paths {
            total = total.saturating_add(self.file_size(path)?);
        }
        let after = total.saturating_sub(offset);
        Ok(length.map_or(after, |l| l.min(after)))
    }

    pub fn file_size(&self, path: &str) -> Result<u64, ReadError> {
        read::file_size(self.repo.store(), &self.resolve(path)?)
    }

    /// Writes the file or tree at `path` to `dest`; `progress` hears of every byte written.
    pub fn get(&self, path: &str, dest: &Path, progress: &dyn Fn(u64)) -> Result<(), ReadError> {
        let cid = self.resolve(path)?;
        self.prefetch(&cid)?;
        read::get(self.repo.store(), &cid, dest, progress)
    }

    /// Writes the file or tree at `path` to `out` as a tar stream, the root entry named as kubo names it:
    /// the last segment of the path (the CID for a bare CID).
    pub fn get_tar(&self, path: &str, out: &mut dyn Write) -> Result<(), ReadError> {
        let cid = self.resolve(path)?;
        self.prefetch(&cid)?;
        let name = path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(path);
        read::get_tar(self.repo.store(), &cid, name, out)
    }

    pub fn ls(&self, path: &str) -> Result<(Cid, Vec<LsEntry>), ReadError> {
        let cid = self.resolve(path)?;
        Ok((cid, read::ls(self.repo.store(), &cid)?))
    }

    pub fn pin_add(&self, cid: &Cid, recursive: bool) -> Result<(), BlockError> {
        // Blocks fetched for the pin are unpinned until it is written: gc waits.
        let _writing = self.writing();
        // A completed recursive fetch has walked the whole DAG (reading every stored block, fetching every
        // missing one), and gc waits on `_writing`: walking it again would only read it all once more.
        let complete = recursive && self.prefetch(cid)?;
        blocks::pin_add(self.repo.store(), cid, recursive, complete)?;
        self.announce(vec![*cid]);
        Ok(())
    }

    pub fn pin_rm(&self, cid: &Cid) -> Result<(), BlockError> {
        blocks::pin_rm(self.repo.store(), cid)
    }

    pub fn pin_ls(&self, filter: PinFilter) -> Result<Vec<(Cid, &'static str)>, BlockError> {
        blocks::pin_ls(self.repo.store(), filter)
    }

    /// How each of `cids` is pinned (`None`: not among the pins `filter` selects).
    pub fn pin_status(&self, cids: &[Cid], filter: PinFilter) -> Result<Vec<Option<&'static str>>, BlockError> {
        blocks::pin_status(self.repo.store(), cids, filter)
    }

    pub fn block_get(&self, cid: &Cid) -> Result<Vec<u8>, BlockError> {
        blocks::block_get(self.repo.store(), cid)
    }

    /// Stores a block. To keep it from a `repo gc` that starts right after, pin it with `block_put_pinned`.
    pub fn block_put(&self, data: Vec<u8>, codec: u64, hash: HashFunction, v0: bool) -> Result<Cid, BlockError> {
        let _writing = self.writing();
        blocks::block_put(self.repo.store(), data, codec, hash, v0)
    }

    /// `block put --pin`: stores a block and pins it directly, with no `repo gc` in between.
    pub fn block_put_pinned(&self, data: Vec<u8>, codec: u64, hash: HashFunction, v0: bool) -> Result<Cid, BlockError> {
        let _writing = self.writing();
        let cid = blocks::block_put(self.repo.store(), data, codec, hash, v0)?;
        blocks::pin_add(self.repo.store(), &cid, false, false)?;
        Ok(cid)
    }

    pub fn block_rm(&self, cid: &Cid) -> Result<(), BlockError> {
        let _deleting = self.deleting();
        blocks::block_rm(self.repo.store(), cid)
    }

    pub fn dag_export(&self, cid: &Cid, out: &mut dyn Write) -> Result<u64, BlockError> {
        self.prefetch(cid)?;
        blocks::dag_export(self.repo.store(), cid, out)
    }

    pub fn dag_import(&self, input: impl Read, pin_roots: bool) -> Result<ImportSummary, BlockError> {
        let _writing = self.writing();
        blocks::dag_import(self.repo.store(), input, pin_roots)
    }

    pub fn repo_stat(&self) -> Result<RepoStat, BlockError> {
        blocks::repo_stat(self.repo.store())
    }

    /// `repo stat` with the limit and location, as kubo reports them.
    pub fn repo_summary(&self) -> Result<RepoSummary, RepoStatError> {
        let stat = self.repo_stat()?;
        let storage_max =
            config::parse_size(&self.repo.config().typed().datastore.storage_max).map_err(RepoStatError::StorageMax)?;
        Ok(RepoSummary {
            num_objects: stat.num_objects,
            repo_size: stat.repo_size,
            storage_max,
            repo_path: self.repo.path().display().to_string(),
            version: format!("fs-repo@{REPO_VERSION}"),
        })
    }

    pub fn repo_verify(&self) -> Result<(u64, Vec<btfs_chunker::hash::Multihash>), BlockError> {
        blocks::repo_verify(self.repo.store())
    }

    pub fn repo_gc(&self) -> Result<Vec<Cid>, BlockError> {
        let _deleting = self.deleting();
        blocks::repo_gc(self.repo.store())
    }

    pub fn id(&self) -> IdInfo {
        let public = self.repo.keypair().public();
        IdInfo {
            id: public.to_peer_id().to_string(),
            public_key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, public.encode_protobuf()),
            addresses: self.online().map(|o| o.addresses.clone()).unwrap_or_default(),
            agent_version: AGENT_VERSION.to_string(),
            protocols: self.online().map(|o| o.protocols.clone()).unwrap_or_default(),
        }
    }

    pub fn config_get(&self, key: &str) -> Result<Value, ConfigError> {
        self.repo.config().get(key).cloned()
    }

    pub fn config_show(&self) -> Value {
        self.repo.config().tree().clone()
    }

    /// Sets a config key; the file is rewritten atomically before the change is visible.
    pub fn config_set(&self, key: &str, value: Value) -> Result<(), ConfigError> {
        self.repo.update_config(|config| config.set(key, value))
    }

    pub fn version(&self) -> VersionInfo {
        version_info()
    }
}

/// A codec name `block put --cid-codec` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?} (expected raw, dag-pb, dag-cbor, dag-json or json)")]
pub struct UnknownCodec(pub String);

/// The multicodec of a codec name as kubo's `--cid-codec` takes it.
pub fn codec_from_name(name: &str) -> Result<u64, UnknownCodec> {
    Ok(match name {
        "raw" => btfs_chunker::block::RAW,
        "dag-pb" | "protobuf" => btfs_chunker::dagpb::CODEC,
        "dag-cbor" | "cbor" => btfs_chunker::links::DAG_CBOR,
        "dag-json" => 0x0129,
        "json" => 0x0200,
        other => return Err(UnknownCodec(other.to_string())),
    })
}

/// This build's version, in kubo's `version` shape.
pub fn version_info() -> VersionInfo {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: String::new(),
        repo: REPO_VERSION.to_string(),
        system: format!("{arch}/{}", std::env::consts::OS),
    }
}

/// Reads the value of `config <key> <value>` as the flags say.
pub fn config_value(key: &str, raw: &str, kind: ConfigValueKind) -> Result<Value, ConfigError> {
    let bad = |reason: String| ConfigError::BadValue { key: key.to_string(), reason };
    match kind {
        ConfigValueKind::String => Ok(Value::String(raw.to_string())),
        ConfigValueKind::Json => serde_json::from_str(raw).map_err(|e| bad(format!("value is not valid JSON: {e}"))),
        ConfigValueKind::Bool => {
            raw.parse().map(Value::Bool).map_err(|_| bad(format!("value {raw:?} is not true or false")))
        }
    }
}

/// Parses `--profile` for `init`.
pub fn init_profile(name: Option<&str>) -> Result<InitProfile, String> {
    match name {
        None | Some("default") => Ok(InitProfile::Default),
        Some("test") => Ok(InitProfile::Test),
        Some(other) => Err(format!("unknown init profile {other:?} (expected test)")),
    }
}
