//! Import recipes: the `add` options that turn a file's bytes into a given root CID, detected from the DAG.
//!
//! A renter erasure-codes a file that was added earlier with options nobody recorded. After a rebuild from
//! shards the bytes must import to the original CID again, so the upload manifest carries an
//! [`ImportRecipe`]. [`ImportRecipe::detect`] infers it from the root, the left edge and the root's links list
//! (a handful of blocks) and returns *a* recipe that reproduces the tree; where several do (a file of one
//! chunk fits any larger chunk size; a one-level tree fits any larger link count; a one-level trickle tree is
//! a balanced one), it picks the kubo default that fits. Detection is a heuristic over kubo-made trees:
//! callers confirm the recipe with [`RecipeHasher`] over the bytes before trusting it.
//!
//! Not supported: inlined (identity) blocks from `--inline`, and trickle trees with a layer repeat other than
//! kubo's 4. Both are refused or, when hidden off the left edge, caught by the re-hash.

use std::num::NonZeroUsize;

use cid::Cid;

use crate::block::{CidParams, CidVersion, RAW};
use crate::dagpb::{self, PbNodeRef};
use crate::dir::{DEFAULT_SHARD_THRESHOLD, DirParams, ShardStrategy};
use crate::file::{FileBuilder, FileParams, Layout, LeafKind, TRICKLE_LAYER_REPEAT};
use crate::hash::{self, HashFunction, IDENTITY, VerifyError};
use crate::import::{ChunkSize, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, MAX_CHUNK_SIZE, Params};
use crate::unixfs::{DataRef, DataType};
use crate::walk::MAX_DEPTH;

/// The largest links-per-node a recipe may name: a node of that many CIDv1 links stays under 1 MiB.
pub const MAX_RECIPE_LINKS: usize = 16_384;
/// The link count of the unixfs-v1-2025 profile, the second default a detected recipe may pick.
const V1_2025_MAX_LINKS: usize = 1024;

/// The tree shape of a recipe; trickle uses kubo's layer repeat of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeLayout {
    Balanced { max_links: usize },
    Trickle { max_links: usize },
}

impl RecipeLayout {
    /// The links per node.
    pub fn max_links(self) -> usize {
        match self {
            Self::Balanced { max_links } | Self::Trickle { max_links } => max_links,
        }
    }
}

/// The import options that reproduce a file's root CID from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportRecipe {
    pub cid_version: CidVersion,
    pub hash: HashFunction,
    pub leaf: LeafKind,
    pub chunk_size: ChunkSize,
    pub layout: RecipeLayout,
}

/// Why a recipe could not be detected, or is not a consistent set of options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    #[error("block {cid} is not available")]
    Missing { cid: Cid },
    #[error(transparent)]
    Corrupt(#[from] VerifyError),
    #[error("block {cid} is not valid dag-pb")]
    DagPb { cid: Cid, source: dagpb::DecodeError },
    #[error("storage upload takes a file: {cid} is a {kind}")]
    NotAFile { cid: Cid, kind: &'static str },
    #[error("block {cid} has an inline (identity) CID; files added with --inline are not supported")]
    Inline { cid: Cid },
    #[error("block {cid} uses multihash code {code:#x}, which this node cannot compute")]
    UnsupportedHash { cid: Cid, code: u64 },
    #[error("file {cid} has a shape kubo does not make: {reason}")]
    Shape { cid: Cid, reason: &'static str },
    #[error("file {cid} has chunks of {size} bytes (1 to {MAX_CHUNK_SIZE} supported)")]
    ChunkSize { cid: Cid, size: u64 },
    #[error("file {root} is deeper than {MAX_DEPTH} levels")]
    TooDeep { root: Cid },
    #[error("{max_links} links per node is outside 2 ..= {MAX_RECIPE_LINKS}")]
    MaxLinks { max_links: usize },
    #[error("CIDv0 only names sha2-256, not {hash}")]
    V0Hash { hash: HashFunction },
    #[error("import parameters with inlining or a trickle layer repeat other than 4 have no recipe")]
    NotARecipe,
}

impl ImportRecipe {
    /// Checks the options are consistent: CIDv0 with sha2-256 only, links per node in `2 ..= 16384`.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let max_links = self.layout.max_links();
        if !(2..=MAX_RECIPE_LINKS).contains(&max_links) {
            return Err(RecipeError::MaxLinks { max_links });
        }
        if self.cid_version == CidVersion::V0 && self.hash != HashFunction::Sha2_256 {
            return Err(RecipeError::V0Hash { hash: self.hash });
        }
        Ok(())
    }

    /// The file parameters the builders take.
    pub fn file_params(&self) -> FileParams {
        let layout = match self.layout {
            RecipeLayout::Balanced { max_links } => Layout::Balanced { max_links },
            RecipeLayout::Trickle { max_links } => Layout::Trickle { max_links, layer_repeat: TRICKLE_LAYER_REPEAT },
        };
        let cids = CidParams { version: self.cid_version, hash: self.hash, inline_limit: None };
        FileParams { cids, leaf: self.leaf, layout }
    }

    /// Full import parameters (directories get kubo's defaults; a recipe only ever imports one file).
    pub fn params(&self) -> Params {
        let file = self.file_params();
        let dir = DirParams {
            cids: file.cids,
            shard_threshold: Some(DEFAULT_SHARD_THRESHOLD),
            strategy: ShardStrategy::LinksBytes,
        };
        Params { chunk_size: self.chunk_size, file, dir }
    }

    /// The recipe of import parameters resolved from `add` options, if they have one.
    pub fn from_params(params: &Params) -> Result<Self, RecipeError> {
        let file = params.file;
        if file.cids.inline_limit.is_some() {
            return Err(RecipeError::NotARecipe);
        }
        let layout = match file.layout {
            Layout::Balanced { max_links } => RecipeLayout::Balanced { max_links },
            Layout::Trickle { max_links, layer_repeat: TRICKLE_LAYER_REPEAT } => RecipeLayout::Trickle { max_links },
            Layout::Trickle { .. } => return Err(RecipeError::NotARecipe),
        };
        let recipe = Self {
            cid_version: file.cids.version,
            hash: file.cids.hash,
            leaf: file.leaf,
            chunk_size: params.chunk_size,
            layout,
        };
        recipe.validate()?;
        Ok(recipe)
    }

    /// Infers a recipe that re-imports the file under `root` to `root`, fetching through `get` only the root,
    /// the blocks down its left edge, and for trickle trees a few of the root's children (a binary search
    /// for where its leaves end). Every fetched block is checked against its CID.
    pub fn detect(root: &Cid, get: &mut impl FnMut(&Cid) -> Option<Vec<u8>>) -> Result<Self, RecipeError> {
        let mut fetch = Fetcher { get, root: *root };
        if root.hash().code() == IDENTITY {
            return Err(RecipeError::Inline { cid: *root });
        }
        let hash = HashFunction::from_code(root.hash().code())
            .ok_or(RecipeError::UnsupportedHash { cid: *root, code: root.hash().code() })?;
        let cid_version = if root.version() == cid::Version::V0 { CidVersion::V0 } else { CidVersion::V1 };
        let top = fetch.node(root)?;
        let recipe = |leaf, chunk_size, layout| {
            let r = Self { cid_version, hash, leaf, chunk_size, layout };
            r.validate().map(|()| r)
        };
        if top.children.is_empty() {
            // The whole file is one leaf: balanced, any chunk size that holds it.
            let chunk = fit_chunk(root, top.filesize)?;
            return recipe(top.leaf_kind(), chunk, RecipeLayout::Balanced { max_links: DEFAULT_MAX_LINKS });
        }
        if top.own_len > 0 {
            return Err(RecipeError::Shape { cid: *root, reason: "the root holds bytes and links" });
        }
        let n = top.children.len();
        let (first_cid, first_size) = top.children[0];
        let first = fetch.child(&first_cid)?;
        if !first.children.is_empty() {
            // Balanced with two levels or more: every node down the left edge is full.
            let max_links = first.children.len();
            if n > max_links || n < 2 {
                return Err(RecipeError::Shape { cid: *root, reason: "a balanced root with a wrong number of links" });
            }
            let mut node = first;
            let mut depth = 1;
            loop {
                if node.children.len() != max_links {
                    return Err(RecipeError::Shape {
                        cid: *root,
                        reason: "a left-edge node of a balanced tree not full",
                    });
                }
                let (next_cid, next_size) = node.children[0];
                let next = fetch.child(&next_cid)?;
                if next.children.is_empty() {
                    let chunk = exact_chunk(&next_cid, next_size)?;
                    return recipe(next.leaf_kind(), chunk, RecipeLayout::Balanced { max_links });
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(RecipeError::TooDeep { root: *root });
                }
                node = next;
            }
        }
        let leaf = first.leaf_kind();
        if n == 1 {
            // A root above a single leaf: only trickle makes that.
            let chunk = fit_chunk(&first_cid, first_size)?;
            return recipe(leaf, chunk, RecipeLayout::Trickle { max_links: DEFAULT_MAX_LINKS });
        }
        let chunk = exact_chunk(&first_cid, first_size)?;
        // Leaves come first under a trickle root, then subtrees; find where the leaves end.
        let (mut lo, mut hi) = (1usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fetch.is_leaf(&top.children[mid].0)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == n {
            // One level of leaves: the same node under both layouts and any larger link count.
            let max_links = if n <= DEFAULT_MAX_LINKS {
                DEFAULT_MAX_LINKS
            } else if n <= V1_2025_MAX_LINKS {
                V1_2025_MAX_LINKS
            } else {
                n
            };
            return recipe(leaf, chunk, RecipeLayout::Balanced { max_links });
        }
        recipe(leaf, chunk, RecipeLayout::Trickle { max_links: lo })
    }
}

/// A single leaf of `size` bytes fits kubo's default chunk, or failing that the largest.
fn fit_chunk(cid: &Cid, size: u64) -> Result<ChunkSize, RecipeError> {
    let fit =
        if size <= DEFAULT_CHUNK_SIZE as u64 { DEFAULT_CHUNK_SIZE as u64 } else { size.max(MAX_CHUNK_SIZE as u64) };
    usize::try_from(fit).ok().and_then(ChunkSize::new).ok_or(RecipeError::ChunkSize { cid: *cid, size })
}

/// The first leaf of a file of several leaves is one full chunk.
fn exact_chunk(cid: &Cid, size: u64) -> Result<ChunkSize, RecipeError> {
    usize::try_from(size).ok().and_then(ChunkSize::new).ok_or(RecipeError::ChunkSize { cid: *cid, size })
}

/// A file node as detection sees it.
struct Inspected {
    /// `None` for a raw block.
    kind: Option<DataType>,
    children: Vec<(Cid, u64)>,
    own_len: usize,
    filesize: u64,
}

impl Inspected {
    fn leaf_kind(&self) -> LeafKind {
        match self.kind {
            None => LeafKind::Raw,
            Some(DataType::Raw) => LeafKind::UnixfsRaw,
            Some(_) => LeafKind::File,
        }
    }
}

struct Fetcher<'a, G> {
    get: &'a mut G,
    root: Cid,
}

impl<G: FnMut(&Cid) -> Option<Vec<u8>>> Fetcher<'_, G> {
    /// Whether `cid` is a leaf; raw blocks are without a fetch.
    fn is_leaf(&mut self, cid: &Cid) -> Result<bool, RecipeError> {
        if cid.codec() == RAW {
            return Ok(true);
        }
        Ok(self.node(cid)?.children.is_empty())
    }

    /// A child of a file node: leaves that are raw blocks are not fetched (their size is in the parent).
    fn child(&mut self, cid: &Cid) -> Result<Inspected, RecipeError> {
        if cid.codec() == RAW {
            if cid.hash().code() == IDENTITY {
                return Err(RecipeError::Inline { cid: *cid });
            }
            return Ok(Inspected { kind: None, children: Vec::new(), own_len: 0, filesize: 0 });
        }
        self.node(cid)
    }

    fn node(&mut self, cid: &Cid) -> Result<Inspected, RecipeError> {
        if cid.hash().code() == IDENTITY {
            return Err(RecipeError::Inline { cid: *cid });
        }
        let data = (self.get)(cid).ok_or(RecipeError::Missing { cid: *cid })?;
        hash::verify(cid, &data)?;
        match cid.codec() {
            RAW => {
                let len = data.len();
                Ok(Inspected { kind: None, children: Vec::new(), own_len: len, filesize: len as u64 })
            }
            dagpb::CODEC => {
                let node = PbNodeRef::decode(&data).map_err(|source| RecipeError::DagPb { cid: *cid, source })?;
                let raw = node.data.ok_or(RecipeError::Shape { cid: *cid, reason: "a dag-pb node without data" })?;
                let unixfs = DataRef::decode(raw).map_err(|source| RecipeError::DagPb { cid: *cid, source })?;
                let kind = match unixfs.kind {
                    DataType::File | DataType::Raw => unixfs.kind,
                    DataType::Directory => return Err(RecipeError::NotAFile { cid: *cid, kind: "directory" }),
                    DataType::HamtShard => return Err(RecipeError::NotAFile { cid: *cid, kind: "sharded directory" }),
                    DataType::Symlink => return Err(RecipeError::NotAFile { cid: *cid, kind: "symlink" }),
                    DataType::Metadata => return Err(RecipeError::NotAFile { cid: *cid, kind: "metadata node" }),
                };
                if node.links.len() != unixfs.blocksizes.len() {
                    return Err(RecipeError::Shape { cid: *cid, reason: "blocksizes do not match the links" });
                }
                let own_len = unixfs.data.map_or(0, <[u8]>::len);
                let filesize = unixfs.filesize.unwrap_or(own_len as u64);
                let children = node.links.iter().map(|l| l.hash).zip(unixfs.blocksizes).collect();
                Ok(Inspected { kind: Some(kind), children, own_len, filesize })
            }
            codec => Err(RecipeError::Shape {
                cid: if codec == self.root.codec() { self.root } else { *cid },
                reason: "a block that is neither raw nor dag-pb",
            }),
        }
    }
}

/// Re-imports a stream under a recipe and returns the root CID, keeping only one chunk and the tree's open
/// edge in memory; the blocks themselves are dropped. The renter checks a recipe with it while encoding, the
/// downloader checks a rebuilt file.
#[derive(Debug)]
pub struct RecipeHasher {
    params: FileParams,
    chunk: NonZeroUsize,
    buf: Vec<u8>,
    builder: FileBuilder,
}

impl RecipeHasher {
    pub fn new(recipe: &ImportRecipe) -> Self {
        let params = recipe.file_params();
        let chunk = NonZeroUsize::new(recipe.chunk_size.get()).unwrap_or(NonZeroUsize::MIN);
        Self { params, chunk, buf: Vec::with_capacity(chunk.get()), builder: FileBuilder::new(params) }
    }

    /// Feeds the next bytes of the file.
    pub fn push(&mut self, mut data: &[u8]) {
        let chunk = self.chunk.get();
        while !data.is_empty() {
            let take = (chunk - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == chunk {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(chunk));
                let (_, link) = self.params.leaf(full);
                self.builder.push(link, &mut |_| {});
            }
        }
    }

    /// The root CID of the bytes pushed.
    pub fn finish(mut self) -> Cid {
        if !self.buf.is_empty() {
            let (_, link) = self.params.leaf(std::mem::take(&mut self.buf));
            self.builder.push(link, &mut |_| {});
        }
        self.builder.finish(&mut |_| {}).cid
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::chunk::import_bytes;
    use crate::dir::DirectoryBuilder;
    use crate::import::{Options, Profile};

    use crate::testdata::bytes;

    /// Imports `data` under `opts`, detects the recipe, re-imports with it (builder and hasher): same CID.
    fn check(name: &str, opts: &Options, data: &[u8]) -> ImportRecipe {
        let params = opts.resolve().expect("valid options");
        let (root, blocks) = import_bytes(&params, data);
        let store: HashMap<Cid, Vec<u8>> = blocks.into_iter().map(|b| (b.cid, b.data)).collect();
        let mut fetched = 0usize;
        let mut get = |c: &Cid| {
            fetched += 1;
            store.get(c).cloned()
        };
        let recipe = ImportRecipe::detect(&root.cid, &mut get)
            .unwrap_or_else(|e| panic!("{name} len {}: detect failed: {e:#}", data.len()));
        assert!(fetched <= 2 * MAX_DEPTH, "{name}: detection fetched {fetched} blocks");
        let (again, _) = import_bytes(&recipe.params(), data);
        assert_eq!(again.cid, root.cid, "{name} len {}: recipe {recipe:?}", data.len());
        let mut hasher = RecipeHasher::new(&recipe);
        for part in data.chunks(777) {
            hasher.push(part);
        }
        assert_eq!(hasher.finish(), root.cid, "{name} len {}: hasher", data.len());
        recipe
    }

    fn opts(f: impl FnOnce(&mut Options)) -> Options {
        let mut o = Options::default();
        f(&mut o);
        o
    }

    #[test]
    fn detected_recipes_reproduce_every_kubo_option_set() {
        let sets: Vec<(&str, Options)> = vec![
            ("default", Options::default()),
            ("unixfs-v0-2015", opts(|o| o.profile = Some(Profile::UnixfsV0_2015))),
            ("unixfs-v1-2025", opts(|o| o.profile = Some(Profile::UnixfsV1_2025))),
            ("cid-version=1", opts(|o| o.cid_version = Some(1))),
            ("raw-leaves", opts(|o| o.raw_leaves = Some(true))),
            ("cid-version=1 raw-leaves=false", opts(|o| (o.cid_version, o.raw_leaves) = (Some(1), Some(false)))),
            ("trickle", opts(|o| o.trickle = true)),
            ("trickle raw-leaves", opts(|o| (o.trickle, o.raw_leaves) = (true, Some(true)))),
            ("trickle cid-version=1", opts(|o| (o.trickle, o.cid_version) = (true, Some(1)))),
            ("sha2-512", opts(|o| o.hash = Some(HashFunction::Sha2_512))),
            ("blake3 trickle", opts(|o| (o.hash, o.trickle) = (Some(HashFunction::Blake3), true))),
        ];
        let chunks = [1024usize, 256 * 1024, 1024 * 1024];
        let links = [None, Some(174usize), Some(1024), Some(11)];
        for (name, base) in &sets {
            for &chunk in &chunks {
                // The link count only shows in trees of many small chunks; large chunks keep the test fast.
                let links: &[Option<usize>] = if chunk == 1024 { &links } else { &[None] };
                for &max_links in links {
                    let mut o = base.clone();
                    if o.profile.is_none() || chunk != 1024 * 1024 {
                        o.chunk_size = ChunkSize::new(chunk);
                    }
                    o.max_links = max_links.or(o.max_links);
                    let c = o.resolve().expect("valid").chunk_size.get();
                    let l = o.resolve().map(|p| p.file.layout).expect("valid");
                    let l = match l {
                        Layout::Balanced { max_links } | Layout::Trickle { max_links, .. } => max_links,
                    };
                    let mut sizes = vec![0, 1, c - 1, c, c + 1, 3 * c + 5];
                    // Several levels where that stays small: two full levels and one more leaf.
                    if l * l * c <= 3 << 20 {
                        sizes.push(l * l * c + 1);
                    }
                    if l * c <= 3 << 20 {
                        sizes.extend([l * c, l * c + 1, 2 * c * l + 7]);
                    }
                    for (i, len) in sizes.into_iter().enumerate() {
                        let data = bytes(len, i as u64);
                        check(&format!("{name} chunk {c} links {l}"), &o, &data);
                    }
                }
            }
        }
    }

    #[test]
    fn detection_picks_the_exact_recipe_when_the_tree_shows_it() {
        let trickle = opts(|o| {
            o.trickle = true;
            o.chunk_size = ChunkSize::new(1024);
            o.max_links = Some(11);
        });
        let r = check("trickle", &trickle, &bytes(11 * 1024 * 9, 1));
        assert_eq!(r.layout, RecipeLayout::Trickle { max_links: 11 });
        assert_eq!(r.leaf, LeafKind::UnixfsRaw);
        assert_eq!(r.chunk_size.get(), 1024);
        let balanced = opts(|o| {
            o.cid_version = Some(1);
            o.chunk_size = ChunkSize::new(1024);
            o.max_links = Some(11);
        });
        let r = check("balanced", &balanced, &bytes(11 * 1024 * 3, 2));
        assert_eq!(r.layout, RecipeLayout::Balanced { max_links: 11 });
        assert_eq!((r.leaf, r.cid_version), (LeafKind::Raw, CidVersion::V1));
    }

    #[test]
    fn directories_and_symlinks_are_refused() {
        let params = Options::default().resolve().expect("valid");
        let mut dir = DirectoryBuilder::new();
        let (file, _) = import_bytes(&params, b"hello");
        dir.insert("a".into(), file).expect("insert");
        let mut blocks = Vec::new();
        let root = dir.finish(&params.dir, &mut |b| blocks.push(b));
        let store: HashMap<Cid, Vec<u8>> = blocks.into_iter().map(|b| (b.cid, b.data)).collect();
        let err = ImportRecipe::detect(&root.cid, &mut |c| store.get(c).cloned());
        assert_eq!(err, Err(RecipeError::NotAFile { cid: root.cid, kind: "directory" }));
        assert!(err.map_err(|e| e.to_string()).is_err_and(|m| m.starts_with("storage upload takes a file")));
    }

    #[test]
    fn inline_and_missing_blocks_are_refused() {
        let inline = opts(|o| o.inline = true).resolve().expect("valid");
        let (root, _) = import_bytes(&inline, b"tiny");
        assert_eq!(ImportRecipe::detect(&root.cid, &mut |_| None), Err(RecipeError::Inline { cid: root.cid }));
        assert_eq!(ImportRecipe::from_params(&inline), Err(RecipeError::NotARecipe));
        let params = Options::default().resolve().expect("valid");
        let (root, _) = import_bytes(&params, b"absent");
        assert_eq!(ImportRecipe::detect(&root.cid, &mut |_| None), Err(RecipeError::Missing { cid: root.cid }));
        assert_eq!(ImportRecipe::from_params(&params).map(|r| r.params()), Ok(params));
        // A peer answering with the wrong bytes is caught before they are read.
        let (root, _) = import_bytes(&params, &bytes(300_000, 3));
        let lie = ImportRecipe::detect(&root.cid, &mut |_| Some(b"not the block".to_vec()));
        assert_eq!(lie, Err(RecipeError::Corrupt(VerifyError::Mismatch { cid: root.cid })));
    }
}
