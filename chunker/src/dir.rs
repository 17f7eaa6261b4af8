//! Directories: plain UnixFS directories and HAMT-sharded ones, switched at kubo's size threshold.
//!
//! A directory is built once all its entries are known (the importer finishes children first), so the
//! result is canonical: the same entries give the same CID whatever order they were inserted in. Entries are
//! kept sorted by name bytes, which is the order dag-pb requires. A HAMT (fanout 256, murmur3-x64-64, as in
//! go-unixfs and the JavaScript importer) places each name by successive bytes of its hash; a slot holds one
//! entry, or a child shard when two or more names share that prefix.

use std::collections::BTreeMap;

use crate::block::{Block, CidParams, Link};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{Data, DataType, HAMT_HASH_MURMUR3};

/// kubo's HAMT fanout (`HAMTShardingSize` directories use 256-way shards).
pub const HAMT_FANOUT: u64 = 256;
/// kubo's sharding threshold: 256 KiB (`Import.UnixFSHAMTDirectorySizeThreshold`).
pub const DEFAULT_SHARD_THRESHOLD: usize = 256 * 1024;

/// How a directory's size is measured against the sharding threshold (IPIP-499).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStrategy {
    /// Sum of name bytes plus CID bytes over all links (unixfs-v0-2015, kubo before IPIP-499).
    LinksBytes,
    /// The exact serialised size of the plain directory node (unixfs-v1-2025).
    BlockBytes,
}

/// Directory import settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirParams {
    pub cids: CidParams,
    /// A directory larger than this many bytes (by `strategy`) becomes a HAMT; `None` never shards.
    pub shard_threshold: Option<usize>,
    pub strategy: ShardStrategy,
}

/// Why an entry could not be added to a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("directory entry name {0:?} is empty, '.', '..' or contains '/'")]
    BadName(String),
    #[error("directory already has an entry named {0:?}")]
    Duplicate(String),
}

/// Collects a directory's entries, then encodes it.
#[derive(Debug, Default, Clone)]
pub struct DirectoryBuilder {
    entries: BTreeMap<String, Link>,
}

impl DirectoryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry.
    pub fn insert(&mut self, name: String, link: Link) -> Result<(), EntryError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(EntryError::BadName(name));
        }
        if self.entries.contains_key(&name) {
            return Err(EntryError::Duplicate(name));
        }
        self.entries.insert(name, link);
        Ok(())
    }

    /// Encodes the directory (and its shards, if it is large); returns the root link. `filesize` of a
    /// directory link is 0.
    pub fn finish(self, params: &DirParams, emit: &mut impl FnMut(Block)) -> Link {
        if self.should_shard(params) {
            let mut root = Shard::default();
            for (name, link) in self.entries {
                root.insert(0, name, link);
            }
            root.encode(params, emit)
        } else {
            let links: Vec<PbLink> = self.entries.iter().map(|(n, l)| PbLink::new(l.cid, n.clone(), l.tsize)).collect();
            let children: u64 = self.entries.values().map(|l| l.tsize).sum();
            let node = PbNode { links, data: Some(Data::directory().encode()) };
            let block = params.cids.block(dagpb::CODEC, node.encode());
            let link = Link { cid: block.cid, tsize: block.data.len() as u64 + children, filesize: 0 };
            emit(block);
            link
        }
    }

    fn should_shard(&self, params: &DirParams) -> bool {
        let Some(threshold) = params.shard_threshold else {
            return false;
        };
        let size: usize = match params.strategy {
            ShardStrategy::LinksBytes => self.entries.iter().map(|(n, l)| n.len() + l.cid.encoded_len()).sum(),
            ShardStrategy::BlockBytes => {
                // Data field: key + length + `08 01`.
                let data = 4;
                data + self.entries.iter().map(|(n, l)| link_size(n.len(), l.cid.encoded_len(), l.tsize)).sum::<usize>()
            }
        };
        size > threshold
    }
}

/// Serialised size of one PBNode link field.
fn link_size(name_len: usize, cid_len: usize, tsize: u64) -> usize {
    let vlen = |v: usize| crate::varint::encoded_len(v as u64);
    let inner = 1 + vlen(cid_len) + cid_len + 1 + vlen(name_len) + name_len + 1 + crate::varint::encoded_len(tsize);
    1 + vlen(inner) + inner
}

#[derive(Debug, Default)]
struct Shard {
    slots: BTreeMap<u8, Slot>,
}

#[derive(Debug)]
enum Slot {
    Entry(String, Link),
    Child(Box<Shard>),
}

impl Shard {
    fn insert(&mut self, depth: usize, name: String, link: Link) {
        let index = hamt_index(name.as_bytes(), depth);
        match self.slots.remove(&index) {
            None => {
                self.slots.insert(index, Slot::Entry(name, link));
            }
            Some(Slot::Entry(other_name, other_link)) => {
                let mut child = Shard::default();
                child.insert(depth + 1, other_name, other_link);
                child.insert(depth + 1, name, link);
                self.slots.insert(index, Slot::Child(Box::new(child)));
            }
            Some(Slot::Child(mut child)) => {
                child.insert(depth + 1, name, link);
                self.slots.insert(index, Slot::Child(child));
            }
        }
    }

    fn encode(self, params: &DirParams, emit: &mut impl FnMut(Block)) -> Link {
        let mut bitfield = [0u8; 32];
        let mut links = Vec::with_capacity(self.slots.len());
        let mut children = 0u64;
        for (index, slot) in self.slots {
            bitfield[31 - usize::from(index / 8)] |= 1 << (index % 8);
            let (name, link) = match slot {
                Slot::Entry(name, link) => (format!("{index:02X}{name}"), link),
                Slot::Child(child) => (format!("{index:02X}"), child.encode(params, emit)),
            };
            children += link.tsize;
            links.push(PbLink::new(link.cid, name, link.tsize));
        }
        // Big-endian bitmap with leading zero bytes dropped (go-bitfield's `Bytes`, and the JS importer's).
        let first = bitfield.iter().position(|&b| b != 0).unwrap_or(31);
        let mut data = Data::new(DataType::HamtShard);
        data.data = Some(bitfield[first..].to_vec());
        data.hash_type = Some(HAMT_HASH_MURMUR3);
        data.fanout = Some(HAMT_FANOUT);
        let node = PbNode { links, data: Some(data.encode()) };
        let block = params.cids.block(dagpb::CODEC, node.encode());
        let link = Link { cid: block.cid, tsize: block.data.len() as u64 + children, filesize: 0 };
        emit(block);
        link
    }
}

/// The slot of `name` at `depth` in a 256-way HAMT: byte `depth % 8` of murmur3-x64-64 over the name, with
/// the depth round appended to the name once the first 8 bytes are used up (the JS importer's rehashing).
pub fn hamt_index(name: &[u8], depth: usize) -> u8 {
    let round = depth / 8;
    let hash = if round == 0 {
        murmur3_x64_64(name)
    } else {
        let mut key = name.to_vec();
        key.push(u8::try_from(round).unwrap_or(u8::MAX));
        murmur3_x64_64(&key)
    };
    hash[depth % 8]
}

/// murmur3-x64-64: the first 64 bits (h1) of MurmurHash3 x64 128 with seed 0, big-endian, as go's
/// `murmur3.New64` and multiformats' `murmur3-x64-64` produce.
pub fn murmur3_x64_64(data: &[u8]) -> [u8; 8] {
    murmur3_x64_128(data, 0).0.to_be_bytes()
}

/// MurmurHash3 x64 128 (Austin Appleby's reference `MurmurHash3_x64_128`), returning (h1, h2).
pub fn murmur3_x64_128(data: &[u8], seed: u64) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1 = seed;
    let mut h2 = seed;
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut k1 = u64::from_le_bytes(block[..8].try_into().unwrap_or_default());
        let mut k2 = u64::from_le_bytes(block[8..].try_into().unwrap_or_default());
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(b) << (8 * i);
        } else {
            k2 |= u64::from(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x64_128 outputs (seed 0), from the reference implementation's users.
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
        assert_eq!(
            murmur3_x64_128(b"The quick brown fox jumps over the lazy dog", 0),
            (0xe34bbc7bbc071b6c, 0x7a433ca9c49a9347)
        );
    }

    #[test]
    fn rejects_bad_names() {
        let link = Link { cid: CidParams::V0.cid(dagpb::CODEC, b""), tsize: 0, filesize: 0 };
        let mut d = DirectoryBuilder::new();
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(d.insert(bad.into(), link), Err(EntryError::BadName(_))), "{bad:?}");
        }
        assert!(d.insert("a".into(), link).is_ok());
        assert_eq!(d.insert("a".into(), link), Err(EntryError::Duplicate("a".into())));
    }
}
