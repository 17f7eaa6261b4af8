//! The upload manifest: one dag-cbor block naming a file, its erasure code, its `k + m` shards and the import
//! recipe that turns the rebuilt bytes back into the file's CID.
//!
//! Encoding is hand-written canonical dag-cbor (the subset the manifest needs): definite-length maps with text
//! keys sorted length-first then bytewise, minimal-length unsigned integers, text strings, arrays, and CIDs as
//! tag 42 over a byte string holding `0x00` and the binary CID. The block is CIDv1 dag-cbor sha2-256.
//!
//! Decoding reads outside bytes (a manifest comes from a renter or a peer), so it is strict and bounded: at
//! most [`MAX_MANIFEST_SIZE`] bytes, exactly the known keys, exactly `k + m` shard CIDs, sizes consistent
//! with the erasure code, and the bytes must be the canonical encoding of what was read (checked by
//! re-encoding), so one manifest has exactly one block and one CID.
//!
//! ```text
//! { "file": CID, "fileSize": u64, "version": 1, "shards": [CID; k+m], "recipe": Recipe, "pieceSize": u64,
//!   "shardSize": u64, "dataShards": u64, "parityShards": u64 }
//! Recipe = { "hash": multihash code, "layout": "balanced" | "trickle", "leaves": "raw" | "file" | "unixfs-raw",
//!   "maxLinks": u64, "chunkSize": u64, "cidVersion": 0 | 1 }
//! ```

use cid::Cid;

use crate::block::{Block, CidParams, CidVersion, RAW};
use crate::dagpb;
use crate::erasure::{ErasureParams, MAX_SHARDS, ParamsError, SHARD_FILE};
use crate::file::LeafKind;
use crate::hash::HashFunction;
use crate::import::ChunkSize;
use crate::links::DAG_CBOR;
use crate::recipe::{ImportRecipe, RecipeError, RecipeLayout};

/// The manifest format this code writes and reads.
pub const MANIFEST_VERSION: u64 = 1;
/// The largest manifest accepted: 256 shard CIDs of 40 bytes are about 10 KiB, so 64 KiB leaves room and
/// no more.
pub const MAX_MANIFEST_SIZE: usize = 64 * 1024;
/// The largest binary CID accepted inside a manifest (a CIDv1 with a 64-byte digest is 68 bytes).
const MAX_CID_LEN: usize = 128;

/// What a renter publishes for one erasure-coded upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadManifest {
    /// The original file's root CID.
    pub file: Cid,
    pub file_size: u64,
    pub erasure: ErasureParams,
    /// The `k + m` shard roots, data shards first.
    pub shards: Vec<Cid>,
    /// Bytes of every shard: `stripes * piece_size`.
    pub shard_size: u64,
    pub recipe: ImportRecipe,
}

/// Why bytes are not a valid upload manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest of {size} bytes is larger than {MAX_MANIFEST_SIZE}")]
    TooLarge { size: usize },
    #[error("manifest is not valid dag-cbor: {reason} at byte {at}")]
    Cbor { at: usize, reason: &'static str },
    #[error("manifest key {key:?} is unknown")]
    UnknownKey { key: String },
    #[error("manifest key {key:?} appears twice")]
    DuplicateKey { key: &'static str },
    #[error("manifest key {key:?} is missing")]
    MissingKey { key: &'static str },
    #[error("manifest key {key:?} holds an invalid CID")]
    BadCid { key: &'static str },
    #[error("manifest key {key:?} holds {value:?}, which is not one of its values")]
    BadValue { key: &'static str, value: String },
    #[error("manifest version {version} is not supported (expected {MANIFEST_VERSION})")]
    Version { version: u64 },
    #[error("manifest erasure parameters: {0}")]
    Params(#[from] ParamsError),
    #[error("manifest lists {got} shards, the erasure code makes {expected}")]
    ShardCount { got: usize, expected: usize },
    #[error("manifest says shards are {got} bytes, the erasure code makes {expected:?}")]
    ShardSize { got: u64, expected: Option<u64> },
    #[error("shard {index} CID {cid} is not a CIDv1 blake3 raw or dag-pb CID (the shard format)")]
    ShardCid { index: usize, cid: Cid },
    #[error("manifest recipe: {0}")]
    Recipe(#[from] RecipeError),
    #[error("manifest recipe hashes with {recipe}, but file {file} does not")]
    RecipeHash { file: Cid, recipe: HashFunction },
    #[error("manifest recipe has a CID version that cannot make file {file}")]
    RecipeVersion { file: Cid },
    #[error("manifest is not in canonical dag-cbor form")]
    NotCanonical,
}

impl UploadManifest {
    /// The manifest of a finished encoding.
    pub fn new(
        file: Cid,
        recipe: ImportRecipe,
        erasure: ErasureParams,
        encoded: &crate::erasure::EncodedShards,
    ) -> Result<Self, ManifestError> {
        let manifest = Self {
            file,
            file_size: encoded.file_size,
            erasure,
            shards: encoded.shards.iter().map(|s| s.cid).collect(),
            shard_size: encoded.shards.first().map_or(0, |s| s.size),
            recipe,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the manifest is consistent: valid erasure code and recipe, `k + m` shard CIDs of the shard
    /// format, and the shard size the code makes for the file size.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.erasure.validate()?;
        self.recipe.validate()?;
        let expected = self.erasure.total_shards();
        if self.shards.len() != expected {
            return Err(ManifestError::ShardCount { got: self.shards.len(), expected });
        }
        let size = self.erasure.shard_size(self.file_size);
        if size != Some(self.shard_size) {
            return Err(ManifestError::ShardSize { got: self.shard_size, expected: size });
        }
        for (index, cid) in self.shards.iter().enumerate() {
            let shard_like = cid.version() == cid::Version::V1
                && cid.hash().code() == SHARD_FILE.cids.hash.code()
                && cid.hash().size() == 32
                && (cid.codec() == RAW || cid.codec() == dagpb::CODEC);
            if !shard_like {
                return Err(ManifestError::ShardCid { index, cid: *cid });
            }
        }
        if self.file.hash().code() != self.recipe.hash.code() {
            return Err(ManifestError::RecipeHash { file: self.file, recipe: self.recipe.hash });
        }
        // A CIDv0 recipe names a one-leaf file with raw leaves by a CIDv1 raw block; otherwise versions agree.
        let file_v0 = self.file.version() == cid::Version::V0;
        let recipe_v0 = self.recipe.cid_version == CidVersion::V0;
        if file_v0 != recipe_v0 && !(recipe_v0 && self.file.codec() == RAW) {
            return Err(ManifestError::RecipeVersion { file: self.file });
        }
        Ok(())
    }

    /// The canonical dag-cbor encoding.
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.recipe;
        let (layout, max_links) = match r.layout {
            RecipeLayout::Balanced { max_links } => ("balanced", max_links),
            RecipeLayout::Trickle { max_links } => ("trickle", max_links),
        };
        let mut recipe = Map::default();
        recipe.uint("cidVersion", if r.cid_version == CidVersion::V0 { 0 } else { 1 });
        recipe.uint("hash", r.hash.code());
        recipe.text("leaves", leaf_name(r.leaf));
        recipe.uint("chunkSize", r.chunk_size.get() as u64);
        recipe.text("layout", layout);
        recipe.uint("maxLinks", max_links as u64);
        let mut shards = Vec::with_capacity(self.shards.len() * 40 + 3);
        head(&mut shards, 4, self.shards.len() as u64);
        for cid in &self.shards {
            put_cid(&mut shards, cid);
        }
        let mut top = Map::default();
        top.cid("file", &self.file);
        top.uint("fileSize", self.file_size);
        top.uint("dataShards", self.erasure.data_shards as u64);
        top.uint("parityShards", self.erasure.parity_shards as u64);
        top.uint("pieceSize", self.erasure.piece_size as u64);
        top.raw("shards", shards);
        top.uint("shardSize", self.shard_size);
        top.raw("recipe", recipe.finish());
        top.uint("version", MANIFEST_VERSION);
        top.finish()
    }

    /// The manifest as a block: CIDv1, dag-cbor, sha2-256.
    pub fn to_block(&self) -> Block {
        let cids = CidParams { version: CidVersion::V1, hash: HashFunction::Sha2_256, inline_limit: None };
        cids.block(DAG_CBOR, self.encode())
    }

    /// Parses and validates a manifest block's bytes.
    pub fn from_block(data: &[u8]) -> Result<Self, ManifestError> {
        if data.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge { size: data.len() });
        }
        let mut d = Decoder { data, pos: 0 };
        let manifest = d.manifest()?;
        if d.pos != data.len() {
            return Err(ManifestError::Cbor { at: d.pos, reason: "bytes after the manifest" });
        }
        manifest.validate()?;
        if manifest.encode() != data {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }
}

fn leaf_name(leaf: LeafKind) -> &'static str {
    match leaf {
        LeafKind::Raw => "raw",
        LeafKind::File => "file",
        LeafKind::UnixfsRaw => "unixfs-raw",
    }
}

/// Writes a CBOR head: major type and argument in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Tag 42 over a byte string of the multibase identity prefix (0x00) and the binary CID.
fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    head(out, 6, 42);
    head(out, 2, bytes.len() as u64 + 1);
    out.push(0);
    out.extend_from_slice(&bytes);
}

/// A map being written; `finish` sorts the keys as dag-cbor requires (length first, then bytewise).
#[derive(Default)]
struct Map {
    entries: Vec<(&'static str, Vec<u8>)>,
}

impl Map {
    fn raw(&mut self, key: &'static str, value: Vec<u8>) {
        self.entries.push((key, value));
    }

    fn uint(&mut self, key: &'static str, v: u64) {
        let mut out = Vec::with_capacity(9);
        head(&mut out, 0, v);
        self.raw(key, out);
    }

    fn text(&mut self, key: &'static str, s: &str) {
        let mut out = Vec::with_capacity(s.len() + 1);
        put_text(&mut out, s);
        self.raw(key, out);
    }

    fn cid(&mut self, key: &'static str, cid: &Cid) {
        let mut out = Vec::with_capacity(48);
        put_cid(&mut out, cid);
        self.raw(key, out);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
        let mut out = Vec::new();
        head(&mut out, 5, self.entries.len() as u64);
        for (key, value) in self.entries {
            put_text(&mut out, key);
            out.extend_from_slice(&value);
        }
        out
    }
}

/// Reads the manifest schema off dag-cbor bytes; every length is checked against the bytes left before use.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

const TOP_KEYS: [&str; 9] =
    ["file", "fileSize", "version", "shards", "recipe", "pieceSize", "shardSize", "dataShards", "parityShards"];
const RECIPE_KEYS: [&str; 6] = ["hash", "layout", "leaves", "maxLinks", "chunkSize", "cidVersion"];

impl<'a> Decoder<'a> {
    fn bad(&self, reason: &'static str) -> ManifestError {
        ManifestError::Cbor { at: self.pos, reason }
    }

    fn byte(&mut self) -> Result<u8, ManifestError> {
        let b = *self.data.get(self.pos).ok_or_else(|| self.bad("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], ManifestError> {
        let left = (self.data.len() - self.pos) as u64;
        if len > left {
            return Err(self.bad("length runs past the end"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.data[start..self.pos])
    }

    /// A head of major type `major`; indefinite lengths and reserved forms are refused.
    fn head(&mut self, major: u8, what: &'static str) -> Result<u64, ManifestError> {
        let at = self.pos;
        let b = self.byte()?;
        if b >> 5 != major {
            return Err(ManifestError::Cbor { at, reason: what });
        }
        let n = match b & 0x1f {
            small @ 0..=23 => u64::from(small),
            24 => u64::from(self.byte()?),
            25 => self.take(2)?.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)),
            26 => self.take(4)?.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)),
            27 => self.take(8)?.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)),
            _ => return Err(ManifestError::Cbor { at, reason: "indefinite or reserved length" }),
        };
        Ok(n)
    }

    fn uint(&mut self) -> Result<u64, ManifestError> {
        self.head(0, "expected an unsigned integer")
    }

    fn text(&mut self) -> Result<&'a str, ManifestError> {
        let len = self.head(3, "expected a text string")?;
        let at = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| ManifestError::Cbor { at, reason: "text is not UTF-8" })
    }

    fn cid(&mut self, key: &'static str) -> Result<Cid, ManifestError> {
        let tag = self.head(6, "expected a tag")?;
        if tag != 42 {
            return Err(self.bad("expected tag 42 (a CID)"));
        }
        let len = self.head(2, "expected a byte string")?;
        if len as usize > MAX_CID_LEN + 1 {
            return Err(ManifestError::BadCid { key });
        }
        let bytes = self.take(len)?;
        let Some((0, binary)) = bytes.split_first() else { return Err(ManifestError::BadCid { key }) };
        let cid = Cid::try_from(binary).map_err(|_| ManifestError::BadCid { key })?;
        Ok(cid)
    }

    fn usize(&mut self) -> Result<usize, ManifestError> {
        let at = self.pos;
        let v = self.uint()?;
        usize::try_from(v).map_err(|_| ManifestError::Cbor { at, reason: "integer too large" })
    }

    /// A map's length (bounded by `keys`) and, per entry, the index of its known key.
    fn map_keys(&mut self, keys: &[&'static str]) -> Result<usize, ManifestError> {
        let at = self.pos;
        let n = self.head(5, "expected a map")?;
        if n > keys.len() as u64 {
            return Err(ManifestError::Cbor { at, reason: "map has more entries than keys exist" });
        }
        Ok(n as usize)
    }

    fn key(&mut self, keys: &[&'static str], seen: &mut [bool]) -> Result<usize, ManifestError> {
        let key = self.text()?;
        let index = keys.iter().position(|k| *k == key).ok_or_else(|| ManifestError::UnknownKey { key: key.into() })?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(ManifestError::DuplicateKey { key: keys[index] });
        }
        Ok(index)
    }

    fn manifest(&mut self) -> Result<UploadManifest, ManifestError> {
        let n = self.map_keys(&TOP_KEYS)?;
        let mut seen = [false; TOP_KEYS.len()];
        let (mut file, mut file_size, mut version, mut shards, mut recipe) = (None, None, None, None, None);
        let (mut piece, mut shard_size, mut data_shards, mut parity_shards) = (None, None, None, None);
        for _ in 0..n {
            match TOP_KEYS[self.key(&TOP_KEYS, &mut seen)?] {
                "file" => file = Some(self.cid("file")?),
                "fileSize" => file_size = Some(self.uint()?),
                "version" => version = Some(self.uint()?),
                "shards" => {
                    let at = self.pos;
                    let count = self.head(4, "expected an array")?;
                    if count > MAX_SHARDS as u64 {
                        return Err(ManifestError::Cbor { at, reason: "more than 256 shards" });
                    }
                    let list = (0..count).map(|_| self.cid("shards")).collect::<Result<Vec<_>, _>>()?;
                    shards = Some(list);
                }
                "recipe" => recipe = Some(self.recipe()?),
                "pieceSize" => piece = Some(self.usize()?),
                "shardSize" => shard_size = Some(self.uint()?),
                "dataShards" => data_shards = Some(self.usize()?),
                _ => parity_shards = Some(self.usize()?),
            }
        }
        let version = version.ok_or(ManifestError::MissingKey { key: "version" })?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version { version });
        }
        Ok(UploadManifest {
            file: file.ok_or(ManifestError::MissingKey { key: "file" })?,
            file_size: file_size.ok_or(ManifestError::MissingKey { key: "fileSize" })?,
            erasure: ErasureParams {
                data_shards: data_shards.ok_or(ManifestError::MissingKey { key: "dataShards" })?,
                parity_shards: parity_shards.ok_or(ManifestError::MissingKey { key: "parityShards" })?,
                piece_size: piece.ok_or(ManifestError::MissingKey { key: "pieceSize" })?,
            },
            shards: shards.ok_or(ManifestError::MissingKey { key: "shards" })?,
            shard_size: shard_size.ok_or(ManifestError::MissingKey { key: "shardSize" })?,
            recipe: recipe.ok_or(ManifestError::MissingKey { key: "recipe" })?,
        })
    }

    fn recipe(&mut self) -> Result<ImportRecipe, ManifestError> {
        let n = self.map_keys(&RECIPE_KEYS)?;
        let mut seen = [false; RECIPE_KEYS.len()];
        let (mut hash, mut layout, mut leaves, mut max_links, mut chunk, mut version) =
            (None, None, None, None, None, None);
        for _ in 0..n {
            match RECIPE_KEYS[self.key(&RECIPE_KEYS, &mut seen)?] {
                "hash" => hash = Some(self.uint()?),
                "layout" => layout = Some(self.text()?),
                "leaves" => leaves = Some(self.text()?),
                "maxLinks" => max_links = Some(self.usize()?),
                "chunkSize" => chunk = Some(self.usize()?),
                _ => version = Some(self.uint()?),
            }
        }
        let bad = |key: &'static str, value: String| ManifestError::BadValue { key, value };
        let hash = hash.ok_or(ManifestError::MissingKey { key: "hash" })?;
        let hash = HashFunction::from_code(hash).ok_or_else(|| bad("hash", format!("{hash:#x}")))?;
        let max_links = max_links.ok_or(ManifestError::MissingKey { key: "maxLinks" })?;
        let layout = match layout.ok_or(ManifestError::MissingKey { key: "layout" })? {
            "balanced" => RecipeLayout::Balanced { max_links },
            "trickle" => RecipeLayout::Trickle { max_links },
            other => return Err(bad("layout", other.into())),
        };
        let leaf = match leaves.ok_or(ManifestError::MissingKey { key: "leaves" })? {
            "raw" => LeafKind::Raw,
            "file" => LeafKind::File,
            "unixfs-raw" => LeafKind::UnixfsRaw,
            other => return Err(bad("leaves", other.into())),
        };
        let chunk = chunk.ok_or(ManifestError::MissingKey { key: "chunkSize" })?;
        let chunk_size = ChunkSize::new(chunk).ok_or_else(|| bad("chunkSize", chunk.to_string()))?;
        let cid_version = match version.ok_or(ManifestError::MissingKey { key: "cidVersion" })? {
            0 => CidVersion::V0,
            1 => CidVersion::V1,
            other => return Err(bad("cidVersion", other.to_string())),
        };
        Ok(ImportRecipe { cid_version, hash, leaf, chunk_size, layout })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::links::{PathStep, links, resolve_in_block};

    fn sha_cid(codec: u64, seed: u64) -> Cid {
        Cid::new_v1(codec, HashFunction::Sha2_256.digest(&seed.to_le_bytes()))
    }

    fn shard_cid(codec: u64, seed: u64) -> Cid {
        Cid::new_v1(codec, HashFunction::Blake3.digest(&seed.to_le_bytes()))
    }

    fn sample(k: usize, m: usize, piece: usize, file_size: u64) -> UploadManifest {
        let erasure = ErasureParams { data_shards: k, parity_shards: m, piece_size: piece };
        UploadManifest {
            file: Cid::new_v0(HashFunction::Sha2_256.digest(b"file")).expect("sha2-256 makes a v0 cid"),
            file_size,
            erasure,
            shards: (0..k + m).map(|i| shard_cid(dagpb::CODEC, i as u64)).collect(),
            shard_size: erasure.shard_size(file_size).expect("small"),
            recipe: ImportRecipe {
                cid_version: CidVersion::V0,
                hash: HashFunction::Sha2_256,
                leaf: LeafKind::File,
                chunk_size: ChunkSize::new(256 * 1024).expect("valid"),
                layout: RecipeLayout::Balanced { max_links: 174 },
            },
        }
    }

    #[test]
    fn a_generic_dag_cbor_reader_sees_the_links_and_keys() {
        let m = sample(3, 2, 1024, 10_000);
        let block = m.to_block();
        assert_eq!(block.cid.codec(), DAG_CBOR);
        // The crate's generic dag-cbor reader (links.rs, written for the gateway) is the outside reference.
        let mut expected = vec![m.file];
        expected.extend(&m.shards);
        let mut found = links(&block.cid, &block.data).expect("valid dag-cbor");
        found.sort();
        expected.sort();
        assert_eq!(found, expected);
        let path = |p: &[&str]| {
            let segments: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            resolve_in_block(&block.cid, &block.data, &segments).expect("resolve")
        };
        assert_eq!(path(&["file"]), PathStep::Link { cid: m.file, consumed: 1 });
        assert_eq!(path(&["shards", "4"]), PathStep::Link { cid: m.shards[4], consumed: 2 });
        assert_eq!(path(&["recipe", "layout"]), PathStep::Value);
        assert_eq!(path(&["recipe", "nope"]), PathStep::Missing { index: 1 });
        // Canonical key order, length first: "file" (4 bytes) is the first key, "parityShards" (12) the last.
        assert_eq!(&block.data[..6], &[0xa9, 0x64, b'f', b'i', b'l', b'e']);
        assert_eq!(UploadManifest::from_block(&block.data), Ok(m));
    }

    #[test]
    fn hostile_manifests_are_refused_by_name() {
        let m = sample(3, 2, 1024, 10_000);
        let mut wrong_count = m.clone();
        wrong_count.shards.pop();
        assert_eq!(
            UploadManifest::from_block(&wrong_count.encode()),
            Err(ManifestError::ShardCount { got: 4, expected: 5 })
        );
        let mut wrong_size = m.clone();
        wrong_size.shard_size += 1;
        assert_eq!(
            UploadManifest::from_block(&wrong_size.encode()),
            Err(ManifestError::ShardSize { got: wrong_size.shard_size, expected: Some(m.shard_size) })
        );
        let mut inline_shard = m.clone();
        let id = Cid::new_v1(RAW, crate::hash::identity(b"x").expect("small"));
        inline_shard.shards[2] = id;
        assert_eq!(
            UploadManifest::from_block(&inline_shard.encode()),
            Err(ManifestError::ShardCid { index: 2, cid: id })
        );
        let mut wrong_version = m.clone();
        wrong_version.file = sha_cid(dagpb::CODEC, 1);
        assert_eq!(
            UploadManifest::from_block(&wrong_version.encode()),
            Err(ManifestError::RecipeVersion { file: wrong_version.file })
        );
        let mut bad_params = m.clone();
        bad_params.erasure.piece_size = 1000;
        assert_eq!(
            UploadManifest::from_block(&bad_params.encode()),
            Err(ManifestError::Params(ParamsError::PieceSize { size: 1000 }))
        );
        let mut data = m.encode();
        data.push(0);
        assert!(matches!(UploadManifest::from_block(&data), Err(ManifestError::Cbor { .. })));
        assert_eq!(
            UploadManifest::from_block(&vec![0; MAX_MANIFEST_SIZE + 1]),
            Err(ManifestError::TooLarge { size: MAX_MANIFEST_SIZE + 1 })
        );
        // A non-minimal integer (fileSize 10000 as an 8-byte argument) reads fine but is not canonical.
        let good = m.encode();
        let at = good.windows(9).position(|w| w == b"\x68fileSize").expect("key") + 9;
        let mut long = good[..at].to_vec();
        long.push(0x1b);
        long.extend_from_slice(&10_000u64.to_be_bytes());
        long.extend_from_slice(&good[at + 3..]);
        assert_eq!(UploadManifest::from_block(&long), Err(ManifestError::NotCanonical));
        // An unknown key in place of a known one of the same length.
        let renamed: Vec<u8> = {
            let mut d = good.clone();
            let at = d.windows(5).position(|w| w == b"\x64file").expect("key");
            d[at + 1..at + 5].copy_from_slice(b"fila");
            d
        };
        assert_eq!(UploadManifest::from_block(&renamed), Err(ManifestError::UnknownKey { key: "fila".into() }));
    }

    fn arb_recipe() -> impl Strategy<Value = ImportRecipe> {
        (any::<bool>(), 0usize..3, 1usize..=1 << 20, any::<bool>(), 2usize..=2000).prop_map(
            |(v1, leaf, chunk, trickle, max_links)| ImportRecipe {
                cid_version: if v1 { CidVersion::V1 } else { CidVersion::V0 },
                hash: HashFunction::Sha2_256,
                leaf: [LeafKind::Raw, LeafKind::File, LeafKind::UnixfsRaw][leaf],
                chunk_size: ChunkSize::new(chunk).expect("in range"),
                layout: if trickle {
                    RecipeLayout::Trickle { max_links }
                } else {
                    RecipeLayout::Balanced { max_links }
                },
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn manifests_round_trip(
            k in 1usize..40,
            m in 1usize..40,
            piece in 1usize..=16_384,
            file_size in any::<u64>(),
            raw_shards in any::<bool>(),
            recipe in arb_recipe(),
        ) {
            let erasure = ErasureParams { data_shards: k, parity_shards: m, piece_size: piece * 64 };
            let file_size = file_size >> 8;
            let codec = if raw_shards { RAW } else { dagpb::CODEC };
            let file = if recipe.cid_version == CidVersion::V0 {
                Cid::new_v0(HashFunction::Sha2_256.digest(b"file")).expect("sha2-256 makes a v0 cid")
            } else {
                sha_cid(dagpb::CODEC, 7)
            };
            let manifest = UploadManifest {
                file,
                file_size,
                erasure,
                shards: (0..k + m).map(|i| shard_cid(codec, i as u64)).collect(),
                shard_size: erasure.shard_size(file_size).expect("fits"),
                recipe,
            };
            let block = manifest.to_block();
            prop_assert_eq!(UploadManifest::from_block(&block.data), Ok(manifest));
        }

        #[test]
        fn mutated_manifests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut data = sample(10, 20, 256 * 1024, 1 << 30).encode();
            for (at, value) in flips {
                let i = at % data.len();
                data[i] = value;
            }
            let _ = UploadManifest::from_block(&data);
            let cut = data.len() / 2;
            let _ = UploadManifest::from_block(&data[..cut]);
        }
    }
}
