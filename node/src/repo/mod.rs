//! The repo at `$BTFS_PATH`: config, identity key, block store, and the lock that keeps a second process out.
//!
//! Layout: `config` (JSON), `keys/identity` (secp256k1 key), `datastore/` (RocksDB), `repo.lock`
//! (an OS file lock held for as long as a `Repo` is open), `version`.

pub mod config;
pub mod identity;
mod packs;
pub mod pins;
pub mod store;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use libp2p_identity::Keypair;

pub use self::config::{ConfigFile, InitProfile};
pub use self::store::{BlockStore, PinKind, StoreError};

/// The on-disk format version this build writes and reads.
pub const REPO_VERSION: u32 = 1;

/// Errors opening or creating a repo.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no btfs repo found at {path} (run `btfs init`)")]
    NotInitialized { path: String },
    #[error("btfs repo already exists at {path}")]
    AlreadyInitialized { path: String },
    #[error("repo at {path} is locked by another process (is a btfs daemon running?)")]
    Locked { path: String },
    #[error("repo at {path} has version {found}, this btfs reads version {REPO_VERSION}")]
    Version { path: String, found: String },
    #[error("repo i/o failed at {path}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io { path: path.display().to_string(), source }
}

/// An open repo. Dropping it releases the lock.
///
/// The config sits behind a lock so that a shared `Repo` (the daemon's, behind an `Arc`) can change it;
/// every change is written to disk before it becomes visible.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    config: RwLock<ConfigFile>,
    keypair: Keypair,
    store: BlockStore,
    _lock: File,
}

impl Repo {
    /// Creates a repo at `path` (which may exist but must not hold a repo).
    pub fn init(path: &Path, profile: InitProfile) -> Result<Self, RepoError> {
        if path.join("config").exists() {
            return Err(RepoError::AlreadyInitialized { path: path.display().to_string() });
        }
        fs::create_dir_all(path).map_err(io_err(path))?;
        let lock = lock(path)?;
        // An init that died before writing the config leaves its key behind; reuse it rather than refuse.
        let key_path = path.join("keys").join("identity");
        let keypair = if key_path.exists() { identity::load(&key_path)? } else { identity::create(&key_path)? };
        let peer = identity::peer_id(&keypair).to_string();
        let config = ConfigFile::new(&peer, profile);
        let store = BlockStore::open(&path.join("datastore"), true, config.typed().datastore.direct_writes)?;
        fs::write(path.join("version"), format!("{REPO_VERSION}\n")).map_err(io_err(path))?;
        // The config is written last: its presence is what marks a finished init.
        config.save(&path.join("config"))?;
        Ok(Self { path: path.to_path_buf(), config: RwLock::new(config), keypair, store, _lock: lock })
    }

    /// Opens the repo at `path`, taking its lock.
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        if !path.join("config").exists() {
            return Err(RepoError::NotInitialized { path: path.display().to_string() });
        }
        let lock = lock(path)?;
        let version = fs::read_to_string(path.join("version")).map_err(io_err(path))?;
        if version.trim() != REPO_VERSION.to_string() {
            return Err(RepoError::Version { path: path.display().to_string(), found: version.trim().to_string() });
        }
        let config = ConfigFile::load(&path.join("config"))?;
        let keypair = identity::load(&path.join("keys").join("identity"))?;
        let store = BlockStore::open(&path.join("datastore"), false, config.typed().datastore.direct_writes)?;
        Ok(Self { path: path.to_path_buf(), config: RwLock::new(config), keypair, store, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// The current config. Hold the guard briefly: a config change waits for it.
    pub fn config(&self) -> RwLockReadGuard<'_, ConfigFile> {
        // A panic while the lock was held cannot leave a half-changed config: changes are swapped in whole.
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Changes the config: `change` edits a copy, which is written to disk atomically and only then
    /// replaces the config in memory. Changes are serialised, so concurrent ones do not lose each other.
    pub fn update_config<E>(&self, change: impl FnOnce(&mut ConfigFile) -> Result<(), E>) -> Result<(), E>
    where
        E: From<config::ConfigError>,
    {
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = current.clone();
        change(&mut next)?;
        next.save(&self.path.join("config"))?;
        *current = next;
        Ok(())
    }
}

fn lock(path: &Path) -> Result<File, RepoError> {
    let lock_path = path.join("repo.lock");
    let file = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(RepoError::Locked { path: path.display().to_string() }),
        Err(fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(dir.path(), InitProfile::Test).expect("init");
        assert!(matches!(Repo::open(dir.path()), Err(RepoError::Locked { .. })));
        assert!(matches!(Repo::init(dir.path(), InitProfile::Test), Err(RepoError::AlreadyInitialized { .. })));
        drop(repo);
        Repo::open(dir.path()).expect("reopens after the first closes");
    }

    #[test]
    fn missing_repo_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Repo::open(&dir.path().join("absent")).expect_err("no repo");
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
