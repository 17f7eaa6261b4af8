//! Import settings as kubo's `add` flags express them, resolved once into validated parameters.
//!
//! kubo's flags interact: `--cid-version=1` turns raw leaves on unless `--raw-leaves` says otherwise; any hash
//! other than sha2-256 forces CIDv1 (CIDv0 can only name sha2-256 dag-pb); `--trickle` makes dag-pb leaves of
//! UnixFS type Raw; a `--cid-profile` sets defaults that explicit flags then override. `Options::resolve`
//! applies those rules in one place and returns `Params`, which the builders take.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

use crate::block::{CidParams, CidVersion};
use crate::dir::{DEFAULT_SHARD_THRESHOLD, DirParams, ShardStrategy};
use crate::file::{FileParams, LeafKind, TRICKLE_LAYER_REPEAT};
use crate::hash::HashFunction;

pub use crate::file::Layout;

/// The largest chunk `--chunker size-N` accepts: 1 MiB, kubo's chunker limit, which keeps every block well
/// under the 2 MiB that Bitswap peers accept.
pub const MAX_CHUNK_SIZE: usize = 1024 * 1024;
/// kubo's default chunk size: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;
/// kubo's default links per node (`helpers.DefaultLinksPerBlock`).
pub const DEFAULT_MAX_LINKS: usize = 174;
/// kubo's default `--inline-limit`.
pub const DEFAULT_INLINE_LIMIT: usize = 32;

/// A validated chunk size (1 ..= `MAX_CHUNK_SIZE` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSize(NonZeroUsize);

impl ChunkSize {
    pub fn get(self) -> usize {
        self.0.get()
    }

    /// A chunk size, if it is within kubo's limits.
    pub fn new(size: usize) -> Option<Self> {
        NonZeroUsize::new(size).filter(|s| s.get() <= MAX_CHUNK_SIZE).map(Self)
    }
}

/// A bad `--chunker` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkerError {
    #[error("chunker {0:?} is not supported: use size-<bytes> (rabin and buzhash are not implemented)")]
    Unsupported(String),
    #[error("chunker {0:?}: size must be a whole number of bytes")]
    NotANumber(String),
    #[error("chunker {0:?}: size must be between 1 and {MAX_CHUNK_SIZE} bytes")]
    OutOfRange(String),
}

impl FromStr for ChunkSize {
    type Err = ChunkerError;

    /// Parses kubo's `--chunker` syntax: `size-N` or `default`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "default" {
            return ChunkSize::new(DEFAULT_CHUNK_SIZE).ok_or_else(|| ChunkerError::OutOfRange(s.into()));
        }
        let Some(num) = s.strip_prefix("size-") else {
            return Err(ChunkerError::Unsupported(s.into()));
        };
        let n: u64 = num.parse().map_err(|_| ChunkerError::NotANumber(s.into()))?;
        usize::try_from(n).ok().and_then(ChunkSize::new).ok_or_else(|| ChunkerError::OutOfRange(s.into()))
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size-{}", self.get())
    }
}

/// IPIP-499 import profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// kubo's historical default: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links, links-bytes sharding.
    UnixfsV0_2015,
    /// CIDv1, raw leaves, 1 MiB chunks, 1024 links, block-bytes sharding.
    UnixfsV1_2025,
}

/// An unknown `--cid-profile` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?} (expected unixfs-v0-2015 or unixfs-v1-2025)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unixfs-v0-2015" | "legacy-cid-v0" => Ok(Self::UnixfsV0_2015),
            "unixfs-v1-2025" | "test-cid-v1" => Ok(Self::UnixfsV1_2025),
            other => Err(UnknownProfile(other.into())),
        }
    }
}

/// `add` options as given by the user; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub profile: Option<Profile>,
    pub cid_version: Option<u64>,
    pub raw_leaves: Option<bool>,
    pub chunk_size: Option<ChunkSize>,
    pub trickle: bool,
    pub hash: Option<HashFunction>,
    pub inline: bool,
    pub inline_limit: Option<usize>,
    pub max_links: Option<usize>,
}

/// Resolved, consistent import parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub chunk_size: ChunkSize,
    pub file: FileParams,
    pub dir: DirParams,
}

/// Options that contradict each other or kubo's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown CID version {0} (expected 0 or 1)")]
    CidVersion(u64),
    #[error("CIDv0 only supports sha2-256, not {0}")]
    V0Hash(HashFunction),
    #[error("--inline-limit {0} is too large: the maximum is 128 bytes")]
    InlineLimit(usize),
    #[error("max links per node must be at least 2, got {0}")]
    MaxLinks(usize),
}

impl Options {
    /// Applies kubo's flag rules and validates the result.
    pub fn resolve(&self) -> Result<Params, OptionsError> {
        let profile = self.profile.unwrap_or(Profile::UnixfsV0_2015);
        let (mut version, mut raw_default, chunk, links, strategy) = match profile {
            Profile::UnixfsV0_2015 => (0, false, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, ShardStrategy::LinksBytes),
            Profile::UnixfsV1_2025 => (1, true, 1024 * 1024, 1024, ShardStrategy::BlockBytes),
        };
        if let Some(v) = self.cid_version {
            if v > 1 {
                return Err(OptionsError::CidVersion(v));
            }
            version = v;
        }
        let hash = self.hash.unwrap_or(HashFunction::Sha2_256);
        if hash != HashFunction::Sha2_256 {
            if self.cid_version == Some(0) {
                return Err(OptionsError::V0Hash(hash));
            }
            version = 1;
        }
        // kubo: CIDv1 implies raw leaves unless a profile fixed `UnixFSRawLeaves` explicitly, which the
        // unixfs-v0-2015 profile does (false).
        if version == 1 && self.profile != Some(Profile::UnixfsV0_2015) {
            raw_default = true;
        }
        let raw_leaves = self.raw_leaves.unwrap_or(raw_default);
        let max_links = self.max_links.unwrap_or(links);
        if max_links < 2 {
            return Err(OptionsError::MaxLinks(max_links));
        }
        let inline_limit = if self.inline {
            let limit = self.inline_limit.unwrap_or(DEFAULT_INLINE_LIMIT);
            if limit > crate::hash::MAX_IDENTITY_LEN {
                return Err(OptionsError::InlineLimit(limit));
            }
            Some(limit)
        } else {
            None
        };
        let cids =
            CidParams { version: if version == 0 { CidVersion::V0 } else { CidVersion::V1 }, hash, inline_limit };
        let (layout, leaf) = if self.trickle {
            let leaf = if raw_leaves { LeafKind::Raw } else { LeafKind::UnixfsRaw };
            (Layout::Trickle { max_links, layer_repeat: TRICKLE_LAYER_REPEAT }, leaf)
        } else {
            let leaf = if raw_leaves { LeafKind::Raw } else { LeafKind::File };
            (Layout::Balanced { max_links }, leaf)
        };
        let chunk_size = self.chunk_size.or_else(|| ChunkSize::new(chunk)).unwrap_or(ChunkSize(NonZeroUsize::MIN));
        Ok(Params {
            chunk_size,
            file: FileParams { cids, leaf, layout },
            dir: DirParams { cids, shard_threshold: Some(DEFAULT_SHARD_THRESHOLD), strategy },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_strings() {
        assert_eq!("size-1".parse::<ChunkSize>().map(ChunkSize::get), Ok(1));
        assert_eq!("size-1048576".parse::<ChunkSize>().map(ChunkSize::get), Ok(MAX_CHUNK_SIZE));
        assert_eq!("default".parse::<ChunkSize>().map(ChunkSize::get), Ok(DEFAULT_CHUNK_SIZE));
        for (s, bad) in [
            ("size-0", ChunkerError::OutOfRange("size-0".into())),
            ("size-99999999", ChunkerError::OutOfRange("size-99999999".into())),
            ("size-", ChunkerError::NotANumber("size-".into())),
            ("size-x", ChunkerError::NotANumber("size-x".into())),
            ("rabin", ChunkerError::Unsupported("rabin".into())),
        ] {
            assert_eq!(s.parse::<ChunkSize>(), Err(bad), "{s}");
        }
    }

    #[test]
    fn kubo_flag_rules() {
        let v1 = Options { cid_version: Some(1), ..Default::default() }.resolve().expect("valid");
        assert_eq!(v1.file.leaf, LeafKind::Raw);
        assert_eq!(v1.chunk_size.get(), DEFAULT_CHUNK_SIZE);
        let sha512 = Options { hash: Some(HashFunction::Sha2_512), ..Default::default() }.resolve().expect("valid");
        assert_eq!(sha512.file.cids.version, CidVersion::V1);
        assert_eq!(
            Options { hash: Some(HashFunction::Blake3), cid_version: Some(0), ..Default::default() }.resolve(),
            Err(OptionsError::V0Hash(HashFunction::Blake3))
        );
        assert_eq!(Options { cid_version: Some(2), ..Default::default() }.resolve(), Err(OptionsError::CidVersion(2)));
        let trickle = Options { trickle: true, ..Default::default() }.resolve().expect("valid");
        assert_eq!(trickle.file.leaf, LeafKind::UnixfsRaw);
    }
}
