//! Multihash functions the importer may use, and block verification.
//!
//! `HashFunction` is the validated choice (parsed once at the edge from kubo's `--hash` names); `verify`
//! rehashes bytes against a CID and is what every reader of outside data calls before trusting a block.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

/// A multihash with room for the largest digest we produce (sha2-512, 64 bytes).
pub type Multihash = multihash::Multihash<64>;

/// Multicodec of the identity "hash" (the bytes themselves), used for inline CIDs.
pub const IDENTITY: u64 = 0x00;
/// Multicodec of sha2-256, the default.
pub const SHA2_256: u64 = 0x12;
/// Multicodec of sha2-512.
pub const SHA2_512: u64 = 0x13;
/// Multicodec of blake3 with a 32-byte digest.
pub const BLAKE3: u64 = 0x1e;
/// Multicodec of blake2b-256.
pub const BLAKE2B_256: u64 = 0xb220;
/// Multicodec of sha1: BitTorrent v1 infohashes, verified but never chosen for new blocks.
pub const SHA1: u64 = 0x11;

/// Largest block an identity multihash may hold when read from outside (kubo's `--inline-limit` cap).
pub const MAX_IDENTITY_LEN: usize = 128;

/// A hash function the importer can use to name blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFunction {
    Sha2_256,
    Sha2_512,
    Blake3,
    Blake2b256,
}

impl HashFunction {
    /// The multicodec code of this function.
    pub fn code(self) -> u64 {
        match self {
            Self::Sha2_256 => SHA2_256,
            Self::Sha2_512 => SHA2_512,
            Self::Blake3 => BLAKE3,
            Self::Blake2b256 => BLAKE2B_256,
        }
    }

    /// kubo's name for this function (`--hash`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha2_256 => "sha2-256",
            Self::Sha2_512 => "sha2-512",
            Self::Blake3 => "blake3",
            Self::Blake2b256 => "blake2b-256",
        }
    }

    /// Hashes `data` into a multihash.
    pub fn digest(self, data: &[u8]) -> Multihash {
        let code = match self {
            Self::Sha2_256 => Code::Sha2_256,
            Self::Sha2_512 => Code::Sha2_512,
            Self::Blake3 => Code::Blake3_256,
            Self::Blake2b256 => Code::Blake2b256,
        };
        code.digest(data)
    }

    /// `digest` of the concatenation of `parts`; sha2-256 streams over them, the others join them first
    /// unless only one part has bytes (a raw leaf).
    pub fn digest_parts(self, parts: &[&[u8]]) -> Multihash {
        let mut filled = parts.iter().filter(|p| !p.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.digest(only);
        }
        if self == Self::Sha2_256 {
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            for part in parts {
                hasher.update(part);
            }
            if let Ok(mh) = Multihash::wrap(SHA2_256, &hasher.finalize()) {
                return mh;
            }
        }
        self.digest(&parts.concat())
    }

    /// The function behind a multihash code, if we can compute it.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            SHA2_256 => Some(Self::Sha2_256),
            SHA2_512 => Some(Self::Sha2_512),
            BLAKE3 => Some(Self::Blake3),
            BLAKE2B_256 => Some(Self::Blake2b256),
            _ => None,
        }
    }
}

impl fmt::Display for HashFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--hash` name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown hash function {0:?} (expected sha2-256, sha2-512, blake3 or blake2b-256)")]
pub struct UnknownHashFunction(pub String);

impl FromStr for HashFunction {
    type Err = UnknownHashFunction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha2-256" => Ok(Self::Sha2_256),
            "sha2-512" => Ok(Self::Sha2_512),
            "blake3" => Ok(Self::Blake3),
            "blake2b-256" => Ok(Self::Blake2b256),
            other => Err(UnknownHashFunction(other.to_owned())),
        }
    }
}

/// Why a block failed verification against its CID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("block {cid} does not match its hash")]
    Mismatch { cid: Cid },
    #[error("block {cid} uses multihash code {code:#x}, which this node cannot compute")]
    UnsupportedHash { cid: Cid, code: u64 },
}

/// Checks that `data` hashes to the multihash inside `cid`.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    verify_multihash(cid.hash(), data).map_err(|e| match e {
        MultihashVerifyError::Mismatch => VerifyError::Mismatch { cid: *cid },
        MultihashVerifyError::Unsupported(code) => VerifyError::UnsupportedHash { cid: *cid, code },
    })
}

/// Why bytes failed verification against a multihash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultihashVerifyError {
    Mismatch,
    Unsupported(u64),
}

/// Checks that `data` hashes to `mh` (identity multihashes compare the bytes themselves).
pub fn verify_multihash(mh: &Multihash, data: &[u8]) -> Result<(), MultihashVerifyError> {
    let ok = match mh.code() {
        IDENTITY => mh.digest() == data,
        // BitTorrent v1 infohashes name `torrent-info` blocks; never used to name new UnixFS blocks.
        SHA1 => {
            use sha1::Digest as _;
            sha1::Sha1::digest(data).as_slice() == mh.digest()
        }
        code => match HashFunction::from_code(code) {
            Some(f) => f.digest(data).digest() == mh.digest(),
            None => return Err(MultihashVerifyError::Unsupported(code)),
        },
    };
    if ok { Ok(()) } else { Err(MultihashVerifyError::Mismatch) }
}

/// An identity multihash holding `data` (for inline CIDs).
pub fn identity(data: &[u8]) -> Option<Multihash> {
    Multihash::wrap(IDENTITY, data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [HashFunction::Sha2_256, HashFunction::Sha2_512, HashFunction::Blake3, HashFunction::Blake2b256] {
            assert_eq!(f.name().parse::<HashFunction>().ok(), Some(f));
            assert_eq!(HashFunction::from_code(f.code()), Some(f));
        }
        assert!("md5".parse::<HashFunction>().is_err());
    }

    #[test]
    fn verify_detects_mismatch() {
        let mh = HashFunction::Sha2_256.digest(b"hello");
        let cid = Cid::new_v1(0x55, mh);
        assert!(verify(&cid, b"hello").is_ok());
        assert_eq!(verify(&cid, b"hellp"), Err(VerifyError::Mismatch { cid }));
    }
}
