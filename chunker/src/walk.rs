//! Reading UnixFS without I/O: what one block says and where a reader goes next.
//!
//! A reader (the CLI's `cat`, the gateway) fetches a block, asks [`UnixfsNode::decode`] what it is, and
//! follows the children it names; [`hamt_step`] does the same for one level of a HAMT directory lookup.
//! Nothing here trusts sizes or depths from the data: callers bound depth with [`MAX_DEPTH`] and
//! [`MAX_HAMT_DEPTH`], and file children carry the sizes their parent claims, checked for overflow.

use std::ops::Range;

use cid::Cid;

use crate::block::RAW;
use crate::dagpb::{self, PbLink, PbNodeRef};
use crate::dir::hamt_index;
use crate::unixfs::{DataRef, DataType, HAMT_HASH_MURMUR3};

/// File DAGs deeper than this are refused: balanced DAGs of any real file are under 10 levels, and trickle
/// DAGs grow one level per four layers, so 64 is beyond any file this side of exabytes.
pub const MAX_DEPTH: usize = 64;
/// A 256-way HAMT uses one level per byte of a 64-bit hash; a few more levels are allowed, no more.
pub const MAX_HAMT_DEPTH: usize = 32;

/// Why a block cannot be read as UnixFS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("codec {0:#x} is not UnixFS")]
    Codec(u64),
    #[error(transparent)]
    DagPb(#[from] dagpb::DecodeError),
    #[error("dag-pb node without UnixFS data")]
    NoData,
    #[error("{0} blocksizes for {1} links")]
    Blocksizes(usize, usize),
    #[error("HAMT with hash function {0:#x} (only murmur3-x64-64 is defined)")]
    HamtHash(u64),
    #[error("HAMT fanout {0} (only 256 is supported)")]
    HamtFanout(u64),
    #[error("HAMT link name {0:?} is not two hex digits and an optional entry name")]
    HamtLinkName(String),
}

/// A link of a directory: entry name, target and the cumulative size the directory records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub cid: Cid,
    pub tsize: Option<u64>,
}

/// What one block is, as far as a UnixFS reader cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixfsNode {
    /// File bytes: a raw block, or a dag-pb file node (its own bytes, then its children in order).
    File {
        /// Where this block's own file bytes sit inside the block.
        own: Range<usize>,
        /// Children and the number of file bytes under each, in file order.
        children: Vec<(Cid, u64)>,
        /// The file size the node claims (for a raw block, its length).
        filesize: u64,
    },
    /// A plain directory: its entries, in block order.
    Directory { entries: Vec<Entry> },
    /// One node of a HAMT-sharded directory: links named by a two-hex-digit bucket, followed by the entry name
    /// for leaves and nothing for sub-shards.
    HamtShard { links: Vec<PbLink> },
    /// A symbolic link and its target path.
    Symlink { target: Vec<u8> },
}

impl UnixfsNode {
    /// Decodes the block `data` stored under `cid`.
    pub fn decode(cid: &Cid, data: &[u8]) -> Result<Self, NodeError> {
        match cid.codec() {
            RAW => Ok(Self::File { own: 0..data.len(), children: Vec::new(), filesize: data.len() as u64 }),
            dagpb::CODEC => {
                let node = PbNodeRef::decode(data)?;
                let raw = node.data.ok_or(NodeError::NoData)?;
                let unixfs = DataRef::decode(raw)?;
                Self::from_parts(data, node.links, unixfs)
            }
            other => Err(NodeError::Codec(other)),
        }
    }

    fn from_parts(block: &[u8], links: Vec<PbLink>, data: DataRef<'_>) -> Result<Self, NodeError> {
        match data.kind {
            DataType::File | DataType::Raw => {
                if !links.is_empty() && data.blocksizes.len() != links.len() {
                    return Err(NodeError::Blocksizes(data.blocksizes.len(), links.len()));
                }
                let own = match data.data {
                    // The payload borrows from `block`, so its offset is a pointer difference.
                    Some(d) => {
                        let start = d.as_ptr().addr() - block.as_ptr().addr();
                        start..start + d.len()
                    }
                    None => 0..0,
                };
                let filesize = data.filesize.unwrap_or(own.len() as u64);
                let children = links.into_iter().map(|l| l.hash).zip(data.blocksizes).collect();
                Ok(Self::File { own, children, filesize })
            }
            DataType::Directory => {
                let entries = links
                    .into_iter()
                    .map(|l| Entry { name: l.name.unwrap_or_default(), cid: l.hash, tsize: l.tsize })
                    .collect();
                Ok(Self::Directory { entries })
            }
            DataType::HamtShard => {
                if let Some(hash) = data.hash_type.filter(|&h| h != HAMT_HASH_MURMUR3) {
                    return Err(NodeError::HamtHash(hash));
                }
                if let Some(fanout) = data.fanout.filter(|&f| f != 256) {
                    return Err(NodeError::HamtFanout(fanout));
                }
                Ok(Self::HamtShard { links })
            }
            DataType::Symlink => Ok(Self::Symlink { target: data.data.unwrap_or_default().to_vec() }),
            DataType::Metadata => Err(NodeError::Codec(dagpb::CODEC)),
        }
    }

    /// Whether this node is a directory (plain or a HAMT shard).
    pub fn is_directory(&self) -> bool {
        matches!(self, Self::Directory { .. } | Self::HamtShard { .. })
    }
}

/// Where one level of a HAMT lookup leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HamtStep {
    /// The entry itself.
    Found(Cid),
    /// A sub-shard to load and look in at the next depth.
    Descend(Cid),
    /// No such entry.
    Absent,
}

/// Looks for `name` among the links of a HAMT shard at `depth` (0 for the directory's root node).
pub fn hamt_step(links: &[PbLink], name: &str, depth: usize) -> HamtStep {
    let prefix = format!("{:02X}", hamt_index(name.as_bytes(), depth));
    let Some(link) = links.iter().find(|l| l.name.as_deref().is_some_and(|n| n.starts_with(&prefix))) else {
        return HamtStep::Absent;
    };
    match link.name.as_deref().map(|n| &n[2..]) {
        Some("") | None => HamtStep::Descend(link.hash),
        Some(entry) if entry == name => HamtStep::Found(link.hash),
        Some(_) => HamtStep::Absent,
    }
}

/// Splits a HAMT link into an entry (a leaf: bucket digits then the name) or `None` for a sub-shard.
pub fn hamt_entry(link: &PbLink) -> Result<Option<Entry>, NodeError> {
    let name = link.name.as_deref().unwrap_or("");
    let bucket_ok = name.len() >= 2 && name.is_char_boundary(2) && name[..2].bytes().all(|b| b.is_ascii_hexdigit());
    if !bucket_ok {
        return Err(NodeError::HamtLinkName(name.to_string()));
    }
    Ok((name.len() > 2).then(|| Entry { name: name[2..].to_string(), cid: link.hash, tsize: link.tsize }))
}

/// The part of `[at, at + len)` that falls in `[from, to)`, as offsets relative to `at`; `None` when the two
/// do not overlap.
pub fn clip(at: u64, len: usize, from: u64, to: u64) -> Option<(usize, usize)> {
    let end = at.saturating_add(len as u64);
    if end <= from || at >= to || len == 0 {
        return None;
    }
    let lo = usize::try_from(from.saturating_sub(at)).unwrap_or(len);
    let hi = usize::try_from(to.min(end) - at).unwrap_or(len);
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{CidParams, CidVersion};
    use crate::unixfs::Data;

    fn pb(data: Data, links: Vec<PbLink>) -> (Cid, Vec<u8>) {
        let bytes = dagpb::PbNode { links, data: Some(data.encode()) }.encode();
        let params = CidParams::V0;
        (params.cid(dagpb::CODEC, &bytes), bytes)
    }

    #[test]
    fn raw_block_is_a_whole_file() {
        let params = CidParams { version: CidVersion::V1, ..CidParams::V0 };
        let cid = params.cid(RAW, b"hello");
        let node = UnixfsNode::decode(&cid, b"hello").expect("test value");
        assert_eq!(node, UnixfsNode::File { own: 0..5, children: vec![], filesize: 5 });
    }

    #[test]
    fn file_node_points_at_its_payload_and_children() {
        let mut data = Data::new(DataType::File);
        data.data = Some(b"abc".to_vec());
        data.filesize = Some(10);
        data.blocksizes = vec![7];
        let params = CidParams { version: CidVersion::V1, ..CidParams::V0 };
        let child = params.cid(RAW, b"defghij");
        let (cid, bytes) = pb(data, vec![PbLink::new(child, "", 7)]);
        let UnixfsNode::File { own, children, filesize } = UnixfsNode::decode(&cid, &bytes).expect("test value") else {
            panic!("not a file")
        };
        assert_eq!(&bytes[own], b"abc");
        assert_eq!(children, vec![(child, 7)]);
        assert_eq!(filesize, 10);
    }

    #[test]
    fn mismatched_blocksizes_are_refused() {
        let params = CidParams { version: CidVersion::V1, ..CidParams::V0 };
        let child = params.cid(RAW, b"x");
        let (cid, bytes) = pb(Data::new(DataType::File), vec![PbLink::new(child, "", 1)]);
        assert_eq!(UnixfsNode::decode(&cid, &bytes), Err(NodeError::Blocksizes(0, 1)));
    }

    #[test]
    fn hamt_links_split_into_buckets_and_names() {
        let params = CidParams { version: CidVersion::V1, ..CidParams::V0 };
        let target = params.cid(RAW, b"x");
        let leaf = PbLink::new(target, "A7file.txt", 1);
        assert_eq!(hamt_entry(&leaf).expect("test value").map(|e| e.name), Some("file.txt".to_string()));
        assert_eq!(hamt_entry(&PbLink::new(target, "A7", 1)).expect("test value"), None);
        assert!(hamt_entry(&PbLink::new(target, "é", 1)).is_err());
        let bucket = format!("{:02X}", hamt_index(b"file.txt", 0));
        let links = vec![PbLink::new(target, format!("{bucket}file.txt"), 1)];
        assert_eq!(hamt_step(&links, "file.txt", 0), HamtStep::Found(target));
        assert_eq!(hamt_step(&links, "other", 0), HamtStep::Absent);
    }

    #[test]
    fn clip_keeps_only_the_overlap() {
        assert_eq!(clip(10, 10, 0, 100), Some((0, 10)));
        assert_eq!(clip(10, 10, 15, 17), Some((5, 7)));
        assert_eq!(clip(10, 10, 20, 30), None);
        assert_eq!(clip(10, 0, 0, 100), None);
    }
}
