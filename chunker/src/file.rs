//! File DAGs: leaves from chunks, and the balanced and trickle layouts that link them, streaming.
//!
//! Making a leaf (`Leaves::make`) is pure and independent per chunk, so callers may hash leaves on several
//! threads; `FileBuilder::push` must then receive the leaves in file order. The builder holds only the open
//! right edge of the tree (at most `max_links` links per level), so memory is bounded by the tree's depth, not
//! the file's size. Both layouts reproduce go-unixfs (kubo) exactly:
//! - balanced: leaves fill a node of `max_links` links; a full tree gets a new root above it; a file of one
//!   chunk is that chunk alone;
//! - trickle: a node holds `max_links` leaves, then `layer_repeat` subtrees of each depth 1, 2, ... (below
//!   its own depth); even a file of one chunk gets a root node above its leaf.

use crate::block::{Block, CidParams, Link, RAW};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{Data, DataType};

/// How leaves are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// Raw blocks (codec 0x55): the chunk bytes themselves.
    Raw,
    /// dag-pb nodes with UnixFS type File (kubo's balanced default).
    File,
    /// dag-pb nodes with UnixFS type Raw (kubo's trickle default).
    UnixfsRaw,
}

/// The shape of the DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Balanced { max_links: usize },
    Trickle { max_links: usize, layer_repeat: usize },
}

/// kubo's trickle layer repeat (go-unixfs `depthRepeat`).
pub const TRICKLE_LAYER_REPEAT: usize = 4;

/// Everything that decides a file's blocks, apart from the chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParams {
    pub cids: CidParams,
    pub leaf: LeafKind,
    pub layout: Layout,
}

impl FileParams {
    /// Encodes one chunk as a leaf block.
    pub fn leaf(&self, chunk: Vec<u8>) -> (Block, Link) {
        match self.leaf {
            LeafKind::Raw => Self::link(chunk.len() as u64, self.cids.block(RAW, chunk)),
            LeafKind::File | LeafKind::UnixfsRaw => self.leaf_from_slice(&chunk),
        }
    }

    /// `leaf` for a chunk borrowed from a larger buffer: copied once, into the block (a dag-pb leaf is encoded
    /// straight from it, in one allocation).
    pub fn leaf_from_slice(&self, chunk: &[u8]) -> (Block, Link) {
        let (codec, frame) = self.frame(chunk.len());
        let data = [&frame.head[..], chunk, &frame.tail].concat();
        Self::link(chunk.len() as u64, self.cids.block(codec, data))
    }

    /// The codec of a leaf over `len` bytes, and the bytes around them (none for raw leaves).
    fn frame(&self, len: usize) -> (u64, LeafFrame) {
        match self.leaf {
            LeafKind::Raw => (RAW, LeafFrame { head: Vec::new(), tail: Vec::new() }),
            LeafKind::File => (dagpb::CODEC, leaf_frame(DataType::File, len)),
            LeafKind::UnixfsRaw => (dagpb::CODEC, leaf_frame(DataType::Raw, len)),
        }
    }

    /// A leaf over a chunk borrowed from a larger buffer, without copying the chunk: the block is
    /// `frame.head`, the chunk, then `frame.tail` (both empty for raw leaves). For stores that take a block
    /// in parts (`BlockStore::put_parts`).
    pub fn leaf_parts(&self, chunk: &[u8]) -> (LeafFrame, Link) {
        let (codec, frame) = self.frame(chunk.len());
        let cid = self.cids.cid_of_parts(codec, &[&frame.head, chunk, &frame.tail]);
        let tsize = (frame.head.len() + chunk.len() + frame.tail.len()) as u64;
        (frame, Link { cid, tsize, filesize: chunk.len() as u64 })
    }

    /// A leaf block holding `filesize` bytes of the file, with its link.
    fn link(filesize: u64, block: Block) -> (Block, Link) {
        let link = Link { cid: block.cid, tsize: block.data.len() as u64, filesize };
        (block, link)
    }

    /// Encodes an internal file node over `children`.
    fn node(&self, children: &[Link]) -> (Block, Link) {
        let mut data = Data::new(DataType::File);
        let filesize = children.iter().map(|c| c.filesize).sum();
        data.filesize = Some(filesize);
        data.blocksizes = children.iter().map(|c| c.filesize).collect();
        let links = children.iter().map(|c| PbLink::new(c.cid, "", c.tsize)).collect();
        let node = PbNode { links, data: Some(data.encode()) };
        let block = self.cids.block(dagpb::CODEC, node.encode());
        let tsize = block.data.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        let link = Link { cid: block.cid, tsize, filesize };
        (block, link)
    }
}

/// The bytes of a dag-pb leaf before and after its chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFrame {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

/// The frame of `PBNode { Data: UnixFS { Type: kind, Data: chunk, filesize } }` around a chunk of `len` bytes;
/// equal to encoding the two messages in turn.
fn leaf_frame(kind: DataType, len: usize) -> LeafFrame {
    use crate::varint::{encode, encoded_len};
    let len64 = len as u64;
    let data_field = if len == 0 { 0 } else { 1 + encoded_len(len64) + len };
    let inner = 2 + data_field + 1 + encoded_len(len64);
    let mut head = Vec::with_capacity(16);
    head.push(0x0a);
    encode(inner as u64, &mut head);
    head.push(0x08);
    head.push(kind as u8);
    if len > 0 {
        head.push(0x12);
        encode(len64, &mut head);
    }
    let mut tail = Vec::with_capacity(11);
    tail.push(0x18);
    encode(len64, &mut tail);
    LeafFrame { head, tail }
}

/// Builds one file's DAG from its leaves, in order.
#[derive(Debug)]
pub struct FileBuilder {
    params: FileParams,
    state: State,
}

#[derive(Debug)]
enum State {
    /// `levels[k]` holds the links of the open node at height k+1 (its children are at height k).
    Balanced { max_links: usize, levels: Vec<Vec<Link>> },
    /// The open path from the root (first) to the deepest open node (last).
    Trickle { max_links: usize, layer_repeat: usize, stack: Vec<TrickleNode> },
}

#[derive(Debug)]
struct TrickleNode {
    links: Vec<Link>,
    leaves: usize,
    /// Subtrees of depth < max_depth may hang below this node; `None` for the root (no limit).
    max_depth: Option<usize>,
    next_depth: usize,
    next_repeat: usize,
}

impl TrickleNode {
    fn new(max_depth: Option<usize>) -> Self {
        Self { links: Vec::new(), leaves: 0, max_depth, next_depth: 1, next_repeat: 0 }
    }
}

impl FileBuilder {
    /// Starts an empty file.
    pub fn new(params: FileParams) -> Self {
        let state = match params.layout {
            Layout::Balanced { max_links } => State::Balanced { max_links: max_links.max(2), levels: vec![Vec::new()] },
            Layout::Trickle { max_links, layer_repeat } => State::Trickle {
                max_links: max_links.max(2),
                layer_repeat: layer_repeat.max(1),
                stack: vec![TrickleNode::new(None)],
            },
        };
        Self { params, state }
    }

    /// Appends the next leaf; `emit` receives any internal node this completes.
    pub fn push(&mut self, leaf: Link, emit: &mut impl FnMut(Block)) {
        let params = self.params;
        match &mut self.state {
            State::Balanced { max_links, levels } => balanced_push(&params, *max_links, levels, 0, leaf, emit),
            State::Trickle { max_links, layer_repeat, stack } => {
                trickle_push(&params, *max_links, *layer_repeat, stack, leaf, emit)
            }
        }
    }

    /// Closes the file; returns the root's link. A file with no leaves is one empty leaf (balanced) or an
    /// empty file node (trickle), as kubo makes them.
    pub fn finish(self, emit: &mut impl FnMut(Block)) -> Link {
        let params = self.params;
        match self.state {
            State::Balanced { max_links, mut levels } => {
                if levels[0].is_empty() {
                    let (block, link) = params.leaf(Vec::new());
                    emit(block);
                    return link;
                }
                let mut k = 0;
                loop {
                    let top = k + 1 == levels.len();
                    if top && levels[k].len() == 1 {
                        return levels[k][0];
                    }
                    if !levels[k].is_empty() {
                        let children = std::mem::take(&mut levels[k]);
                        let (block, link) = params.node(&children);
                        emit(block);
                        balanced_push(&params, max_links, &mut levels, k + 1, link, emit);
                    }
                    k += 1;
                }
            }
            State::Trickle { mut stack, .. } => {
                while stack.len() > 1 {
                    trickle_close_top(&params, &mut stack, emit);
                }
                let root = stack.pop().unwrap_or_else(|| TrickleNode::new(None));
                let (block, link) = params.node(&root.links);
                emit(block);
                link
            }
        }
    }
}

fn balanced_push(
    params: &FileParams,
    max_links: usize,
    levels: &mut Vec<Vec<Link>>,
    level: usize,
    link: Link,
    emit: &mut impl FnMut(Block),
) {
    if levels.len() == level {
        levels.push(Vec::with_capacity(max_links));
    }
    if levels[level].len() == max_links {
        let children = std::mem::replace(&mut levels[level], Vec::with_capacity(max_links));
        let (block, parent) = params.node(&children);
        emit(block);
        balanced_push(params, max_links, levels, level + 1, parent, emit);
    }
    levels[level].push(link);
}

fn trickle_push(
    params: &FileParams,
    max_links: usize,
    layer_repeat: usize,
    stack: &mut Vec<TrickleNode>,
    leaf: Link,
    emit: &mut impl FnMut(Block),
) {
    loop {
        let Some(top) = stack.last_mut() else {
            debug_assert!(false, "trickle stack lost its root");
            stack.push(TrickleNode::new(None));
            continue;
        };
        if top.leaves < max_links {
            top.links.push(leaf);
            top.leaves += 1;
            return;
        }
        if top.max_depth.is_none_or(|m| top.next_depth < m) {
            let depth = top.next_depth;
            top.next_repeat += 1;
            if top.next_repeat == layer_repeat {
                top.next_repeat = 0;
                top.next_depth += 1;
            }
            stack.push(TrickleNode::new(Some(depth)));
            continue;
        }
        // This subtree is complete: close it into its parent, which places the leaf next.
        trickle_close_top(params, stack, emit);
    }
}

fn trickle_close_top(params: &FileParams, stack: &mut Vec<TrickleNode>, emit: &mut impl FnMut(Block)) {
    if stack.len() < 2 {
        return;
    }
    if let Some(node) = stack.pop() {
        let (block, link) = params.node(&node.links);
        emit(block);
        if let Some(parent) = stack.last_mut() {
            parent.links.push(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(params: FileParams, chunks: usize) -> (Link, Vec<Block>) {
        let mut blocks = Vec::new();
        let mut b = FileBuilder::new(params);
        for i in 0..chunks {
            let (block, link) = params.leaf(vec![(i % 251) as u8; 3]);
            blocks.push(block);
            b.push(link, &mut |blk| blocks.push(blk));
        }
        let root = b.finish(&mut |blk| blocks.push(blk));
        (root, blocks)
    }

    #[test]
    fn leaf_frame_equals_two_message_encoding() {
        for kind in [DataType::File, DataType::Raw] {
            for len in [0usize, 1, 127, 128, 300, 70_000] {
                let chunk = vec![7u8; len];
                let mut data = Data::new(kind);
                data.filesize = Some(len as u64);
                data.data = Some(chunk.clone());
                let node = PbNode { links: Vec::new(), data: Some(data.encode()) };
                let frame = leaf_frame(kind, len);
                assert_eq!([&frame.head[..], &chunk, &frame.tail].concat(), node.encode(), "{kind:?} {len}");
            }
        }
    }

    #[test]
    fn a_leaf_in_parts_is_the_same_block_as_a_leaf_joined() {
        use crate::hash::HashFunction;
        let v1 = |hash, inline_limit| CidParams { version: crate::CidVersion::V1, hash, inline_limit };
        let cids = [
            CidParams::V0,
            v1(HashFunction::Sha2_256, None),
            v1(HashFunction::Blake3, None),
            v1(HashFunction::Sha2_256, Some(32)),
        ];
        for cids in cids {
            for leaf in [LeafKind::Raw, LeafKind::File, LeafKind::UnixfsRaw] {
                let params = FileParams { cids, leaf, layout: Layout::Balanced { max_links: 174 } };
                for len in [0usize, 1, 20, 127, 128, 300, 262_144] {
                    let chunk: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                    let (block, link) = params.leaf_from_slice(&chunk);
                    let (frame, parts_link) = params.leaf_parts(&chunk);
                    assert_eq!(parts_link, link, "{cids:?} {leaf:?} {len}");
                    assert_eq!([&frame.head[..], &chunk, &frame.tail].concat(), block.data, "{cids:?} {leaf:?} {len}");
                }
            }
        }
    }

    #[test]
    fn balanced_tree_holds_every_byte() {
        let params = FileParams { cids: CidParams::V0, leaf: LeafKind::Raw, layout: Layout::Balanced { max_links: 3 } };
        for n in [0usize, 1, 2, 3, 4, 9, 10, 28] {
            let (root, blocks) = build(params, n);
            assert_eq!(root.filesize, 3 * n as u64, "{n} chunks");
            let total: u64 = blocks.iter().map(|b| b.data.len() as u64).sum();
            assert_eq!(root.tsize, total, "{n} chunks: tsize is the sum of all blocks");
        }
    }

    #[test]
    fn trickle_tree_holds_every_byte() {
        let params = FileParams {
            cids: CidParams::V0,
            leaf: LeafKind::UnixfsRaw,
            layout: Layout::Trickle { max_links: 2, layer_repeat: 2 },
        };
        for n in [0usize, 1, 2, 3, 5, 8, 20, 50] {
            let (root, blocks) = build(params, n);
            assert_eq!(root.filesize, 3 * n as u64, "{n} chunks");
            let total: u64 = blocks.iter().map(|b| b.data.len() as u64).sum();
            assert_eq!(root.tsize, total, "{n} chunks");
        }
    }
}
