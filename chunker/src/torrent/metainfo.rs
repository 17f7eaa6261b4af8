//! BitTorrent metainfo: .torrent files (BEP 3), v2 and hybrid info dicts (BEP 52), padding files and file
//! attributes (BEP 47), multiple trackers (BEP 12) and web seeds (BEP 19); and the parts of a new v1 torrent.
//!
//! Parsing reads outside bytes, so it refuses rather than guesses. The info dict is kept as the exact bytes
//! it arrived as: the v1 infohash is the SHA-1 of those bytes and the v2 infohash their SHA-256, never of a
//! re-encoding. Every file path is checked before anyone can join it onto a directory: no empty, `.` or `..`
//! component, no `/`, `\` or NUL inside one, no drive-like `C:` component, no path listed twice and no file that
//! is also another file's directory. Names and paths must be UTF-8 (`name.utf-8` and `path.utf-8` win when
//! present). The pieces must be exactly as many as the total length needs.
//!
//! Piece lengths must be powers of two from 16 KiB to 64 MiB. BEP 52 requires this of v2; for v1 (where BEP 3
//! only says powers of two are conventional) it refuses a few very old torrents with 1 or 8 KiB pieces and
//! odd-sized ones, which nothing current makes (mktorrent's smallest is 32 KiB, libtorrent's 16 KiB).
//!
//! File paths are relative to the download directory, as libtorrent's `file_storage` gives them: `[name]` for
//! a single-file torrent, `[name, dir..., file]` for a multi-file one. A v2-only torrent is parsed (name, files,
//! lengths, infohash) and marked [`Version::V2Only`] so a caller that only speaks v1 can refuse it by name.

use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::bencode::{self, BencodeError, DictBuilder, Value};
use super::to_hex;

/// BEP 52's smallest piece; applied to v1 too (see the module comment).
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;
/// The largest piece accepted: a peer must hold a whole piece in memory to check it, and no common client
/// makes larger ones by default.
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;
/// The most files one torrent may list, padding files included.
pub const MAX_FILES: usize = 1_000_000;
/// The most components one file path may have.
pub const MAX_PATH_DEPTH: usize = 128;
/// The most v1 pieces: libtorrent's `load_torrent_limits::max_pieces`.
pub const MAX_PIECES: usize = 0x20_0000;

/// A validated piece length: a power of two from [`MIN_PIECE_LENGTH`] to [`MAX_PIECE_LENGTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceLength(u64);

/// Why a number is not a [`PieceLength`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("piece length {length} {reason}")]
pub struct PieceLengthError {
    pub length: u64,
    pub reason: &'static str,
}

impl PieceLength {
    pub fn new(length: u64) -> Result<Self, PieceLengthError> {
        let reason = if length == 0 {
            "is zero"
        } else if !length.is_power_of_two() {
            "is not a power of two"
        } else if length < MIN_PIECE_LENGTH {
            "is below 16 KiB (BEP 52's minimum, applied to v1 torrents too)"
        } else if length > MAX_PIECE_LENGTH {
            "is above 64 MiB, the largest accepted"
        } else {
            return Ok(Self(length));
        };
        Err(PieceLengthError { length, reason })
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// How many pieces `total` bytes fill.
    pub fn pieces_for(self, total: u64) -> u64 {
        total.div_ceil(self.0)
    }

    fn as_i64(self) -> i64 {
        // At most 64 MiB, far inside i64.
        self.0 as i64
    }
}

/// Which hashes and file layouts an info dict carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// BEP 3 only: `pieces` and `length` or `files`.
    V1,
    /// BEP 52 hybrid: v1 `pieces` and `files`, and a v2 `file tree`, describing the same files.
    Hybrid,
    /// BEP 52 only: a `file tree` and no v1 pieces. Parsed so callers can name it when they refuse it.
    V2Only,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::Hybrid => "hybrid",
            Version::V2Only => "v2",
        }
    }
}

/// BEP 47 attributes other than padding (which is [`FileEntry::padding`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileAttr {
    /// `x`
    pub executable: bool,
    /// `h`
    pub hidden: bool,
    /// `l`: the torrent says this is a symlink; its target (`symlink path`) is not read here.
    pub symlink: bool,
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Components relative to the download directory: `[name]` or `[name, dir..., file]`; each checked.
    pub path: Vec<String>,
    pub length: u64,
    /// Where the file starts in the v1 piece stream (padding included). For a v2-only torrent, where each file
    /// has its own pieces, where it would start with every file padded to a piece (as libtorrent lays it out).
    pub offset: u64,
    /// A BEP 47 padding file (`attr` holds `p`, or libtorrent's legacy `.pad/` directory, or BitComet's
    /// `_____padding_file_` name): zeros that are never written to disk.
    pub padding: bool,
    pub attr: FileAttr,
    /// The v2 merkle root of the file's pieces (v2 and hybrid torrents, files longer than zero).
    pub pieces_root: Option<[u8; 32]>,
}

impl FileEntry {
    /// The path joined with `/`.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

/// A parsed, validated info dict: what a swarm agrees on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The info dict exactly as it arrived: what the infohashes are taken over and what ut_metadata serves.
    pub info_bytes: Vec<u8>,
    /// SHA-1 of `info_bytes` (v1 and hybrid).
    pub info_hash_v1: Option<[u8; 20]>,
    /// SHA-256 of `info_bytes` (hybrid and v2).
    pub info_hash_v2: Option<[u8; 32]>,
    pub version: Version,
    pub name: String,
    pub piece_length: PieceLength,
    /// The v1 piece hashes (empty for v2-only).
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// The sum of every file's length, padding included.
    pub total_length: u64,
    /// BEP 27: peers only from the torrent's trackers.
    pub private: bool,
}

impl Info {
    /// The number of pieces: v1 pieces, or for v2-only the sum of each file's own pieces.
    pub fn piece_count(&self) -> u64 {
        match self.version {
            Version::V1 | Version::Hybrid => self.pieces.len() as u64,
            Version::V2Only => self.files.iter().map(|f| self.piece_length.pieces_for(f.length)).sum(),
        }
    }
}

/// A parsed .torrent file: the info dict and what surrounds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info: Info,
    /// Tracker tiers (BEP 12): `announce-list` when it has any tracker, else `[[announce]]`, else empty.
    pub announce: Vec<Vec<String>>,
    /// Web seeds (BEP 19 `url-list`).
    pub url_list: Vec<String>,
    /// Informational text; bytes that are not UTF-8 are replaced rather than refused.
    pub comment: Option<String>,
    pub created_by: Option<String>,
    /// Seconds since the Unix epoch, as the file says.
    pub creation_date: Option<i64>,
}

/// Why bytes are not a valid torrent or info dict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    #[error("{key} is missing")]
    MissingKey { key: String },
    #[error("{key} is not {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("{key} is negative ({value})")]
    Negative { key: String, value: i64 },
    #[error("{key} is {value}, expected 0 or 1")]
    BadFlag { key: String, value: i64 },
    #[error("{key} is not valid UTF-8")]
    NotUtf8 { key: String },
    #[error("{key} is not valid UTF-8 and there is no {key}.utf-8 to use instead")]
    NameNotUtf8 { key: String },
    #[error("info meta version {version} is not supported (BEP 52 defines 2; v1 torrents have none)")]
    MetaVersion { version: i64 },
    #[error("info has a v2 \"file tree\" but no \"meta version\" 2")]
    TreeWithoutMetaVersion,
    #[error("info has both \"length\" and \"files\"; a v1 torrent has one or the other")]
    LengthAndFiles,
    #[error("info has neither \"length\" nor \"files\"")]
    NoFiles,
    #[error("info.files is empty")]
    EmptyFileList,
    #[error(transparent)]
    PieceLength(#[from] PieceLengthError),
    #[error("info.pieces is {len} bytes, not a multiple of 20 (one SHA-1 per piece)")]
    PiecesLength { len: usize },
    #[error(
        "info.pieces holds {got} piece hashes, but {total_length} bytes in pieces of {piece_length} make {expected}"
    )]
    PieceCount { got: usize, expected: u64, total_length: u64, piece_length: u64 },
    #[error("torrent has more than {MAX_PIECES} pieces")]
    TooManyPieces,
    #[error("total length of the files does not fit in a signed 64-bit integer")]
    TotalLengthOverflow,
    #[error("torrent lists more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("{key} is an empty path")]
    EmptyPath { key: String },
    #[error("file path {path:?}... has more than {MAX_PATH_DEPTH} components")]
    PathTooDeep { path: String },
    #[error("file path {path:?} {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("file path {path:?} appears twice")]
    DuplicatePath { path: String },
    #[error("file {file:?} is also the directory of {other:?}")]
    FileIsDirectory { file: String, other: String },
    #[error("info.file tree entry {path:?} {reason}")]
    FileTree { path: String, reason: &'static str },
    #[error("hybrid torrent's v1 files and v2 file tree disagree: {reason}")]
    HybridMismatch { reason: String },
}

/// Parses a .torrent file.
pub fn parse_torrent(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
    let entries = bencode::decode_dict(bytes)?;
    let info_raw = entries.iter().find(|e| e.key == b"info").map(|e| e.raw);
    let top = Value::Dict(entries.into_iter().map(|e| (e.key, e.value)).collect());
    let top = Fields::new(&top, String::new())?;
    let (Some(info_value), Some(info_raw)) = (top.get("info"), info_raw) else {
        return Err(MetainfoError::MissingKey { key: "info".into() });
    };
    let info = info_from(info_value, info_raw)?;
    Ok(Metainfo {
        info,
        announce: announce_tiers(&top)?,
        url_list: url_list(&top)?,
        comment: top.lossy_text("comment")?,
        created_by: top.lossy_text("created by")?,
        creation_date: top.int("creation date")?,
    })
}

/// Parses an info dict on its own: fetched from peers over ut_metadata (BEP 9) or stored as a block.
pub fn parse_info(info_bytes: &[u8]) -> Result<Info, MetainfoError> {
    let value = bencode::decode(info_bytes)?;
    info_from(&value, info_bytes)
}

/// What `btfs bittorrent metainfo <file>` prints. Keys whose value the torrent does not give are left out.
pub fn to_json(meta: &Metainfo) -> serde_json::Value {
    let info = &meta.info;
    let files: Vec<serde_json::Value> = info
        .files
        .iter()
        .map(|f| serde_json::json!({ "path": f.path_string(), "length": f.length, "padding": f.padding }))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("name".into(), info.name.clone().into());
    if let Some(hash) = info.info_hash_v1 {
        out.insert("info_hash".into(), to_hex(&hash).into());
    }
    if let Some(hash) = info.info_hash_v2 {
        out.insert("info_hash_v2".into(), to_hex(&hash).into());
    }
    out.insert("version".into(), info.version.as_str().into());
    out.insert("piece_length".into(), info.piece_length.get().into());
    out.insert("piece_count".into(), info.piece_count().into());
    out.insert("total_length".into(), info.total_length.into());
    out.insert("private".into(), info.private.into());
    out.insert("files".into(), files.into());
    out.insert("announce".into(), serde_json::json!(meta.announce));
    out.insert("url_list".into(), serde_json::json!(meta.url_list));
    if let Some(comment) = &meta.comment {
        out.insert("comment".into(), comment.clone().into());
    }
    if let Some(created_by) = &meta.created_by {
        out.insert("created_by".into(), created_by.clone().into());
    }
    if let Some(date) = meta.creation_date {
        out.insert("creation_date".into(), date.into());
    }
    serde_json::Value::Object(out)
}

/// The canonical info dict of a new v1 torrent.
///
/// `files` use [`FileEntry::path`]'s convention: one file whose path is `[name]` makes a single-file torrent;
/// otherwise every path is `[name, dir..., file]` and the list keeps the given order. `piece_hashes` are the
/// SHA-1s of the files' bytes concatenated in that order ([`PieceHasher`]). The result is checked by
/// [`parse_info`], so this never makes an info dict the parser would refuse.
pub fn make_v1_info(
    name: &str,
    piece_length: PieceLength,
    files: &[(Vec<String>, u64)],
    piece_hashes: &[[u8; 20]],
) -> Result<Vec<u8>, MetainfoError> {
    let signed = |length: u64| i64::try_from(length).map_err(|_| MetainfoError::TotalLengthOverflow);
    let mut info = DictBuilder::new()
        .text("name", name)
        .int("piece length", piece_length.as_i64())
        .bytes("pieces", piece_hashes.as_flattened());
    match files {
        [(path, length)] if path.len() == 1 && path[0] == name => info = info.int("length", signed(*length)?),
        _ => {
            let mut list = Vec::with_capacity(files.len());
            for (path, length) in files {
                let rest = match path.split_first() {
                    Some((first, rest)) if first == name && !rest.is_empty() => rest,
                    _ => {
                        return Err(MetainfoError::BadPath {
                            path: path.join("/"),
                            reason: "is not [name, dir..., file] for the torrent's name",
                        });
                    }
                };
                let components = Value::List(rest.iter().map(|c| Value::text(c)).collect());
                list.push(DictBuilder::new().int("length", signed(*length)?).insert("path", components).build());
            }
            info = info.insert("files", Value::List(list));
        }
    }
    let bytes = bencode::encode(&info.build());
    parse_info(&bytes)?;
    Ok(bytes)
}

/// A .torrent file around `info_bytes`, which go in unchanged (so the infohash is theirs). Each tracker in
/// `announce` is its own tier, in order; the first is also `announce` for clients without BEP 12.
pub fn make_torrent(info_bytes: &[u8], announce: &[String]) -> Vec<u8> {
    let mut top = DictBuilder::new();
    if let Some(first) = announce.first() {
        top = top.text("announce", first);
    }
    if announce.len() > 1 {
        let tiers = announce.iter().map(|t| Value::List(vec![Value::text(t)])).collect();
        top = top.insert("announce-list", Value::List(tiers));
    }
    // Every key written above sorts before "info", so the info dict goes last, before the closing 'e'.
    let mut out = bencode::encode(&top.build());
    out.pop();
    out.extend_from_slice(b"4:info");
    out.extend_from_slice(info_bytes);
    out.push(b'e');
    out
}

/// SHA-1s of consecutive `piece_length` pieces over bytes fed in any split, across file boundaries; the last
/// piece may be short.
#[derive(Debug, Clone)]
pub struct PieceHasher {
    piece_length: u64,
    sha: Sha1,
    /// Bytes of the current piece hashed so far.
    filled: u64,
    total: u64,
    pieces: Vec<[u8; 20]>,
}

impl PieceHasher {
    pub fn new(piece_length: PieceLength) -> Self {
        Self { piece_length: piece_length.get(), sha: Sha1::new(), filled: 0, total: 0, pieces: Vec::new() }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = self.piece_length - self.filled;
            let take = usize::try_from(room).map_or(data.len(), |room| room.min(data.len()));
            self.sha.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.piece_length {
                self.pieces.push(self.sha.finalize_reset().into());
                self.filled = 0;
            }
        }
    }

    /// The pieces completed so far.
    pub fn pieces(&self) -> &[[u8; 20]] {
        &self.pieces
    }

    /// Bytes fed so far.
    pub fn total_length(&self) -> u64 {
        self.total
    }

    /// Every piece hash, the short last piece included.
    pub fn finish(mut self) -> Vec<[u8; 20]> {
        if self.filled > 0 {
            self.pieces.push(self.sha.finalize().into());
        }
        self.pieces
    }
}

/// A dict being read, with its dotted key path for error messages (`info.files[3]`).
struct Fields<'v, 'a> {
    value: &'v Value<'a>,
    path: String,
}

impl<'v, 'a> Fields<'v, 'a> {
    fn new(value: &'v Value<'a>, path: String) -> Result<Self, MetainfoError> {
        if value.as_dict().is_none() {
            let key = if path.is_empty() { "torrent".to_owned() } else { path };
            return Err(MetainfoError::WrongType { key, expected: "a dict" });
        }
        Ok(Self { value, path })
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn missing(&self, key: &str) -> MetainfoError {
        MetainfoError::MissingKey { key: self.key(key) }
    }

    fn wrong(&self, key: &str, expected: &'static str) -> MetainfoError {
        MetainfoError::WrongType { key: self.key(key), expected }
    }

    fn get(&self, key: &str) -> Option<&'v Value<'a>> {
        self.value.get(key.as_bytes())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, MetainfoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(_) => Err(self.wrong(key, "an integer")),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, MetainfoError> {
        let Some(i) = self.int(key)? else { return Ok(None) };
        u64::try_from(i).map(Some).map_err(|_| MetainfoError::Negative { key: self.key(key), value: i })
    }

    fn bytes(&self, key: &str) -> Result<Option<&'a [u8]>, MetainfoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(key, "a byte string")),
        }
    }

    fn list(&self, key: &str) -> Result<Option<&'v [Value<'a>]>, MetainfoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::List(items)) => Ok(Some(items)),
            Some(_) => Err(self.wrong(key, "a list")),
        }
    }

    /// A name: `key.utf-8` when present (and then it must be UTF-8), else `key`, which must be UTF-8.
    fn name(&self, key: &str) -> Result<Option<String>, MetainfoError> {
        let utf8_key = format!("{key}.utf-8");
        if let Some(bytes) = self.bytes(&utf8_key)? {
            let text = std::str::from_utf8(bytes).map_err(|_| MetainfoError::NotUtf8 { key: self.key(&utf8_key) })?;
            return Ok(Some(text.to_owned()));
        }
        let Some(bytes) = self.bytes(key)? else { return Ok(None) };
        let text = std::str::from_utf8(bytes).map_err(|_| MetainfoError::NameNotUtf8 { key: self.key(key) })?;
        Ok(Some(text.to_owned()))
    }

    /// Informational text: `key.utf-8` when present, else `key`, with bytes that are not UTF-8 replaced.
    fn lossy_text(&self, key: &str) -> Result<Option<String>, MetainfoError> {
        let bytes = match self.bytes(&format!("{key}.utf-8"))? {
            Some(bytes) => Some(bytes),
            None => self.bytes(key)?,
        };
        Ok(bytes.map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// BEP 47 `attr`: the attributes and whether it says padding. Unknown letters are ignored, as BEP 47 asks.
    fn attr(&self) -> Result<(FileAttr, bool), MetainfoError> {
        let letters = self.bytes("attr")?.unwrap_or_default();
        let attr = FileAttr {
            executable: letters.contains(&b'x'),
            hidden: letters.contains(&b'h'),
            symlink: letters.contains(&b'l'),
        };
        Ok((attr, letters.contains(&b'p')))
    }
}

fn utf8_url(bytes: &[u8], key: impl FnOnce() -> String) -> Result<String, MetainfoError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| MetainfoError::NotUtf8 { key: key() })
}

fn announce_tiers(top: &Fields<'_, '_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    let mut tiers = Vec::new();
    for (i, tier) in top.list("announce-list")?.unwrap_or_default().iter().enumerate() {
        let Value::List(urls) = tier else {
            return Err(MetainfoError::WrongType { key: format!("announce-list[{i}]"), expected: "a list" });
        };
        let mut out = Vec::with_capacity(urls.len());
        for (j, url) in urls.iter().enumerate() {
            let key = || format!("announce-list[{i}][{j}]");
            let Value::Bytes(url) = url else {
                return Err(MetainfoError::WrongType { key: key(), expected: "a byte string" });
            };
            if !url.is_empty() {
                out.push(utf8_url(url, key)?);
            }
        }
        if !out.is_empty() {
            tiers.push(out);
        }
    }
    if tiers.is_empty()
        && let Some(url) = top.bytes("announce")?
        && !url.is_empty()
    {
        tiers.push(vec![utf8_url(url, || "announce".into())?]);
    }
    Ok(tiers)
}

/// BEP 19 allows `url-list` to be one string or a list of them.
fn url_list(top: &Fields<'_, '_>) -> Result<Vec<String>, MetainfoError> {
    let urls: Vec<(String, &[u8])> = match top.get("url-list") {
        None => return Ok(Vec::new()),
        Some(Value::Bytes(url)) => vec![("url-list".into(), url)],
        Some(Value::List(items)) => {
            let mut urls = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let key = format!("url-list[{i}]");
                let Value::Bytes(url) = item else {
                    return Err(MetainfoError::WrongType { key, expected: "a byte string" });
                };
                urls.push((key, *url));
            }
            urls
        }
        Some(_) => return Err(top.wrong("url-list", "a byte string or a list")),
    };
    urls.into_iter().filter(|(_, url)| !url.is_empty()).map(|(key, url)| utf8_url(url, || key)).collect()
}

fn info_from(value: &Value<'_>, raw: &[u8]) -> Result<Info, MetainfoError> {
    let info = Fields::new(value, "info".into())?;
    let version = match (info.int("meta version")?, info.get("file tree").is_some()) {
        (None, false) => Version::V1,
        (None, true) => return Err(MetainfoError::TreeWithoutMetaVersion),
        (Some(2), _) if info.get("pieces").is_some() => Version::Hybrid,
        (Some(2), _) => Version::V2Only,
        (Some(version), _) => return Err(MetainfoError::MetaVersion { version }),
    };
    let name = info.name("name")?.ok_or_else(|| info.missing("name"))?;
    check_path(std::slice::from_ref(&name))?;
    let piece_length = info.uint("piece length")?.ok_or_else(|| info.missing("piece length"))?;
    let piece_length = PieceLength::new(piece_length)?;
    let private = match info.int("private")? {
        None | Some(0) => false,
        Some(1) => true,
        Some(value) => return Err(MetainfoError::BadFlag { key: "info.private".into(), value }),
    };

    let (files, pieces, total_length) = match version {
        Version::V1 | Version::Hybrid => {
            let (mut files, total) = v1_files(&info, &name)?;
            let pieces = v1_pieces(&info, total, piece_length)?;
            if version == Version::Hybrid {
                let tree = file_tree(&info, &name)?;
                match_hybrid(&mut files, &tree, piece_length)?;
            }
            (files, pieces, total)
        }
        Version::V2Only => {
            if info.get("length").is_some() || info.get("files").is_some() {
                // v1 file lists without v1 pieces describe a torrent no v1 peer can check.
                return Err(info.missing("pieces"));
            }
            let mut files = file_tree(&info, &name)?;
            let (mut offset, mut total) = (0u64, 0u64);
            for file in &mut files {
                file.offset = offset;
                total = total.checked_add(file.length).ok_or(MetainfoError::TotalLengthOverflow)?;
                let padded = piece_length.pieces_for(file.length) * piece_length.get();
                offset = offset.checked_add(padded).ok_or(MetainfoError::TotalLengthOverflow)?;
            }
            if total > i64::MAX as u64 {
                return Err(MetainfoError::TotalLengthOverflow);
            }
            (files, Vec::new(), total)
        }
    };
    check_unique(&files)?;

    let info_hash_v1 = (version != Version::V2Only).then(|| Sha1::digest(raw).into());
    let info_hash_v2 = (version != Version::V1).then(|| Sha256::digest(raw).into());
    Ok(Info {
        info_bytes: raw.to_vec(),
        info_hash_v1,
        info_hash_v2,
        version,
        name,
        piece_length,
        pieces,
        files,
        total_length,
        private,
    })
}

/// The v1 file list (`length` or `files`) with offsets, and the total length.
fn v1_files(info: &Fields<'_, '_>, name: &str) -> Result<(Vec<FileEntry>, u64), MetainfoError> {
    let list = match (info.uint("length")?, info.list("files")?) {
        (Some(_), Some(_)) => return Err(MetainfoError::LengthAndFiles),
        (None, None) => return Err(MetainfoError::NoFiles),
        (Some(length), None) => {
            if length > i64::MAX as u64 {
                return Err(MetainfoError::TotalLengthOverflow);
            }
            let (attr, padding) = info.attr()?;
            let file = FileEntry { path: vec![name.to_owned()], length, offset: 0, padding, attr, pieces_root: None };
            return Ok((vec![file], length));
        }
        (None, Some(list)) => list,
    };
    if list.is_empty() {
        return Err(MetainfoError::EmptyFileList);
    }
    if list.len() > MAX_FILES {
        return Err(MetainfoError::TooManyFiles);
    }
    let mut files = Vec::with_capacity(list.len());
    let mut total: u64 = 0;
    for (i, item) in list.iter().enumerate() {
        let file = Fields::new(item, format!("info.files[{i}]"))?;
        let length = file.uint("length")?.ok_or_else(|| file.missing("length"))?;
        let mut path = Vec::with_capacity(4);
        path.push(name.to_owned());
        path.extend(path_components(&file)?);
        if path.len() > MAX_PATH_DEPTH {
            return Err(MetainfoError::PathTooDeep { path: path_head(&path) });
        }
        check_path(&path)?;
        let (attr, by_attr) = file.attr()?;
        let legacy_pad = path.get(1).is_some_and(|c| c == ".pad")
            || path.last().is_some_and(|c| c.starts_with("_____padding_file_"));
        files.push(FileEntry { path, length, offset: total, padding: by_attr || legacy_pad, attr, pieces_root: None });
        total =
            total.checked_add(length).filter(|&t| t <= i64::MAX as u64).ok_or(MetainfoError::TotalLengthOverflow)?;
    }
    Ok((files, total))
}

/// A v1 file's `path.utf-8` (when present) or `path`: a non-empty list of UTF-8 components.
fn path_components(file: &Fields<'_, '_>) -> Result<Vec<String>, MetainfoError> {
    let (key, list) = match file.list("path.utf-8")? {
        Some(list) => ("path.utf-8", list),
        None => ("path", file.list("path")?.ok_or_else(|| file.missing("path"))?),
    };
    if list.is_empty() {
        return Err(MetainfoError::EmptyPath { key: file.key(key) });
    }
    let mut components = Vec::with_capacity(list.len());
    for (j, item) in list.iter().enumerate() {
        let Value::Bytes(bytes) = item else {
            return Err(MetainfoError::WrongType { key: format!("{}[{j}]", file.key(key)), expected: "a byte string" });
        };
        let text = std::str::from_utf8(bytes).map_err(|_| {
            if key == "path" {
                MetainfoError::NameNotUtf8 { key: file.key(key) }
            } else {
                MetainfoError::NotUtf8 { key: file.key(key) }
            }
        })?;
        components.push(text.to_owned());
    }
    Ok(components)
}

/// The v1 piece hashes, as many as `total` bytes need.
fn v1_pieces(info: &Fields<'_, '_>, total: u64, piece_length: PieceLength) -> Result<Vec<[u8; 20]>, MetainfoError> {
    let bytes = info.bytes("pieces")?.ok_or_else(|| info.missing("pieces"))?;
    let (pieces, rest) = bytes.as_chunks::<20>();
    if !rest.is_empty() {
        return Err(MetainfoError::PiecesLength { len: bytes.len() });
    }
    if pieces.len() > MAX_PIECES {
        return Err(MetainfoError::TooManyPieces);
    }
    let expected = piece_length.pieces_for(total);
    if pieces.len() as u64 != expected {
        return Err(MetainfoError::PieceCount {
            got: pieces.len(),
            expected,
            total_length: total,
            piece_length: piece_length.get(),
        });
    }
    Ok(pieces.to_vec())
}

/// The files of a v2 `file tree`, in tree (sorted) order, with offsets left at zero.
fn file_tree(info: &Fields<'_, '_>, name: &str) -> Result<Vec<FileEntry>, MetainfoError> {
    let tree = info.get("file tree").ok_or_else(|| info.missing("file tree"))?;
    if tree.as_dict().is_none() {
        return Err(info.wrong("file tree", "a dict"));
    }
    let mut files = Vec::new();
    walk_tree(tree, &mut Vec::new(), &mut files)?;
    // One file at the root is a single-file torrent, named by its key; anything else lives under `name`.
    let single = matches!(files.as_slice(), [file] if file.path.len() == 1);
    if !single {
        for file in &mut files {
            file.path.insert(0, name.to_owned());
            if file.path.len() > MAX_PATH_DEPTH {
                return Err(MetainfoError::PathTooDeep { path: path_head(&file.path) });
            }
        }
    }
    Ok(files)
}

/// One directory of a file tree. Recursion is bounded: bencode nesting is at most [`bencode::MAX_DEPTH`].
fn walk_tree(node: &Value<'_>, prefix: &mut Vec<String>, files: &mut Vec<FileEntry>) -> Result<(), MetainfoError> {
    let tree_error = |prefix: &[String], reason| MetainfoError::FileTree { path: prefix.join("/"), reason };
    let Some(entries) = node.as_dict() else { return Err(tree_error(prefix, "is not a dict")) };
    if entries.is_empty() {
        return Err(tree_error(prefix, "is an empty directory"));
    }
    for (key, child) in entries {
        if key.is_empty() {
            if entries.len() != 1 {
                return Err(tree_error(prefix, "is both a file and a directory"));
            }
            if prefix.is_empty() {
                return Err(tree_error(prefix, "is a file with no name"));
            }
            let leaf = Fields::new(child, format!("info.file tree[{:?}]", prefix.join("/")))?;
            let length = leaf.uint("length")?.ok_or_else(|| leaf.missing("length"))?;
            let pieces_root = match leaf.bytes("pieces root")? {
                Some(root) => {
                    let root: [u8; 32] =
                        root.try_into().map_err(|_| tree_error(prefix, "has a pieces root that is not 32 bytes"))?;
                    Some(root)
                }
                None if length > 0 => return Err(leaf.missing("pieces root")),
                None => None,
            };
            let (attr, padding) = leaf.attr()?;
            if files.len() == MAX_FILES {
                return Err(MetainfoError::TooManyFiles);
            }
            files.push(FileEntry { path: prefix.clone(), length, offset: 0, padding, attr, pieces_root });
            continue;
        }
        let Ok(component) = std::str::from_utf8(key) else {
            return Err(tree_error(prefix, "has a child whose name is not valid UTF-8"));
        };
        prefix.push(component.to_owned());
        check_path(prefix)?;
        if prefix.len() > MAX_PATH_DEPTH {
            return Err(MetainfoError::PathTooDeep { path: path_head(prefix) });
        }
        walk_tree(child, prefix, files)?;
        prefix.pop();
    }
    Ok(())
}

/// A hybrid's v1 files, without padding, must be the v2 tree's files in the same order with the same lengths,
/// each starting on a piece boundary in the v1 stream (BEP 52: padding files align them). Copies the v2 piece
/// roots onto the v1 entries.
fn match_hybrid(v1: &mut [FileEntry], v2: &[FileEntry], piece_length: PieceLength) -> Result<(), MetainfoError> {
    let mismatch = |reason: String| Err(MetainfoError::HybridMismatch { reason });
    let real = v1.iter().filter(|f| !f.padding).count();
    if real != v2.len() {
        return mismatch(format!("{real} v1 files (without padding), {} in the v2 tree", v2.len()));
    }
    for (a, b) in v1.iter_mut().filter(|f| !f.padding).zip(v2) {
        if a.path != b.path {
            return mismatch(format!("v1 file {:?} is {:?} in the v2 tree", a.path_string(), b.path_string()));
        }
        if a.length != b.length {
            return mismatch(format!("file {:?} is {} bytes in v1 and {} in v2", a.path_string(), a.length, b.length));
        }
        if a.length > 0 && a.offset % piece_length.get() != 0 {
            return mismatch(format!(
                "file {:?} starts at byte {} of the v1 stream, not on a piece boundary",
                a.path_string(),
                a.offset
            ));
        }
        a.pieces_root = b.pieces_root;
    }
    Ok(())
}

/// The first few components of a path too deep to show whole.
fn path_head(path: &[String]) -> String {
    path[..path.len().min(4)].join("/")
}

/// Refuses a component that could escape the download directory or that no filesystem can hold.
fn check_path(path: &[String]) -> Result<(), MetainfoError> {
    for component in path {
        let bytes = component.as_bytes();
        let reason = if component.is_empty() {
            "has an empty component"
        } else if component == "." || component == ".." {
            "has a \".\" or \"..\" component (path traversal)"
        } else if component.contains(['/', '\\']) {
            "has a component containing '/' or '\\' (path traversal)"
        } else if component.contains('\0') {
            "has a component containing NUL"
        } else if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
            "has a drive-like component such as \"C:\" (an absolute Windows path)"
        } else {
            continue;
        };
        return Err(MetainfoError::BadPath { path: path.join("/"), reason });
    }
    Ok(())
}

/// No path twice (padding files may share one, as libtorrent's `.pad/<size>` do) and no file that is also
/// another's directory. Sorted, a file's descendants come right after it, so neighbours are enough.
fn check_unique(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.path == b.path {
            if a.padding && b.padding {
                continue;
            }
            return Err(MetainfoError::DuplicatePath { path: a.path_string() });
        }
        if b.path.starts_with(&a.path) {
            return Err(MetainfoError::FileIsDirectory { file: a.path_string(), other: b.path_string() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::torrent::bencode::encode;

    const PIECE: i64 = 16 * 1024;
    static HASHES: [u8; 20 * 16] = [7; 20 * 16];

    fn hashes(n: usize) -> &'static [u8] {
        &HASHES[..20 * n]
    }

    fn file(path: &[&'static str], length: i64) -> Value<'static> {
        let path = Value::List(path.iter().map(|c| Value::text(c)).collect());
        DictBuilder::new().int("length", length).insert("path", path).build()
    }

    /// A valid multi-file info dict: "multi/a.txt" (10 bytes) and "multi/dir/b.bin" (20000), two pieces.
    fn multi() -> DictBuilder<'static> {
        DictBuilder::new()
            .text("name", "multi")
            .int("piece length", PIECE)
            .bytes("pieces", hashes(2))
            .insert("files", Value::List(vec![file(&["a.txt"], 10), file(&["dir", "b.bin"], 20_000)]))
    }

    /// `multi()` with `files` and as many pieces as they need.
    fn with_files(files: Vec<Value<'static>>) -> Vec<u8> {
        let total: i64 = files.iter().map(|f| f.get(b"length").and_then(Value::as_int).unwrap_or(0)).sum();
        let pieces = usize::try_from((total + PIECE - 1) / PIECE).expect("small");
        encode(&multi().insert("files", Value::List(files)).bytes("pieces", hashes(pieces)).build())
    }

    fn refusal(info: &[u8]) -> String {
        parse_info(info).expect_err("refused").to_string()
    }

    fn paths(info: &Info) -> Vec<String> {
        info.files.iter().map(FileEntry::path_string).collect()
    }

    #[test]
    fn known_vector() {
        // The info dict of a 5-byte file "hello". Both hashes come from coreutils: `printf hello | sha1sum` for
        // the piece, `sha1sum`/`sha256sum` of these exact bytes for the infohashes.
        let piece = b"\xaa\xf4\xc6\x1d\xdc\xc5\xe8\xa2\xda\xbe\xde\x0f\x3b\x48\x2c\xd9\xae\xa9\x43\x4d";
        let info = [b"d6:lengthi5e4:name5:a.txt12:piece lengthi16384e6:pieces20:".as_slice(), piece, b"e"].concat();
        let parsed = parse_info(&info).expect("valid");
        assert_eq!(to_hex(&parsed.info_hash_v1.expect("v1")), "de3edc1dfa1958affac1dbdc8f34d4d6dac43f00");
        assert_eq!(parsed.info_hash_v2, None);
        assert_eq!(parsed.version, Version::V1);
        assert_eq!(parsed.pieces, [*piece]);
        assert_eq!(paths(&parsed), ["a.txt"]);
        // The builder and the hasher make the same bytes from the content.
        let mut hasher = PieceHasher::new(parsed.piece_length);
        hasher.update(b"hel");
        hasher.update(b"lo");
        let made = make_v1_info("a.txt", parsed.piece_length, &[(vec!["a.txt".into()], 5)], &hasher.finish());
        assert_eq!(made.as_deref(), Ok(info.as_slice()));
        // A hybrid's v2 hash is SHA-256 over the same kind of bytes; checked here on these with `sha256sum`.
        assert_eq!(to_hex(&Sha256::digest(&info)), "19ada3626861c122de0c10c350254532f6c332a0c13058f6f5a8bea152899c2f");
    }

    #[test]
    fn a_multi_file_info_parses() {
        let info = parse_info(&encode(&multi().build())).expect("valid");
        assert_eq!(info.name, "multi");
        assert_eq!(paths(&info), ["multi/a.txt", "multi/dir/b.bin"]);
        let offsets: Vec<(u64, u64)> = info.files.iter().map(|f| (f.offset, f.length)).collect();
        assert_eq!(offsets, [(0, 10), (10, 20_000)]);
        assert_eq!((info.total_length, info.pieces.len(), info.private), (20_010, 2, false));
    }

    /// (info dict, the message a user sees) for each check.
    fn refusals() -> Vec<(Vec<u8>, &'static str)> {
        let m = || multi();
        let with = |d: DictBuilder<'static>| encode(&d.build());
        vec![
            (with(m().remove("name")), "info.name is missing"),
            (with(m().int("name", 3)), "info.name is not a byte string"),
            (with(m().remove("piece length")), "info.piece length is missing"),
            (with(m().text("piece length", "16384")), "info.piece length is not an integer"),
            (with(m().int("piece length", -16384)), "info.piece length is negative (-16384)"),
            (with(m().int("piece length", 0)), "piece length 0 is zero"),
            (with(m().int("piece length", 20_000)), "piece length 20000 is not a power of two"),
            (
                with(m().int("piece length", 8192)),
                "piece length 8192 is below 16 KiB (BEP 52's minimum, applied to v1 torrents too)",
            ),
            (with(m().int("piece length", 128 << 20)), "piece length 134217728 is above 64 MiB, the largest accepted"),
            (with(m().remove("pieces")), "info.pieces is missing"),
            (
                with(m().bytes("pieces", &HASHES[..30])),
                "info.pieces is 30 bytes, not a multiple of 20 (one SHA-1 per piece)",
            ),
            (
                with(m().bytes("pieces", hashes(3))),
                "info.pieces holds 3 piece hashes, but 20010 bytes in pieces of 16384 make 2",
            ),
            (with(m().int("length", 5)), "info has both \"length\" and \"files\"; a v1 torrent has one or the other"),
            (with(m().remove("files")), "info has neither \"length\" nor \"files\""),
            (with(m().insert("files", Value::List(vec![]))), "info.files is empty"),
            (
                with(m().insert("files", Value::List(vec![file(&["a"], 1), Value::Int(1)]))),
                "info.files[1] is not a dict",
            ),
            (with_files(vec![file(&["a"], -1)]), "info.files[0].length is negative (-1)"),
            (with_files(vec![file(&[], 1)]), "info.files[0].path is an empty path"),
            (
                encode(&m().insert("files", Value::List(vec![file(&["a"], i64::MAX), file(&["b"], 1)])).build()),
                "total length of the files does not fit in a signed 64-bit integer",
            ),
            (
                with(m().int("meta version", 3)),
                "info meta version 3 is not supported (BEP 52 defines 2; v1 torrents have none)",
            ),
            (
                with(m().insert("file tree", DictBuilder::new().build())),
                "info has a v2 \"file tree\" but no \"meta version\" 2",
            ),
            (with(m().int("private", 2)), "info.private is 2, expected 0 or 1"),
            (
                with(m().bytes("name", b"caf\xe9")),
                "info.name is not valid UTF-8 and there is no info.name.utf-8 to use instead",
            ),
            (with(m().bytes("name.utf-8", b"caf\xe9")), "info.name.utf-8 is not valid UTF-8"),
            (
                with_files(vec![
                    DictBuilder::new()
                        .int("length", 1)
                        .insert("path", Value::List(vec![Value::Bytes(b"\xff")]))
                        .build(),
                ]),
                "info.files[0].path is not valid UTF-8 and there is no info.files[0].path.utf-8 to use instead",
            ),
            (
                with_files(vec![file(&["a"], 1), file(&["b"], 2), file(&["a"], 3)]),
                "file path \"multi/a\" appears twice",
            ),
            (
                with_files(vec![file(&["d", "x"], 1), file(&["d"], 2)]),
                "file \"multi/d\" is also the directory of \"multi/d/x\"",
            ),
            (with(m().text("name", "..")), "file path \"..\" has a \".\" or \"..\" component (path traversal)"),
            (
                with(m().text("name", "/etc")),
                "file path \"/etc\" has a component containing '/' or '\\' (path traversal)",
            ),
            (with(m().int("creation date", 1)), ""),
        ]
    }

    #[test]
    fn invalid_info_dicts_are_refused_by_name() {
        for (info, message) in refusals() {
            if message.is_empty() {
                // An unknown key inside info is kept (it is part of the hash) and ignored.
                assert!(parse_info(&info).is_ok());
                continue;
            }
            assert_eq!(refusal(&info), message);
        }
    }

    /// Path components that must never reach a filesystem, with the reason a user sees.
    const BAD_COMPONENTS: &[(&str, &str)] = &[
        ("", "has an empty component"),
        (".", "has a \".\" or \"..\" component (path traversal)"),
        ("..", "has a \".\" or \"..\" component (path traversal)"),
        ("a/b", "has a component containing '/' or '\\' (path traversal)"),
        ("/etc", "has a component containing '/' or '\\' (path traversal)"),
        ("a\\..\\b", "has a component containing '/' or '\\' (path traversal)"),
        ("a\0b", "has a component containing NUL"),
        ("C:", "has a drive-like component such as \"C:\" (an absolute Windows path)"),
        ("a:b", "has a drive-like component such as \"C:\" (an absolute Windows path)"),
    ];

    #[test]
    fn path_traversal_is_refused_naming_the_path() {
        for (component, reason) in BAD_COMPONENTS {
            let v1 = with_files(vec![file(&["ok"], 1), file(&["dir", component, "x"], 1)]);
            assert_eq!(refusal(&v1), format!("file path {:?} {reason}", format!("multi/dir/{component}/x")));
            // The same through path.utf-8, which wins over path.
            let utf8 = DictBuilder::new()
                .int("length", 1)
                .insert("path", Value::List(vec![Value::text("fine")]))
                .insert("path.utf-8", Value::List(vec![Value::text(component)]))
                .build();
            assert_eq!(
                refusal(&with_files(vec![utf8])),
                format!("file path {:?} {reason}", format!("multi/{component}"))
            );
            // And in a v2 file tree, where an empty key marks a file rather than naming a component.
            if component.is_empty() {
                continue;
            }
            let tree = DictBuilder::new().insert(component, leaf(1)).build();
            let v2 = encode(&v2_only().insert("file tree", DictBuilder::new().insert("d", tree).build()).build());
            assert_eq!(refusal(&v2), format!("file path {:?} {reason}", format!("d/{component}")));
        }
        // "ab:c" is not drive-like ("a:b" is: drive a, relative path b), and ".." inside a name is just a name.
        let fine = with_files(vec![file(&["ab:c"], 1), file(&["x..y"], 1), file(&["...", "z"], 1)]);
        assert_eq!(paths(&parse_info(&fine).expect("valid")), ["multi/ab:c", "multi/x..y", "multi/.../z"]);
    }

    #[test]
    fn utf8_variants_win() {
        let info = multi().bytes("name", b"caf\xe9").text("name.utf-8", "café").insert(
            "files",
            Value::List(vec![
                DictBuilder::new()
                    .int("length", 20_010)
                    .insert("path", Value::List(vec![Value::Bytes(b"\xff")]))
                    .insert("path.utf-8", Value::List(vec![Value::text("ü.txt")]))
                    .build(),
            ]),
        );
        let info = parse_info(&encode(&info.build())).expect("valid");
        assert_eq!(paths(&info), ["café/ü.txt"]);
    }

    #[test]
    fn files_and_depth_are_bounded() {
        let many = Value::List(vec![Value::Int(0); MAX_FILES + 1]);
        assert_eq!(refusal(&encode(&multi().insert("files", many).build())), "torrent lists more than 1000000 files");
        let deep: Vec<&'static str> = vec!["d"; MAX_PATH_DEPTH];
        assert_eq!(
            refusal(&with_files(vec![file(&deep, 1)])),
            "file path \"multi/d/d/d\"... has more than 128 components"
        );
        let deep: Vec<&'static str> = vec!["d"; MAX_PATH_DEPTH - 1];
        assert!(parse_info(&with_files(vec![file(&deep, 1)])).is_ok());
    }

    #[test]
    fn padding_files_are_recognised() {
        let files = vec![
            file(&["a"], 10),
            DictBuilder::new()
                .int("length", 6)
                .text("attr", "p")
                .insert("path", Value::List(vec![Value::text("x")]))
                .build(),
            file(&[".pad", "6"], 6),
            file(&["_____padding_file_0_if you see this file, please update to BitComet 0.85 or above____"], 3),
            file(&["sub", ".pad"], 1),
            DictBuilder::new()
                .int("length", 2)
                .text("attr", "xh?")
                .insert("path", Value::List(vec![Value::text("run")]))
                .build(),
        ];
        let info = parse_info(&with_files(files)).expect("valid");
        let padding: Vec<bool> = info.files.iter().map(|f| f.padding).collect();
        assert_eq!(padding, [false, true, true, true, false, false]);
        assert_eq!(info.files[5].attr, FileAttr { executable: true, hidden: true, symlink: false });
        // Padding files may share a path (libtorrent names them by size); real files may not share theirs.
        let twice = vec![file(&["a"], 1), file(&[".pad", "7"], 7), file(&["b"], 1), file(&[".pad", "7"], 7)];
        assert!(parse_info(&with_files(twice)).is_ok());
        let clash = vec![file(&[".pad", "7"], 7), file(&[".pad"], 1)];
        assert_eq!(refusal(&with_files(clash)), "file \"multi/.pad\" is also the directory of \"multi/.pad/7\"");
    }

    fn leaf(length: i64) -> Value<'static> {
        let mut file = DictBuilder::new().int("length", length);
        if length > 0 {
            file = file.bytes("pieces root", &HASHES[..32]);
        }
        DictBuilder::new().insert("", file.build()).build()
    }

    /// A v2-only info dict: "v2/a.bin" (10 bytes) and "v2/d/b.bin" (5).
    fn v2_only() -> DictBuilder<'static> {
        let tree = DictBuilder::new()
            .insert("a.bin", leaf(10))
            .insert("d", DictBuilder::new().insert("b.bin", leaf(5)).build())
            .build();
        DictBuilder::new()
            .text("name", "v2")
            .int("piece length", PIECE)
            .int("meta version", 2)
            .insert("file tree", tree)
    }

    /// The padding file after a 10-byte file, as libtorrent writes it.
    fn pad() -> Value<'static> {
        let pad = DictBuilder::new().text("attr", "p").int("length", PIECE - 10);
        pad.insert("path", Value::List(vec![Value::text(".pad"), Value::text("16374")])).build()
    }

    /// The same files as a hybrid: v1 `files` with a padding file aligning b.bin to the second piece.
    fn hybrid() -> DictBuilder<'static> {
        v2_only()
            .insert("files", Value::List(vec![file(&["a.bin"], 10), pad(), file(&["d", "b.bin"], 5)]))
            .bytes("pieces", hashes(2))
    }

    #[test]
    fn v2_only_and_hybrid_info_dicts_parse() {
        let bytes = encode(&v2_only().build());
        let v2 = parse_info(&bytes).expect("valid");
        assert_eq!(v2.version, Version::V2Only);
        assert_eq!(v2.info_hash_v1, None);
        assert_eq!(v2.info_hash_v2, Some(Sha256::digest(&bytes).into()));
        assert_eq!(paths(&v2), ["v2/a.bin", "v2/d/b.bin"]);
        let layout: Vec<(u64, u64)> = v2.files.iter().map(|f| (f.offset, f.length)).collect();
        assert_eq!(layout, [(0, 10), (PIECE as u64, 5)]);
        assert_eq!((v2.total_length, v2.piece_count(), v2.pieces.len()), (15, 2, 0));
        assert_eq!(v2.files[0].pieces_root, Some([7; 32]));

        let bytes = encode(&hybrid().build());
        let h = parse_info(&bytes).expect("valid");
        assert_eq!(h.version, Version::Hybrid);
        assert_eq!(h.info_hash_v1, Some(Sha1::digest(&bytes).into()));
        assert_eq!(h.info_hash_v2, Some(Sha256::digest(&bytes).into()));
        assert_eq!(paths(&h), ["v2/a.bin", "v2/.pad/16374", "v2/d/b.bin"]);
        let roots: Vec<bool> = h.files.iter().map(|f| f.pieces_root.is_some()).collect();
        assert_eq!(roots, [true, false, true]);
        assert_eq!(h.total_length, PIECE as u64 + 5);

        // One file at the root of the tree is a single-file torrent.
        let single = v2_only().insert("file tree", DictBuilder::new().insert("one.bin", leaf(3)).build());
        assert_eq!(paths(&parse_info(&encode(&single.build())).expect("valid")), ["one.bin"]);
    }

    #[test]
    fn inconsistent_v2_and_hybrid_dicts_are_refused_by_name() {
        let tree = |t: Value<'static>| encode(&v2_only().insert("file tree", t).build());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (encode(&v2_only().remove("file tree").build()), "info.file tree is missing"),
            (tree(Value::Int(1)), "info.file tree is not a dict"),
            (
                tree(DictBuilder::new().insert("d", DictBuilder::new().build()).build()),
                "info.file tree entry \"d\" is an empty directory",
            ),
            (tree(DictBuilder::new().insert("d", Value::Int(1)).build()), "info.file tree entry \"d\" is not a dict"),
            (tree(leaf(1)), "info.file tree entry \"\" is a file with no name"),
            (
                tree(
                    DictBuilder::new()
                        .insert("d", DictBuilder::new().insert("", Value::Int(0)).insert("x", leaf(1)).build())
                        .build(),
                ),
                "info.file tree entry \"d\" is both a file and a directory",
            ),
            (
                tree(
                    DictBuilder::new()
                        .insert("d", DictBuilder::new().insert("", DictBuilder::new().int("length", 1).build()).build())
                        .build(),
                ),
                "info.file tree[\"d\"].pieces root is missing",
            ),
            (
                tree(
                    DictBuilder::new()
                        .insert(
                            "d",
                            DictBuilder::new()
                                .insert("", DictBuilder::new().int("length", 1).bytes("pieces root", b"short").build())
                                .build(),
                        )
                        .build(),
                ),
                "info.file tree entry \"d\" has a pieces root that is not 32 bytes",
            ),
            (encode(&v2_only().int("length", 15).build()), "info.pieces is missing"),
            (
                encode(
                    &hybrid()
                        .insert("files", Value::List(vec![file(&["a.bin"], 10), file(&["d", "b.bin"], 5)]))
                        .bytes("pieces", hashes(1))
                        .build(),
                ),
                "hybrid torrent's v1 files and v2 file tree disagree: file \"v2/d/b.bin\" starts at byte 10 of the v1 stream, not on a piece boundary",
            ),
            (
                encode(
                    &hybrid()
                        .insert("files", Value::List(vec![file(&["a.bin"], 10)]))
                        .bytes("pieces", hashes(1))
                        .build(),
                ),
                "hybrid torrent's v1 files and v2 file tree disagree: 1 v1 files (without padding), 2 in the v2 tree",
            ),
            (
                encode(
                    &hybrid()
                        .insert("files", Value::List(vec![file(&["a.bin"], 16384), file(&["d", "b.bin"], 5)]))
                        .build(),
                ),
                "hybrid torrent's v1 files and v2 file tree disagree: file \"v2/a.bin\" is 16384 bytes in v1 and 10 in v2",
            ),
            (
                encode(
                    &hybrid()
                        .insert("files", Value::List(vec![file(&["a.bin"], 10), pad(), file(&["d", "c.bin"], 5)]))
                        .build(),
                ),
                "hybrid torrent's v1 files and v2 file tree disagree: v1 file \"v2/d/c.bin\" is \"v2/d/b.bin\" in the v2 tree",
            ),
        ];
        for (info, message) in cases {
            assert_eq!(refusal(&info), message);
        }
    }

    fn torrent(top: DictBuilder<'_>) -> Vec<u8> {
        encode(&top.insert("info", multi().build()).build())
    }

    #[test]
    fn torrent_files_give_trackers_and_metadata() {
        let tiers = Value::List(vec![
            Value::List(vec![Value::text("http://a/announce"), Value::text("http://b/announce")]),
            Value::List(vec![]),
            Value::List(vec![Value::text("udp://c:80")]),
        ]);
        let t = torrent(
            DictBuilder::new()
                .text("announce", "http://ignored/announce")
                .insert("announce-list", tiers)
                .bytes("comment", b"caf\xe9")
                .text("created by", "hand")
                .int("creation date", 1_700_000_000)
                .text("url-list", "http://seed/"),
        );
        let meta = parse_torrent(&t).expect("valid");
        assert_eq!(meta.announce, [vec!["http://a/announce", "http://b/announce"], vec!["udp://c:80"]]);
        assert_eq!(meta.comment.as_deref(), Some("caf\u{fffd}"));
        assert_eq!(meta.created_by.as_deref(), Some("hand"));
        assert_eq!(meta.creation_date, Some(1_700_000_000));
        assert_eq!(meta.url_list, ["http://seed/"]);
        // The info dict's bytes are exactly those inside the file.
        let info_bytes = encode(&multi().build());
        assert!(t.windows(info_bytes.len()).any(|w| w == info_bytes));
        assert_eq!(meta.info.info_bytes, info_bytes);

        let json = to_json(&meta);
        assert_eq!(json["name"], "multi");
        assert_eq!(json["info_hash"], to_hex(&Sha1::digest(&info_bytes)));
        assert!(json.get("info_hash_v2").is_none());
        assert_eq!(json["version"], "v1");
        assert_eq!((json["piece_length"].as_u64(), json["piece_count"].as_u64()), (Some(16_384), Some(2)));
        assert_eq!(json["total_length"], 20_010);
        assert_eq!(
            json["files"][1],
            serde_json::json!({ "path": "multi/dir/b.bin", "length": 20_000, "padding": false })
        );
        assert_eq!(json["announce"][1][0], "udp://c:80");
        assert_eq!(
            (json["comment"].as_str(), json["creation_date"].as_i64()),
            (Some("caf\u{fffd}"), Some(1_700_000_000))
        );
        assert_eq!(json["private"], false);

        let plain = parse_torrent(&torrent(DictBuilder::new().text("announce", "http://only/"))).expect("valid");
        assert_eq!(plain.announce, [vec!["http://only/"]]);
        let seeds = Value::List(vec![Value::text("http://1/"), Value::text("")]);
        let listed = parse_torrent(&torrent(DictBuilder::new().insert("url-list", seeds))).expect("valid");
        assert_eq!(listed.url_list, ["http://1/"]);
        let json = to_json(&listed);
        assert!(json.get("comment").is_none() && json.get("created_by").is_none());
    }

    #[test]
    fn invalid_torrent_files_are_refused_by_name() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (encode(&DictBuilder::new().text("announce", "x").build()), "info is missing"),
            (encode(&DictBuilder::new().int("info", 1).build()), "info is not a dict"),
            (encode(&Value::List(vec![])), "bencode: unexpected byte 0x6c at byte 0, expected a dict ('d')"),
            ([torrent(DictBuilder::new()), b"\n".to_vec()].concat(), "bencode: 1 bytes after the value, from byte 171"),
            (torrent(DictBuilder::new().int("announce", 1)), ""),
            (
                torrent(DictBuilder::new().insert("announce-list", Value::List(vec![Value::text("x")]))),
                "announce-list[0] is not a list",
            ),
            (
                torrent(
                    DictBuilder::new()
                        .insert("announce-list", Value::List(vec![Value::List(vec![Value::Bytes(b"\xff")])])),
                ),
                "announce-list[0][0] is not valid UTF-8",
            ),
            (torrent(DictBuilder::new().int("url-list", 1)), "url-list is not a byte string or a list"),
            (torrent(DictBuilder::new().text("creation date", "today")), "creation date is not an integer"),
        ];
        for (t, message) in cases {
            if message.is_empty() {
                assert_eq!(parse_torrent(&t).expect_err("refused").to_string(), "announce is not a byte string");
                continue;
            }
            assert_eq!(parse_torrent(&t).expect_err("refused").to_string(), message);
        }
    }

    #[test]
    fn made_torrents_parse_back() {
        let piece_length = PieceLength::new(16_384).expect("valid");
        let files =
            vec![(vec!["root".to_owned(), "a".to_owned()], 20_000), (vec!["root".into(), "d".into(), "b".into()], 0)];
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = PieceHasher::new(piece_length);
        hasher.update(&data);
        let pieces = hasher.finish();
        let expected: [[u8; 20]; 2] = [Sha1::digest(&data[..16_384]).into(), Sha1::digest(&data[16_384..]).into()];
        assert_eq!(pieces, expected);
        let info_bytes = make_v1_info("root", piece_length, &files, &pieces).expect("valid");
        let trackers = ["http://a/announce".to_owned(), "udp://b:1".to_owned()];
        let meta = parse_torrent(&make_torrent(&info_bytes, &trackers)).expect("valid");
        assert_eq!(meta.info.info_bytes, info_bytes);
        assert_eq!(paths(&meta.info), ["root/a", "root/d/b"]);
        assert_eq!(meta.announce, [vec!["http://a/announce"], vec!["udp://b:1"]]);
        assert_eq!(parse_torrent(&make_torrent(&info_bytes, &[])).expect("valid").announce, Vec::<Vec<String>>::new());

        let refused = |files: &[(Vec<String>, u64)], pieces: &[[u8; 20]]| {
            make_v1_info("root", piece_length, files, pieces).expect_err("refused").to_string()
        };
        assert_eq!(
            refused(&[(vec!["other".into(), "a".into()], 1)], &pieces[..1]),
            "file path \"other/a\" is not [name, dir..., file] for the torrent's name"
        );
        assert_eq!(
            refused(&[(vec!["root".into(), "..".into()], 1)], &pieces[..1]),
            "file path \"root/..\" has a \".\" or \"..\" component (path traversal)"
        );
        assert_eq!(
            refused(&files, &pieces[..1]),
            "info.pieces holds 1 piece hashes, but 20000 bytes in pieces of 16384 make 2"
        );
        assert_eq!(refused(&[], &[]), "info.files is empty");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn piece_hashes_do_not_depend_on_how_bytes_arrive(
            data in proptest::collection::vec(any::<u8>(), 0..70_000),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let piece_length = PieceLength::new(16_384).expect("valid");
            let mut whole = PieceHasher::new(piece_length);
            whole.update(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut split = PieceHasher::new(piece_length);
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                split.update(&data[from..cut]);
                from = cut;
            }
            prop_assert_eq!(split.total_length(), data.len() as u64);
            let expected: Vec<[u8; 20]> = data.chunks(16_384).map(|c| Sha1::digest(c).into()).collect();
            prop_assert_eq!(split.finish(), expected.clone());
            prop_assert_eq!(whole.finish(), expected);
        }

        #[test]
        fn mutated_torrents_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut data = match which {
                0 => torrent(DictBuilder::new().text("announce", "http://a/")),
                1 => encode(&DictBuilder::new().insert("info", hybrid().build()).build()),
                2 => encode(&DictBuilder::new().insert("info", v2_only().build()).build()),
                _ => encode(&DictBuilder::new().insert("info", multi().int("length", 3).remove("files").build()).build()),
            };
            for (at, value) in flips {
                let i = at % data.len();
                data[i] = value;
            }
            if let Ok(meta) = parse_torrent(&data) {
                prop_assert_eq!(parse_info(&meta.info.info_bytes), Ok(meta.info.clone()));
                prop_assert_eq!(meta.info.files.iter().map(|f| f.length).sum::<u64>(), meta.info.total_length);
            }
            let _ = parse_info(&data);
            let _ = parse_torrent(&data[..cut % data.len()]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_torrent(&bytes);
            let _ = parse_info(&bytes);
        }
    }
}
