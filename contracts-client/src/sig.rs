//! Recovering the signer of a 65-byte `r || s || v` signature over a digest, refusing malleable forms.
//!
//! The same rules as `Vault.sol`'s `recover`: exactly 65 bytes, `v` in {0, 1, 27, 28}, `s` at most n/2.

use alloy::primitives::{Address, B256, Signature};

/// Why a signature does not name a signer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is {len} bytes, expected 65")]
    Length { len: usize },
    #[error("signature has invalid v {v}")]
    V { v: u8 },
    #[error("signature has a high s (malleable)")]
    HighS,
    #[error("signature recovers no public key")]
    Unrecoverable,
}

pub(crate) fn recover(digest: &B256, sig: &[u8]) -> Result<Address, SignatureError> {
    let bytes: &[u8; 65] = sig.try_into().map_err(|_| SignatureError::Length { len: sig.len() })?;
    let sig = Signature::from_raw_array(bytes).map_err(|_| SignatureError::V { v: bytes[64] })?;
    if sig.normalize_s().is_some() {
        return Err(SignatureError::HighS);
    }
    sig.recover_address_from_prehash(digest).map_err(|_| SignatureError::Unrecoverable)
}
