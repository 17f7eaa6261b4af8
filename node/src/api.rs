//! `Node`: the one facade that the CLI (and, with the daemon, the RPC API and the gateway) calls. Command
//! logic lives in the modules it delegates to; nothing here parses arguments or prints.

use std::io::{Read, Write};
use std::path::Path;

use btfs_chunker::Cid;
use btfs_chunker::hash::HashFunction;
use serde_json::Value;

use crate::add::{self, AddError, AddEvents, AddInput, AddOptions, Added};
use crate::blocks::{self, BlockError, ImportSummary, PinFilter, RepoStat};
use crate::read::{self, LsEntry, ReadError};
use crate::repo::config::ConfigError;
use crate::repo::{InitProfile, Repo, RepoError};

/// The agent version reported by `id` and `version`.
pub const AGENT_VERSION: &str = concat!("btfs/", env!("CARGO_PKG_VERSION"));

/// A btfs node over an open repo.
#[derive(Debug)]
pub struct Node {
    repo: Repo,
    /// Set once by the daemon when the network is up.
    pub(crate) online: std::sync::OnceLock<crate::online::Online>,
}

/// What `id` reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub public_key: String,
    pub addresses: Vec<String>,
    pub agent_version: String,
    pub protocols: Vec<String>,
}

impl Node {
    /// Creates a repo and opens a node on it.
    pub fn init(path: &Path, profile: InitProfile) -> Result<Self, RepoError> {
        Ok(Self { repo: Repo::init(path, profile)?, online: Default::default() })
    }

    /// Opens the node whose repo is at `path`.
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        Ok(Self { repo: Repo::open(path)?, online: Default::default() })
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
        self.prefetch(&cid)?;
        read::cat(self.repo.store(), &cid, offset, length, out)
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

    pub fn ls(&self, path: &str) -> Result<(Cid, Vec<LsEntry>), ReadError> {
        let cid = self.resolve(path)?;
        Ok((cid, read::ls(self.repo.store(), &cid)?))
    }

    pub fn pin_add(&self, cid: &Cid, recursive: bool) -> Result<(), BlockError> {
        if recursive {
            self.prefetch(cid)?;
        }
        blocks::pin_add(self.repo.store(), cid, recursive)?;
        self.announce(vec![*cid]);
        Ok(())
    }

    pub fn pin_rm(&self, cid: &Cid) -> Result<(), BlockError> {
        blocks::pin_rm(self.repo.store(), cid)
    }

    pub fn pin_ls(&self, filter: PinFilter) -> Result<Vec<(Cid, &'static str)>, BlockError> {
        blocks::pin_ls(self.repo.store(), filter)
    }

    pub fn block_get(&self, cid: &Cid) -> Result<Vec<u8>, BlockError> {
        blocks::block_get(self.repo.store(), cid)
    }

    pub fn block_put(&self, data: Vec<u8>, codec: u64, hash: HashFunction, v0: bool) -> Result<Cid, BlockError> {
        blocks::block_put(self.repo.store(), data, codec, hash, v0)
    }

    pub fn block_rm(&self, cid: &Cid) -> Result<(), BlockError> {
        blocks::block_rm(self.repo.store(), cid)
    }

    pub fn dag_export(&self, cid: &Cid, out: &mut dyn Write) -> Result<u64, BlockError> {
        self.prefetch(cid)?;
        blocks::dag_export(self.repo.store(), cid, out)
    }

    pub fn dag_import(&self, input: impl Read, pin_roots: bool) -> Result<ImportSummary, BlockError> {
        blocks::dag_import(self.repo.store(), input, pin_roots)
    }

    pub fn repo_stat(&self) -> Result<RepoStat, BlockError> {
        blocks::repo_stat(self.repo.store())
    }

    pub fn repo_verify(&self) -> Result<(u64, Vec<btfs_chunker::hash::Multihash>), BlockError> {
        blocks::repo_verify(self.repo.store())
    }

    pub fn repo_gc(&self) -> Result<Vec<Cid>, BlockError> {
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

    pub fn config_set(&mut self, key: &str, value: Value) -> Result<(), RepoError> {
        let mut config = self.repo.config().clone();
        config.set(key, value)?;
        self.repo.save_config(config)
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
