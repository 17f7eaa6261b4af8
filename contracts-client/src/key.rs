//! The node's secp256k1 key as an EVM signer: the same 32-byte secret as its libp2p identity.

use alloy::primitives::{Address, B256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;

/// Why a secret is not a usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Zero, or not below the curve order.
    #[error("secret is not a valid secp256k1 scalar")]
    InvalidSecret,
    /// The signer failed; with a valid local key this does not happen.
    #[error("signing digest {digest} failed: {reason}")]
    Sign { digest: B256, reason: String },
}

/// A secp256k1 key that signs contracts, cheques and host ads. Its [`Address`] is the last 20 bytes of the
/// keccak-256 of the uncompressed public key, as on any EVM chain.
#[derive(Clone)]
pub struct NodeKey {
    signer: PrivateKeySigner,
}

impl NodeKey {
    /// A key from its 32-byte secret (libp2p's `secp256k1::SecretKey::to_bytes()`).
    pub fn from_secret(secret: &[u8; 32]) -> Result<Self, KeyError> {
        let signer = PrivateKeySigner::from_bytes(&B256::from(*secret)).map_err(|_| KeyError::InvalidSecret)?;
        Ok(Self { signer })
    }

    /// The key's EVM address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Signs a 32-byte digest (an EIP-712 signing hash): 65 bytes `r || s || v` with `v` 27 or 28 and low `s`.
    pub fn sign_digest(&self, digest: &B256) -> Result<[u8; 65], KeyError> {
        let sig = self
            .signer
            .sign_hash_sync(digest)
            .map_err(|e| KeyError::Sign { digest: *digest, reason: e.to_string() })?;
        Ok(sig.as_bytes())
    }

    /// The signer for alloy's wallet (settlement transactions).
    pub(crate) fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").field("address", &self.address()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_secret_is_refused() {
        assert!(matches!(NodeKey::from_secret(&[0; 32]), Err(KeyError::InvalidSecret)));
        assert!(matches!(NodeKey::from_secret(&[0xff; 32]), Err(KeyError::InvalidSecret)));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = NodeKey::from_secret(&[7; 32]).expect("valid secret");
        let shown = format!("{key:?}");
        assert!(shown.contains("address"));
        assert!(!shown.contains("0707070707"));
    }
}
