//! Blocks, links and the CID rules every builder shares (CIDv0/v1, raw leaves, inline identity CIDs).

use cid::Cid;

use crate::hash::{self, HashFunction};

/// Multicodec of raw blocks.
pub const RAW: u64 = 0x55;

/// A block produced by a builder: its CID and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub cid: Cid,
    pub data: Vec<u8>,
}

/// A CID version, validated (only 0 and 1 exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CidVersion {
    V0,
    V1,
}

/// How blocks are named: CID version, hash function and the inline limit.
///
/// Invariant (checked by `import::Options::resolve`): `V0` goes with sha2-256 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidParams {
    pub version: CidVersion,
    pub hash: HashFunction,
    /// Blocks of at most this many bytes get an identity CID (kubo's `--inline`); `None` turns inlining off.
    pub inline_limit: Option<usize>,
}

impl CidParams {
    /// kubo's default: CIDv0, sha2-256, no inlining.
    pub const V0: Self = Self { version: CidVersion::V0, hash: HashFunction::Sha2_256, inline_limit: None };

    /// Names `data` encoded with `codec`.
    pub fn cid(&self, codec: u64, data: &[u8]) -> Cid {
        if let Some(limit) = self.inline_limit
            && data.len() <= limit
            && let Some(mh) = hash::identity(data)
        {
            return Cid::new_v1(codec, mh);
        }
        self.named(codec, self.hash.digest(data))
    }

    /// `cid` of the concatenation of `parts`, without joining them unless the result is inlined.
    pub fn cid_of_parts(&self, codec: u64, parts: &[&[u8]]) -> Cid {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.inline_limit.is_some_and(|limit| len <= limit) {
            return self.cid(codec, &parts.concat());
        }
        self.named(codec, self.hash.digest_parts(parts))
    }

    fn named(&self, codec: u64, mh: hash::Multihash) -> Cid {
        if self.version == CidVersion::V0 && codec == crate::dagpb::CODEC && self.hash == HashFunction::Sha2_256 {
            // A sha2-256 digest always makes a valid CIDv0; fall back to v1 rather than panic if not.
            if let Ok(cid) = Cid::new_v0(mh) {
                return cid;
            }
        }
        Cid::new_v1(codec, mh)
    }

    /// Makes a block from encoded bytes.
    pub fn block(&self, codec: u64, data: Vec<u8>) -> Block {
        Block { cid: self.cid(codec, &data), data }
    }
}

/// A link to a finished file or directory DAG: its root CID, the cumulative size of every block under it
/// (dag-pb `Tsize`), and for files the number of content bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    pub tsize: u64,
    pub filesize: u64,
}
