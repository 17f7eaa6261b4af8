//! The node's identity: one secp256k1 key, as in BTFS. The same key is the PeerId, signs contracts and
//! cheques, and is the node's EVM address. The private key lives in `keys/identity` (mode 0600), outside the
//! config, so that `btfs config show` never prints it.

use std::fs;
use std::path::Path;

use libp2p_identity::{Keypair, PeerId};

/// Errors loading or creating the identity key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity key {path}")]
    Read { path: String, source: std::io::Error },
    #[error("identity key {path} is corrupt")]
    Decode { path: String },
    #[error("cannot write identity key {path}")]
    Write { path: String, source: std::io::Error },
}

/// Generates a new secp256k1 identity and writes it to `path`.
pub fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let keypair = Keypair::generate_secp256k1();
    let write_err = |source| IdentityError::Write { path: path.display().to_string(), source };
    let bytes = keypair.to_protobuf_encoding().map_err(|e| write_err(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    write_private(path, &bytes).map_err(write_err)?;
    Ok(keypair)
}

/// Loads the identity from `path`.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Read { path: path.display().to_string(), source })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::Decode { path: path.display().to_string() })
}

/// The PeerId of a keypair.
pub fn peer_id(keypair: &Keypair) -> PeerId {
    keypair.public().to_peer_id()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::write(path, bytes)
}
