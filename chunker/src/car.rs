//! CAR (content-addressed archive) files: a streaming reader for CARv1 and CARv2, and a CARv1 writer.
//!
//! A CARv1 is `varint(len) header` followed by sections `varint(len) cid block`, where the header is the
//! dag-cbor map `{"roots": [cid, ...], "version": 1}` and each CID is binary. A CARv2 starts with an 11-byte
//! pragma (itself a CARv1-style header `{"version": 2}`), then a 40-byte header giving the offset and size of
//! an inner CARv1 payload, which is what we read; the index that may follow the payload is ignored.
//! Specs: <https://ipld.io/specs/transport/car/carv1/> and <https://ipld.io/specs/transport/car/carv2/>.
//!
//! [`CarReader`] treats its input as hostile. It reads one section at a time from any [`std::io::Read`] (wrap
//! a file in a `BufReader`: the reader issues small reads), allocates at most [`MAX_HEADER_LEN`] or
//! [`MAX_SECTION_LEN`] bytes for any one item, rehashes every block against its CID with [`hash::verify`]
//! before handing it out, and reports every problem as a [`CarError`] that names the part of the file and the
//! byte offset (from the start of the input) where it was found. It never panics on input.
//!
//! [`CarWriter`] writes CARv1 only, byte for byte what go-car and kubo's `dag export` write for the same
//! roots and blocks in the same order: the header is canonical dag-cbor and varints are minimal.
//!
//! Invariant: every CAR that [`CarWriter`] produces, [`CarReader`] reads back to the same roots and blocks
//! (the writer refuses sections the reader would refuse).

use std::fmt;
use std::io::{self, Read, Write};

use cid::Cid;

use crate::hash::{self, VerifyError};
use crate::varint;

/// Largest CAR header we read, in bytes after the length varint. A header holds only roots, some 40 bytes
/// each, so a megabyte is about 25,000 of them; go-car's default limit (32 MiB) is far above anything a
/// real export writes. A root takes at least 8 bytes, so a header this size decodes to at most 131,072
/// roots: that, not the byte count, bounds the memory a hostile header costs (12 MiB of `Cid`s).
pub const MAX_HEADER_LEN: u64 = 1 << 20;

/// Largest CAR section we read or write, in bytes after the length varint: a 2 MiB block, the largest block
/// the node stores or sends over bitswap (DESIGN.md's block cap), plus 1 KiB for its CID. go-car's default
/// is 8 MiB, but a larger block could not travel anywhere once imported.
pub const MAX_SECTION_LEN: u64 = (2 << 20) + 1024;

/// The first 11 bytes of every CARv2 file: `varint(10)` and the dag-cbor map `{"version": 2}` (CARv2 spec).
pub const CARV2_PRAGMA: [u8; 11] = [0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02];

/// Length of the fixed CARv2 header after the pragma: 16 bytes of characteristics, then the data offset,
/// data size and index offset as little-endian u64s (CARv2 spec).
const CARV2_HEADER_LEN: usize = 40;

/// Longest varint we accept: 9 bytes carry 63 bits, go-varint's limit, which go-car uses.
const MAX_VARINT_LEN: u32 = 9;

/// The CBOR tag dag-cbor puts on a CID.
const CID_TAG: u64 = 42;

/// Fewest bytes one root takes in a header: tag 42 (2), byte string head (1), the 0x00 prefix (1) and the
/// shortest CID, v1 with one-byte codec, hash code and zero-length digest (4).
const MIN_ROOT_LEN: usize = 8;

/// CBOR major types (RFC 8949 §3.1).
const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;

/// The part of a CAR file an error was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The dag-cbor header (of a CARv1, of the payload inside a CARv2, or the CARv2 pragma).
    Header,
    /// The fixed 40-byte CARv2 header after the pragma.
    V2Header,
    /// The bytes between the CARv2 header and the data offset it names.
    V2Padding,
    /// The CARv1 payload of a CARv2, as long as the CARv2 header says it is.
    V2Data,
    /// One section: a CID and its block.
    Section,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::V2Header => "carv2 header",
            Self::V2Padding => "padding before the carv2 data",
            Self::V2Data => "carv2 data payload",
            Self::Section => "section",
        })
    }
}

/// Why a CAR header (or CARv2 pragma) was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("it ends in the middle of a cbor item")]
    Truncated,
    #[error("indefinite-length or reserved cbor item (initial byte {initial_byte:#04x}) is not dag-cbor")]
    UnsupportedCbor { initial_byte: u8 },
    #[error("it is not a cbor map")]
    NotAMap,
    #[error("a map key is not a text string")]
    KeyNotText,
    #[error("unknown key {key:?} (expected \"roots\" and \"version\")")]
    UnknownKey { key: String },
    #[error("key {key:?} appears twice")]
    DuplicateKey { key: &'static str },
    #[error("\"roots\" is not an array")]
    RootsNotArray,
    #[error("a root is not a cid (cbor tag 42 over a byte string starting with 0x00)")]
    RootNotCid,
    #[error("a root cid does not parse ({0})")]
    InvalidRootCid(cid::Error),
    #[error("a root cid is followed by stray bytes inside its byte string")]
    RootCidTrailingBytes,
    #[error("\"version\" is not an unsigned integer")]
    VersionNotInteger,
    #[error("\"roots\" is missing")]
    MissingRoots,
    #[error("\"version\" is missing")]
    MissingVersion,
    #[error("{len} bytes follow the header map")]
    TrailingBytes { len: usize },
    #[error("a carv2 pragma must not carry roots")]
    PragmaWithRoots,
    #[error("the payload of a carv2 is itself a carv2")]
    NestedV2,
}

/// Why reading a CAR file failed. Every variant carries the byte offset, from the start of the input, of
/// the item it is about: section errors point at the section's length varint.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("car read failed at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("car {part} at byte {offset} is truncated: expected {expected} bytes, got {got}")]
    Truncated { part: Part, offset: u64, expected: u64, got: u64 },
    #[error("length varint of car {part} at byte {offset} is truncated")]
    TruncatedVarint { part: Part, offset: u64 },
    #[error("length varint of car {part} at byte {offset} is longer than {MAX_VARINT_LEN} bytes")]
    VarintTooLong { part: Part, offset: u64 },
    #[error("length varint of car {part} at byte {offset} is not minimally encoded")]
    VarintNotMinimal { part: Part, offset: u64 },
    #[error("car header at byte {offset} claims {len} bytes, more than the limit of {MAX_HEADER_LEN}")]
    HeaderTooLarge { offset: u64, len: u64 },
    #[error("car header is invalid at byte {offset}: {reason}")]
    InvalidHeader { offset: u64, reason: HeaderError },
    #[error("car header at byte {offset} has version {version}, expected 1 or 2")]
    UnsupportedVersion { offset: u64, version: u64 },
    #[error(
        "carv2 header at byte {offset} puts {data_size} bytes of data at byte {data_offset}, \
         which is not past the header or overflows"
    )]
    InvalidV2Header { offset: u64, data_offset: u64, data_size: u64 },
    #[error("car section at byte {offset} is empty")]
    EmptySection { offset: u64 },
    #[error("car section at byte {offset} claims {len} bytes, more than the limit of {MAX_SECTION_LEN}")]
    SectionTooLarge { offset: u64, len: u64 },
    #[error("car section at byte {offset} does not start with a valid cid")]
    InvalidCid {
        offset: u64,
        #[source]
        source: cid::Error,
    },
    #[error("car section at byte {offset} holds a block that fails verification")]
    CorruptBlock {
        offset: u64,
        #[source]
        source: VerifyError,
    },
}

/// A streaming reader of CARv1 and CARv2 files that verifies every block.
///
/// Sections come out in file order, one [`next_block`](Self::next_block) at a time, or through the
/// [`Iterator`] impl. After the first error or the end of the data the reader is finished.
#[derive(Debug)]
pub struct CarReader<R: Read> {
    src: Source<R>,
    roots: Vec<Cid>,
    /// Where the CARv1 data starts: 0 for a CARv1, the data offset for a CARv2.
    data_start: u64,
    finished: bool,
}

impl<R: Read> CarReader<R> {
    /// Reads and validates the header (and for a CARv2, the pragma, the CARv2 header and the padding up to
    /// the data), leaving the reader at the first section.
    ///
    /// An empty root list is accepted: the CARv1 spec does not forbid it, and a CAR of loose blocks has no
    /// root to name (go-car's v1 reader refuses it by default; callers that need a root check
    /// [`roots`](Self::roots)).
    pub fn new(reader: R) -> Result<Self, CarError> {
        let mut src = Source { inner: reader, pos: 0, end: None };
        let (offset, header) = read_header(&mut src)?;
        let (roots, data_start) = match (header.version, header.roots) {
            (1, Some(roots)) => (roots, 0),
            (1, None) => return Err(invalid_header(offset, HeaderError::MissingRoots)),
            (2, None) => open_v2(&mut src)?,
            (2, Some(_)) => return Err(invalid_header(offset, HeaderError::PragmaWithRoots)),
            (version, _) => return Err(CarError::UnsupportedVersion { offset, version }),
        };
        Ok(Self { src, roots, data_start, finished: false })
    }

    /// The roots named by the header, in header order; may be empty.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Reads the next section and verifies its block against its CID.
    ///
    /// Returns `Ok(None)` at a clean end: the input ends exactly where a section would start (for a CARv2,
    /// exactly at the end of the data payload). A CARv1 cannot tell a file cut at a section boundary from a
    /// complete one, so such a cut reads as a shorter file; a CARv2 knows its data size and reports it.
    /// After an error or the end, every further call returns `Ok(None)`.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        if self.finished {
            return Ok(None);
        }
        let result = self.read_section();
        if !matches!(result, Ok(Some(_))) {
            self.finished = true;
        }
        result
    }

    fn read_section(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let offset = self.src.pos;
        let Some(len) = self.src.read_varint(Part::Section)? else {
            return match self.src.end {
                Some(end) if offset < end => Err(CarError::Truncated {
                    part: Part::V2Data,
                    offset: self.data_start,
                    expected: end - self.data_start,
                    got: offset - self.data_start,
                }),
                _ => Ok(None),
            };
        };
        if len == 0 {
            return Err(CarError::EmptySection { offset });
        }
        if len > MAX_SECTION_LEN {
            return Err(CarError::SectionTooLarge { offset, len });
        }
        let mut section = self.src.read_up_to(len, offset)?;
        let got = section.len() as u64; // usize to u64 widens on every platform Rust supports
        if got < len {
            return Err(CarError::Truncated { part: Part::Section, offset, expected: len, got });
        }
        let mut rest = section.as_slice();
        let cid = Cid::read_bytes(&mut rest).map_err(|source| CarError::InvalidCid { offset, source })?;
        hash::verify(&cid, rest).map_err(|source| CarError::CorruptBlock { offset, source })?;
        let cid_len = section.len() - rest.len();
        section.drain(..cid_len);
        Ok(Some((cid, section)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

impl<R: Read> std::iter::FusedIterator for CarReader<R> {}

/// A CAR header or CARv2 pragma with a version, before the version is interpreted.
struct Header {
    roots: Option<Vec<Cid>>,
    version: u64,
}

/// A decoded CAR header or CARv2 pragma, before any field is checked for presence.
struct RawHeader {
    roots: Option<Vec<Cid>>,
    version: Option<u64>,
}

/// Reads a length-prefixed dag-cbor header; returns its offset and its contents, whose version is present.
/// Errors about the header as a whole (a missing key, the version) point at its length varint; errors about
/// one item in it point at that item.
fn read_header<R: Read>(src: &mut Source<R>) -> Result<(u64, Header), CarError> {
    let offset = src.pos;
    let len = src.read_varint(Part::Header)?.ok_or(CarError::TruncatedVarint { part: Part::Header, offset })?;
    if len > MAX_HEADER_LEN {
        return Err(CarError::HeaderTooLarge { offset, len });
    }
    let body_start = src.pos;
    let body = src.read_up_to(len, offset)?;
    let got = body.len() as u64; // usize to u64 widens on every platform Rust supports
    if got < len {
        return Err(CarError::Truncated { part: Part::Header, offset, expected: len, got });
    }
    let header = decode_header(&body).map_err(|(at, reason)| CarError::InvalidHeader {
        offset: body_start.saturating_add(at as u64), // usize to u64 widens
        reason,
    })?;
    let version = header.version.ok_or_else(|| invalid_header(offset, HeaderError::MissingVersion))?;
    Ok((offset, Header { roots: header.roots, version }))
}

fn invalid_header(offset: u64, reason: HeaderError) -> CarError {
    CarError::InvalidHeader { offset, reason }
}

/// Reads the CARv2 header that follows the pragma, skips to the data and limits `src` to it, then reads the
/// inner CARv1 header. Returns its roots and the data offset.
fn open_v2<R: Read>(src: &mut Source<R>) -> Result<(Vec<Cid>, u64), CarError> {
    let offset = src.pos;
    let fixed = src.read_up_to(CARV2_HEADER_LEN as u64, offset)?;
    let Ok(fixed) = <[u8; CARV2_HEADER_LEN]>::try_from(fixed.as_slice()) else {
        return Err(CarError::Truncated {
            part: Part::V2Header,
            offset,
            expected: CARV2_HEADER_LEN as u64,
            got: fixed.len() as u64,
        });
    };
    // Bytes 0..16 are characteristics (bit 0: fully indexed) and 32..40 the index offset: neither matters
    // to a sequential reader.
    let data_offset = le_u64(&fixed, 16);
    let data_size = le_u64(&fixed, 24);
    let data_end = data_offset.checked_add(data_size).filter(|_| data_offset >= src.pos);
    let Some(data_end) = data_end else {
        return Err(CarError::InvalidV2Header { offset, data_offset, data_size });
    };
    let padding_at = src.pos;
    let padding = data_offset - padding_at;
    let skipped = src.skip(padding)?;
    if skipped < padding {
        return Err(CarError::Truncated { part: Part::V2Padding, offset: padding_at, expected: padding, got: skipped });
    }
    src.end = Some(data_end);
    let (inner_offset, inner) = read_header(src)?;
    match (inner.version, inner.roots) {
        (1, Some(roots)) => Ok((roots, data_offset)),
        (1, None) => Err(invalid_header(inner_offset, HeaderError::MissingRoots)),
        (2, _) => Err(invalid_header(inner_offset, HeaderError::NestedV2)),
        (version, _) => Err(CarError::UnsupportedVersion { offset: inner_offset, version }),
    }
}

fn le_u64(bytes: &[u8; CARV2_HEADER_LEN], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The input, with the count of bytes consumed so far and, inside a CARv2, the end of the data payload.
#[derive(Debug)]
struct Source<R> {
    inner: R,
    pos: u64,
    /// Reads stop here as if the input ended (the end of a CARv2's data payload).
    end: Option<u64>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buf = match self.end {
            Some(end) => {
                let left = usize::try_from(end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
                let len = buf.len().min(left);
                &mut buf[..len]
            }
            None => buf,
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        // A reader claiming more than it was given breaks the `Read` contract; clamp instead of trusting it.
        let n = n.min(buf.len());
        self.pos = self.pos.saturating_add(n as u64); // usize to u64 widens
        Ok(n)
    }
}

impl<R: Read> Source<R> {
    /// Reads one byte; `None` at the end of the input.
    fn read_byte(&mut self) -> Result<Option<u8>, CarError> {
        let mut byte = [0];
        loop {
            match self.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CarError::Io { offset: self.pos, source });
                }
            }
        }
    }

    /// Reads a minimal unsigned varint of at most 9 bytes (go-varint's rules, which go-car applies; stricter
    /// than [`varint::decode`], and read byte by byte from the stream); `None` if the input ends before its
    /// first byte.
    fn read_varint(&mut self, part: Part) -> Result<Option<u64>, CarError> {
        let offset = self.pos;
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let Some(byte) = self.read_byte()? else {
                return if i == 0 { Ok(None) } else { Err(CarError::TruncatedVarint { part, offset }) };
            };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                // A final zero byte after the first adds nothing: a shorter encoding exists.
                if byte == 0 && i > 0 {
                    return Err(CarError::VarintNotMinimal { part, offset });
                }
                return Ok(Some(value));
            }
        }
        Err(CarError::VarintTooLong { part, offset })
    }

    /// Reads `len` bytes, or fewer if the input ends first. `len` must be within a cap the caller checked;
    /// the buffer grows as bytes arrive, so a short input never costs the full claimed length.
    fn read_up_to(&mut self, len: u64, offset: u64) -> Result<Vec<u8>, CarError> {
        const STEP: usize = 64 * 1024;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut buf = Vec::new();
        while buf.len() < len {
            let start = buf.len();
            let step = STEP.min(len - start);
            buf.reserve_exact(step);
            buf.resize(start + step, 0);
            let n = loop {
                match self.read(&mut buf[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(CarError::Io { offset, source }),
                }
            };
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
        }
        Ok(buf)
    }

    /// Reads and drops `len` bytes; returns how many there were (fewer if the input ends first).
    fn skip(&mut self, len: u64) -> Result<u64, CarError> {
        let offset = self.pos;
        io::copy(&mut Read::take(&mut *self, len), &mut io::sink()).map_err(|source| CarError::Io { offset, source })
    }
}

type CborResult<T> = Result<T, (usize, HeaderError)>;

/// A decoder for the small subset of dag-cbor a CAR header uses; errors carry the position of the item.
struct Cbor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    fn take(&mut self, len: u64) -> CborResult<&'a [u8]> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let bytes =
            usize::try_from(len).ok().and_then(|len| rest.get(..len)).ok_or((self.pos, HeaderError::Truncated))?;
        self.pos += bytes.len();
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> CborResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    /// Reads an item head: its major type and argument (RFC 8949 §3). Indefinite lengths are refused, as
    /// dag-cbor forbids them.
    fn head(&mut self) -> CborResult<(u8, u64)> {
        let at = self.pos;
        let [initial] = self.array::<1>()?;
        let arg = match initial & 0x1f {
            info @ 0..=23 => u64::from(info),
            24 => u64::from(u8::from_be_bytes(self.array()?)),
            25 => u64::from(u16::from_be_bytes(self.array()?)),
            26 => u64::from(u32::from_be_bytes(self.array()?)),
            27 => u64::from_be_bytes(self.array()?),
            _ => {
                return Err((at, HeaderError::UnsupportedCbor { initial_byte: initial }));
            }
        };
        Ok((initial >> 5, arg))
    }

    fn roots(&mut self) -> CborResult<Vec<Cid>> {
        let at = self.pos;
        let (major, count) = self.head()?;
        if major != MAJOR_ARRAY {
            return Err((at, HeaderError::RootsNotArray));
        }
        // `count` is a claim; the bytes left are a fact. Capping by what the rest of the header could hold
        // keeps the capacity exact for an honest header and bounded for a lying one.
        let left = self.buf.len().saturating_sub(self.pos);
        let mut roots = Vec::with_capacity(usize::try_from(count).unwrap_or(usize::MAX).min(left / MIN_ROOT_LEN));
        for _ in 0..count {
            let at = self.pos;
            let not_cid = (at, HeaderError::RootNotCid);
            if self.head()? != (MAJOR_TAG, CID_TAG) {
                return Err(not_cid);
            }
            let (major, len) = self.head()?;
            if major != MAJOR_BYTES {
                return Err(not_cid);
            }
            let Some((0x00, mut bytes)) = self.take(len)?.split_first() else {
                return Err(not_cid);
            };
            let cid = Cid::read_bytes(&mut bytes).map_err(|e| (at, HeaderError::InvalidRootCid(e)))?;
            if !bytes.is_empty() {
                return Err((at, HeaderError::RootCidTrailingBytes));
            }
            roots.push(cid);
        }
        Ok(roots)
    }
}

/// Decodes `{"roots": [cid, ...], "version": n}`. Keys may come in any order; unknown or repeated keys are
/// refused (the header has exactly these two fields in both CAR specs).
fn decode_header(buf: &[u8]) -> CborResult<RawHeader> {
    let mut cbor = Cbor { buf, pos: 0 };
    let (major, entries) = cbor.head()?;
    if major != MAJOR_MAP {
        return Err((0, HeaderError::NotAMap));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..entries {
        let key_at = cbor.pos;
        let (major, len) = cbor.head()?;
        if major != MAJOR_TEXT {
            return Err((key_at, HeaderError::KeyNotText));
        }
        match cbor.take(len)? {
            b"roots" if roots.is_some() => {
                return Err((key_at, HeaderError::DuplicateKey { key: "roots" }));
            }
            b"roots" => roots = Some(cbor.roots()?),
            b"version" if version.is_some() => {
                return Err((key_at, HeaderError::DuplicateKey { key: "version" }));
            }
            b"version" => {
                let at = cbor.pos;
                match cbor.head()? {
                    (MAJOR_UINT, v) => version = Some(v),
                    _ => return Err((at, HeaderError::VersionNotInteger)),
                }
            }
            other => {
                let key = String::from_utf8_lossy(&other[..other.len().min(64)]).into_owned();
                return Err((key_at, HeaderError::UnknownKey { key }));
            }
        }
    }
    if cbor.pos < buf.len() {
        return Err((cbor.pos, HeaderError::TrailingBytes { len: buf.len() - cbor.pos }));
    }
    Ok(RawHeader { roots, version })
}

/// Appends a CBOR item head in its shortest form, as dag-cbor requires.
fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let major = major << 5;
    if let Ok(arg) = u8::try_from(arg) {
        if arg < 24 {
            out.push(major | arg);
        } else {
            out.extend_from_slice(&[major | 24, arg]);
        }
    } else if let Ok(arg) = u16::try_from(arg) {
        out.push(major | 25);
        out.extend_from_slice(&arg.to_be_bytes());
    } else if let Ok(arg) = u32::try_from(arg) {
        out.push(major | 26);
        out.extend_from_slice(&arg.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_head(out, MAJOR_TEXT, text.len() as u64); // usize to u64 widens
    out.extend_from_slice(text.as_bytes());
}

/// The CARv1 header for `roots`: `varint(len)` and the canonical dag-cbor map
/// `{"roots": [cid, ...], "version": 1}`, the bytes go-car writes.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut cbor = Vec::new();
    put_head(&mut cbor, MAJOR_MAP, 2);
    // dag-cbor sorts map keys by length, then bytewise: "roots" before "version".
    put_text(&mut cbor, "roots");
    put_head(&mut cbor, MAJOR_ARRAY, roots.len() as u64); // usize to u64 widens
    for root in roots {
        let bytes = root.to_bytes();
        put_head(&mut cbor, MAJOR_TAG, CID_TAG);
        // The leading 0x00 is the multibase prefix for raw binary, which dag-cbor puts before every CID.
        put_head(&mut cbor, MAJOR_BYTES, bytes.len() as u64 + 1);
        cbor.push(0x00);
        cbor.extend_from_slice(&bytes);
    }
    put_text(&mut cbor, "version");
    put_head(&mut cbor, MAJOR_UINT, 1);

    let mut out = Vec::with_capacity(cbor.len() + 4);
    varint::encode(cbor.len() as u64, &mut out); // usize to u64 widens
    out.extend_from_slice(&cbor);
    out
}

/// A CARv1 writer: the header at creation, then one section per [`write_block`](Self::write_block).
///
/// It writes straight to `W` with two writes per block; wrap files in a `BufWriter`.
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    writer: W,
    /// The length varint and CID of the section being written, reused between blocks.
    prefix: Vec<u8>,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots` (see [`encode_header`]).
    pub fn new(mut writer: W, roots: &[Cid]) -> io::Result<Self> {
        writer.write_all(&encode_header(roots))?;
        Ok(Self { writer, prefix: Vec::new() })
    }

    /// Writes one section. The caller vouches that `data` hashes to `cid`: the writer does not rehash.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] for a section longer than [`MAX_SECTION_LEN`], which
    /// [`CarReader`] would refuse.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> io::Result<()> {
        let len = cid.encoded_len().saturating_add(data.len()) as u64; // usize to u64 widens
        if len > MAX_SECTION_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("car section for block {cid} would be {len} bytes, more than the limit of {MAX_SECTION_LEN}"),
            ));
        }
        self.prefix.clear();
        varint::encode(len, &mut self.prefix);
        cid.write_bytes(&mut self.prefix).map_err(io::Error::other)?;
        self.writer.write_all(&self.prefix)?;
        self.writer.write_all(data)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.writer.flush()?;
        Ok(self.writer)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    use super::*;
    use crate::hash::HashFunction;

    const RAW: u64 = 0x55;
    const DAG_PB: u64 = 0x70;

    type Blocks = Vec<(Cid, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> Result<(Vec<Cid>, Blocks), CarError> {
        let reader = CarReader::new(bytes)?;
        let roots = reader.roots().to_vec();
        let blocks = reader.collect::<Result<Vec<_>, _>>()?;
        Ok((roots, blocks))
    }

    fn write_all(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let mut writer = CarWriter::new(Vec::new(), roots).expect("writing to a vec cannot fail");
        for (cid, data) in blocks {
            writer.write_block(cid, data).expect("block within the section limit");
        }
        writer.finish().expect("flushing a vec cannot fail")
    }

    fn block(codec: u64, f: HashFunction, data: &[u8]) -> (Cid, Vec<u8>) {
        (Cid::new_v1(codec, f.digest(data)), data.to_vec())
    }

    fn identity_block(data: &[u8]) -> (Cid, Vec<u8>) {
        let mh = hash::identity(data).expect("small enough for an identity multihash");
        (Cid::new_v1(RAW, mh), data.to_vec())
    }

    fn uvarint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint::encode(value, &mut out);
        out
    }

    /// One section as go-car writes it: `varint(len) cid data`.
    fn section(cid: &Cid, data: &[u8]) -> Vec<u8> {
        let body = [cid.to_bytes(), data.to_vec()].concat();
        [uvarint(body.len() as u64), body].concat()
    }

    /// A header from raw dag-cbor bytes.
    fn raw_header(cbor: &[u8]) -> Vec<u8> {
        [uvarint(cbor.len() as u64), cbor.to_vec()].concat()
    }

    fn text(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_text(&mut out, s);
        out
    }

    /// A CARv2 around `v1`: pragma, header, `padding` junk bytes, the payload, then junk standing in for an
    /// index. `data_size` overrides the payload length the header claims.
    fn wrap_v2(v1: &[u8], padding: usize, data_size: Option<u64>) -> Vec<u8> {
        let data_offset = (CARV2_PRAGMA.len() + CARV2_HEADER_LEN + padding) as u64;
        let data_size = data_size.unwrap_or(v1.len() as u64);
        let mut out = CARV2_PRAGMA.to_vec();
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&data_offset.to_le_bytes());
        out.extend_from_slice(&data_size.to_le_bytes());
        out.extend_from_slice(&(data_offset + v1.len() as u64).to_le_bytes());
        out.extend(std::iter::repeat_n(0xee, padding));
        out.extend_from_slice(v1);
        out.extend_from_slice(b"\x01not an index, never read");
        out
    }

    fn sample_blocks() -> Blocks {
        vec![
            block(RAW, HashFunction::Sha2_256, b""),
            block(RAW, HashFunction::Sha2_256, b"hello"),
            (
                Cid::new_v0(HashFunction::Sha2_256.digest(b"\x0a\x02\x08\x01")).expect("sha2-256"),
                b"\x0a\x02\x08\x01".to_vec(),
            ),
            block(DAG_PB, HashFunction::Blake3, b"blake3 block"),
            block(RAW, HashFunction::Sha2_512, &[7; 1000]),
            block(RAW, HashFunction::Blake2b256, &[1; 300]),
            identity_block(b"inline"),
            identity_block(b""),
        ]
    }

    #[test]
    fn round_trip_keeps_roots_and_blocks() {
        let blocks = sample_blocks();
        let roots = [blocks[2].0, blocks[1].0];
        for roots in [&roots[..], &roots[..1], &[]] {
            let car = write_all(roots, &blocks);
            let (read_roots, read_blocks) = read_all(&car).expect("a car we wrote reads back");
            assert_eq!(read_roots, roots);
            assert_eq!(read_blocks, blocks);
        }
    }

    #[test]
    fn largest_section_round_trips_and_one_more_byte_is_refused() {
        let cid = Cid::new_v1(RAW, HashFunction::Sha2_256.digest(b"x"));
        let max_data = MAX_SECTION_LEN as usize - cid.encoded_len();
        let data = vec![0xab; max_data];
        let big = block(RAW, HashFunction::Sha2_256, &data);
        let car = write_all(&[big.0], std::slice::from_ref(&big));
        let (_, blocks) = read_all(&car).expect("largest section reads");
        assert_eq!(blocks, vec![big]);

        let too_big = block(RAW, HashFunction::Sha2_256, &vec![0xab; max_data + 1]);
        let mut writer = CarWriter::new(Vec::new(), &[]).expect("vec");
        let err = writer.write_block(&too_big.0, &too_big.1).expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// The most roots that fit under [`MAX_HEADER_LEN`] read; one more root puts the header over it.
    #[test]
    fn header_limit_holds_the_smallest_roots() {
        let smallest = Cid::new_v1(0x00, hash::identity(b"").expect("empty identity"));
        assert_eq!(smallest.to_bytes().len() + 4, MIN_ROOT_LEN);
        // 21 bytes of map, keys, array head and version around the roots.
        let fits = usize::try_from((MAX_HEADER_LEN - 21) / MIN_ROOT_LEN as u64).expect("small");
        let roots = vec![smallest; fits];
        let (read_roots, _) = read_all(&encode_header(&roots)).expect("header at the limit");
        assert_eq!(read_roots.len(), fits);

        let over = encode_header(&vec![smallest; fits + 1]);
        let err = read_all(&over).expect_err("header over the limit");
        assert!(matches!(err, CarError::HeaderTooLarge { offset: 0, len } if len > MAX_HEADER_LEN), "{err}");
    }

    #[test]
    fn empty_car_has_no_blocks() {
        let (roots, blocks) = read_all(&encode_header(&[])).expect("header only");
        assert!(roots.is_empty());
        assert!(blocks.is_empty());
    }

    fn conformance_dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/gateway-conformance"))
    }

    fn car_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                car_files(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "car") {
                out.push(path);
            }
        }
    }

    /// The header go-car wrote for the gateway conformance "Simple Directory" fixture, whose root the
    /// UnixFS spec names.
    #[test]
    fn header_matches_go_car_for_dir_with_files() {
        let file = std::fs::read(conformance_dir().join("path_gateway_unixfs/dir-with-files.car")).expect("fixture");
        let root: Cid = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy".parse().expect("cid");
        let header = encode_header(&[root]);
        assert_eq!(header.len(), 59);
        assert_eq!(header, file[..header.len()]);
    }

    /// Every conformance CAR (written by go-car) reads with every block verified, and writing its roots and
    /// blocks back gives the same bytes.
    #[test]
    fn conformance_cars_read_and_rewrite_byte_for_byte() {
        let mut files = Vec::new();
        car_files(&conformance_dir(), &mut files);
        files.sort();
        assert!(files.len() >= 26, "expected the 26 conformance cars, found {}", files.len());
        let mut rewritten = 0;
        for path in &files {
            let bytes = std::fs::read(path).expect("fixture");
            let (roots, blocks) = read_all(&bytes).unwrap_or_else(|e| panic!("{}: {e} ({:?})", path.display(), e));
            assert!(!roots.is_empty(), "{}: no roots", path.display());
            assert!(!blocks.is_empty(), "{}: no blocks", path.display());
            if !bytes.starts_with(&CARV2_PRAGMA) {
                assert!(write_all(&roots, &blocks) == bytes, "{}: rewrite differs", path.display());
                rewritten += 1;
            }
        }
        assert_eq!(rewritten, files.len(), "all conformance cars are carv1");
    }

    #[test]
    fn carv2_reads_its_payload_only() {
        let v1 = std::fs::read(conformance_dir().join("path_gateway_unixfs/dir-with-files.car")).expect("fixture");
        let expected = read_all(&v1).expect("fixture reads");
        for padding in [0, 1, 100, 70_000] {
            let v2 = wrap_v2(&v1, padding, None);
            let got = read_all(&v2).expect("carv2 reads");
            assert_eq!(got, expected, "padding {padding}");
        }
    }

    /// Outside-controlled bytes for the malformed-input table: one valid root and block.
    struct Parts {
        header: Vec<u8>,
        cid: Cid,
        data: Vec<u8>,
        section: Vec<u8>,
    }

    fn parts() -> Parts {
        let (cid, data) = block(RAW, HashFunction::Sha2_256, b"some block bytes");
        Parts { header: encode_header(&[cid]), section: section(&cid, &data), cid, data }
    }

    type Want = Box<dyn Fn(&CarError) -> bool>;

    fn want(f: impl Fn(&CarError) -> bool + 'static) -> Want {
        Box::new(f)
    }

    /// Reads `input` to the end and checks the error is the expected one.
    fn check(name: &str, input: &[u8], want: Want) {
        match read_all(input) {
            Ok((roots, blocks)) => {
                panic!("{name}: read {} roots and {} blocks, expected an error", roots.len(), blocks.len())
            }
            Err(e) => assert!(want(&e), "{name}: unexpected error {e:?} ({e})"),
        }
    }

    fn malformed_cases() -> Vec<(&'static str, Vec<u8>, Want)> {
        let Parts { header, cid, data, section: good } = parts();
        // Offsets below are counted by hand from these lengths: a 59-byte header, then 53-byte sections.
        assert_eq!((header.len(), good.len()), (59, 53));
        let cid_bytes = cid.to_bytes();
        let roots_key = text("roots");
        let version_key = text("version");
        let root_item = [&[0xd8, 42, 0x58, cid_bytes.len() as u8 + 1, 0x00][..], &cid_bytes].concat();
        let one_root = [&[0x81][..], &root_item].concat();
        let map2 = |k1: &[u8], v1: &[u8], k2: &[u8], v2: &[u8]| raw_header(&[&[0xa2][..], k1, v1, k2, v2].concat());
        let mut corrupt = data.clone();
        corrupt[0] ^= 1;
        let md5 = Cid::new_v1(RAW, hash::Multihash::wrap(0xd5, &[0; 16]).expect("16 bytes"));
        let identity = identity_block(b"inline").0;
        let v1 = [header.clone(), good.clone()].concat();
        let v2_fixed = |data_offset: u64, data_size: u64| {
            [&CARV2_PRAGMA[..], &[0; 16], &data_offset.to_le_bytes(), &data_size.to_le_bytes(), &[0; 8]].concat()
        };
        let v2_data_at = (CARV2_PRAGMA.len() + CARV2_HEADER_LEN) as u64;
        vec![
            ("empty input", vec![], want(|e| matches!(e, CarError::TruncatedVarint { part: Part::Header, offset: 0 }))),
            (
                "header varint cut",
                vec![0x80],
                want(|e| matches!(e, CarError::TruncatedVarint { part: Part::Header, offset: 0 })),
            ),
            (
                "header varint of 10 bytes",
                [vec![0xff; 9], vec![0x01]].concat(),
                want(|e| matches!(e, CarError::VarintTooLong { part: Part::Header, offset: 0 })),
            ),
            (
                "header varint not minimal",
                vec![0xba, 0x00],
                want(|e| matches!(e, CarError::VarintNotMinimal { part: Part::Header, offset: 0 })),
            ),
            (
                "header over 1 MiB",
                uvarint(MAX_HEADER_LEN + 1),
                want(|e| matches!(e, CarError::HeaderTooLarge { offset: 0, len } if *len == MAX_HEADER_LEN + 1)),
            ),
            (
                "header cut",
                header[..20].to_vec(),
                want(|e| matches!(e, CarError::Truncated { part: Part::Header, offset: 0, expected: 58, got: 19 })),
            ),
            (
                "header of zero bytes",
                vec![0x00],
                want(|e| matches!(e, CarError::InvalidHeader { offset: 1, reason: HeaderError::Truncated })),
            ),
            (
                "header is an array",
                raw_header(&[0x80]),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 1, reason: HeaderError::NotAMap })),
            ),
            (
                "header indefinite map",
                raw_header(&[0xbf, 0xff]),
                want(|e| {
                    matches!(
                        e,
                        CarError::InvalidHeader {
                            offset: 1,
                            reason: HeaderError::UnsupportedCbor { initial_byte: 0xbf }
                        }
                    )
                }),
            ),
            (
                "header map claims more entries",
                raw_header(&[&[0xa3][..], &roots_key, &one_root, &version_key, &[0x01]].concat()),
                want(|e| matches!(e, CarError::InvalidHeader { reason: HeaderError::Truncated, .. })),
            ),
            (
                "missing roots",
                raw_header(&[&[0xa1][..], &version_key, &[0x01]].concat()),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 0, reason: HeaderError::MissingRoots })),
            ),
            (
                "missing version",
                raw_header(&[&[0xa1][..], &roots_key, &one_root].concat()),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 0, reason: HeaderError::MissingVersion })),
            ),
            (
                "integer key",
                raw_header(&[0xa1, 0x01, 0x01]),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 2, reason: HeaderError::KeyNotText })),
            ),
            (
                "unknown key",
                map2(&roots_key, &one_root, &text("extra"), &[0x01]),
                want(|e| match e {
                    CarError::InvalidHeader { offset: 50, reason: HeaderError::UnknownKey { key } } => key == "extra",
                    _ => false,
                }),
            ),
            (
                "duplicate version",
                map2(&version_key, &[0x01], &version_key, &[0x01]),
                want(|e| {
                    matches!(
                        e,
                        CarError::InvalidHeader { offset: 11, reason: HeaderError::DuplicateKey { key: "version" } }
                    )
                }),
            ),
            (
                "roots not an array",
                map2(&roots_key, &[0x01], &version_key, &[0x01]),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 8, reason: HeaderError::RootsNotArray })),
            ),
            (
                "root without tag 42",
                map2(&roots_key, &[&[0x81][..], &root_item[2..]].concat(), &version_key, &[0x01]),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 9, reason: HeaderError::RootNotCid })),
            ),
            (
                "root tag over text",
                map2(&roots_key, &[0x81, 0xd8, 42, 0x61, b'a'], &version_key, &[0x01]),
                want(|e| matches!(e, CarError::InvalidHeader { reason: HeaderError::RootNotCid, .. })),
            ),
            (
                "root without 0x00 prefix",
                map2(
                    &roots_key,
                    &[&[0x81, 0xd8, 42, 0x58, cid_bytes.len() as u8][..], &cid_bytes].concat(),
                    &version_key,
                    &[0x01],
                ),
                want(|e| matches!(e, CarError::InvalidHeader { reason: HeaderError::RootNotCid, .. })),
            ),
            (
                "root cid of version 3",
                map2(&roots_key, &[0x81, 0xd8, 42, 0x45, 0x00, 0x03, 0x55, 0x00, 0x00], &version_key, &[0x01]),
                want(|e| matches!(e, CarError::InvalidHeader { reason: HeaderError::InvalidRootCid(_), .. })),
            ),
            (
                "root cid with stray byte",
                map2(
                    &roots_key,
                    &[&[0x81, 0xd8, 42, 0x58, cid_bytes.len() as u8 + 2, 0x00][..], &cid_bytes, &[0x00]].concat(),
                    &version_key,
                    &[0x01],
                ),
                want(|e| matches!(e, CarError::InvalidHeader { reason: HeaderError::RootCidTrailingBytes, .. })),
            ),
            (
                "version is text",
                map2(&roots_key, &[0x80], &version_key, &text("1")),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 17, reason: HeaderError::VersionNotInteger })),
            ),
            (
                "version 3",
                map2(&roots_key, &[0x80], &version_key, &[0x03]),
                want(|e| matches!(e, CarError::UnsupportedVersion { offset: 0, version: 3 })),
            ),
            (
                "version 42 in two bytes",
                raw_header(&[&[0xa1][..], &version_key, &[0x18, 42]].concat()),
                want(|e| matches!(e, CarError::UnsupportedVersion { offset: 0, version: 42 })),
            ),
            (
                "stray byte after the map",
                raw_header(&[&header[1..], &[0x00][..]].concat()),
                want(|e| {
                    matches!(e, CarError::InvalidHeader { offset: 59, reason: HeaderError::TrailingBytes { len: 1 } })
                }),
            ),
            (
                "pragma with roots",
                map2(&roots_key, &[0x80], &version_key, &[0x02]),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 0, reason: HeaderError::PragmaWithRoots })),
            ),
            (
                "section varint cut",
                [header.clone(), vec![0x80]].concat(),
                want(|e| matches!(e, CarError::TruncatedVarint { part: Part::Section, offset: 59 })),
            ),
            (
                "section varint of 10 bytes",
                [header.clone(), vec![0x80; 9], vec![0x01]].concat(),
                want(|e| matches!(e, CarError::VarintTooLong { part: Part::Section, offset: 59 })),
            ),
            (
                "section varint not minimal",
                [header.clone(), vec![0x81, 0x80, 0x00]].concat(),
                want(|e| matches!(e, CarError::VarintNotMinimal { part: Part::Section, offset: 59 })),
            ),
            (
                "zero-length section",
                [header.clone(), vec![0x00]].concat(),
                want(|e| matches!(e, CarError::EmptySection { offset: 59 })),
            ),
            (
                "section over the limit",
                [header.clone(), uvarint(MAX_SECTION_LEN + 1)].concat(),
                want(|e| matches!(e, CarError::SectionTooLarge { offset: 59, len } if *len == MAX_SECTION_LEN + 1)),
            ),
            (
                "section claiming 2^63-1 bytes",
                [header.clone(), uvarint(u64::MAX >> 1)].concat(),
                want(|e| matches!(e, CarError::SectionTooLarge { .. })),
            ),
            (
                "section cut",
                [header.clone(), good[..good.len() - 3].to_vec()].concat(),
                want(|e| matches!(e, CarError::Truncated { part: Part::Section, offset: 59, expected: 52, got: 49 })),
            ),
            (
                "cid of version 3",
                [header.clone(), raw_header(&[0x03, 0x55, 0x12, 0x00])].concat(),
                want(|e| matches!(e, CarError::InvalidCid { .. })),
            ),
            (
                "cid longer than its section",
                [header.clone(), raw_header(&cid_bytes[..20])].concat(),
                want(|e| matches!(e, CarError::InvalidCid { offset: 59, .. })),
            ),
            (
                "block does not match its cid",
                [header.clone(), section(&cid, &corrupt)].concat(),
                want(|e| matches!(e, CarError::CorruptBlock { offset: 59, source: VerifyError::Mismatch { .. } })),
            ),
            (
                "block hashed with md5",
                [header.clone(), section(&md5, b"x")].concat(),
                want(|e| {
                    matches!(e, CarError::CorruptBlock { source: VerifyError::UnsupportedHash { code: 0xd5, .. }, .. })
                }),
            ),
            (
                "identity cid over other bytes",
                [header.clone(), section(&identity, b"outline")].concat(),
                want(|e| matches!(e, CarError::CorruptBlock { source: VerifyError::Mismatch { .. }, .. })),
            ),
            (
                "second section corrupt",
                [header.clone(), good.clone(), section(&cid, &corrupt)].concat(),
                want(|e| matches!(e, CarError::CorruptBlock { offset: 112, .. })),
            ),
            (
                "carv2 header cut",
                [&CARV2_PRAGMA[..], &[0; 39]].concat(),
                want(|e| matches!(e, CarError::Truncated { part: Part::V2Header, offset: 11, expected: 40, got: 39 })),
            ),
            (
                "carv2 data inside its header",
                [v2_fixed(50, 10), v1.clone()].concat(),
                want(|e| matches!(e, CarError::InvalidV2Header { offset: 11, data_offset: 50, data_size: 10 })),
            ),
            (
                "carv2 data end overflows",
                [v2_fixed(51, u64::MAX), v1.clone()].concat(),
                want(|e| matches!(e, CarError::InvalidV2Header { offset: 11, .. })),
            ),
            (
                "carv2 padding cut",
                [v2_fixed(1000, 10), vec![0; 100]].concat(),
                want(|e| {
                    matches!(e, CarError::Truncated { part: Part::V2Padding, offset: 51, expected: 949, got: 100 })
                }),
            ),
            (
                "carv2 data shorter than its size",
                [v2_fixed(v2_data_at, v1.len() as u64 + 10), v1.clone()].concat(),
                want(|e| matches!(e, CarError::Truncated { part: Part::V2Data, offset: 51, expected: 122, got: 112 })),
            ),
            (
                "carv2 size ends inside a section",
                wrap_v2(&v1, 0, Some(v1.len() as u64 - 1)),
                want(|e| matches!(e, CarError::Truncated { part: Part::Section, offset: 110, expected: 52, got: 51 })),
            ),
            (
                "carv2 size ends inside the header",
                wrap_v2(&v1, 0, Some(10)),
                want(|e| matches!(e, CarError::Truncated { part: Part::Header, offset: 51, expected: 58, got: 9 })),
            ),
            (
                "carv2 inside carv2",
                wrap_v2(&wrap_v2(&v1, 0, None), 0, None),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 51, reason: HeaderError::NestedV2 })),
            ),
            (
                "carv2 payload of version 3",
                wrap_v2(&map2(&roots_key, &[0x80], &version_key, &[0x03]), 0, None),
                want(|e| matches!(e, CarError::UnsupportedVersion { offset: 51, version: 3 })),
            ),
            (
                "carv2 payload without roots",
                wrap_v2(&raw_header(&[&[0xa1][..], &version_key, &[0x01]].concat()), 0, None),
                want(|e| matches!(e, CarError::InvalidHeader { offset: 51, reason: HeaderError::MissingRoots })),
            ),
        ]
    }

    #[test]
    fn malformed_inputs_give_the_named_error() {
        for (name, input, want) in malformed_cases() {
            check(name, &input, want);
        }
    }

    #[test]
    fn errors_name_the_part_and_offset() {
        let Parts { header, section: good, .. } = parts();
        let car = [header.clone(), good[..good.len() - 3].to_vec()].concat();
        let err = read_all(&car).expect_err("cut section");
        assert_eq!(err.to_string(), "car section at byte 59 is truncated: expected 52 bytes, got 49");
    }

    #[test]
    fn reader_is_finished_after_an_error() {
        let Parts { header, section: good, .. } = parts();
        let car = [header, vec![0x00], good].concat();
        let mut reader = CarReader::new(car.as_slice()).expect("header");
        assert!(matches!(reader.next_block(), Err(CarError::EmptySection { .. })));
        assert!(matches!(reader.next_block(), Ok(None)));
        assert!(reader.next().is_none());
    }

    /// Arbitrary roots and blocks, each block named by its hash.
    fn arb_car() -> impl Strategy<Value = (Vec<Cid>, Blocks)> {
        let arb_block = (prop::collection::vec(any::<u8>(), 0..300), 0..4usize).prop_map(|(data, kind)| match kind {
            0 => block(RAW, HashFunction::Sha2_256, &data),
            1 => block(DAG_PB, HashFunction::Blake3, &data),
            2 => identity_block(&data[..data.len().min(64)]),
            _ => (Cid::new_v0(HashFunction::Sha2_256.digest(&data)).expect("sha2-256"), data),
        });
        (prop::collection::vec(arb_block, 0..6), 0..3usize).prop_map(|(blocks, n_roots)| {
            let roots = blocks.iter().take(n_roots).map(|(cid, _)| *cid).collect();
            (roots, blocks)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn arbitrary_sections_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048), v2 in any::<bool>()) {
            let car = [encode_header(&[]), tail].concat();
            let car = if v2 { wrap_v2(&car, 3, None) } else { car };
            let _ = read_all(&car);
        }

        #[test]
        fn read_inverts_write((roots, blocks) in arb_car()) {
            let car = write_all(&roots, &blocks);
            let got = read_all(&car).expect("a car we wrote reads back");
            prop_assert_eq!(got, (roots, blocks));
        }

        /// Cutting a CARv1 anywhere is an error, except exactly at a section boundary, where the format
        /// cannot tell the cut from the end: there it reads as the blocks before the cut. A CARv2 knows its
        /// data size, so any cut before the end of the data is an error.
        #[test]
        fn truncation_is_an_error_except_at_a_section_boundary((roots, blocks) in arb_car()) {
            let car = write_all(&roots, &blocks);
            let mut boundaries = vec![encode_header(&roots).len()];
            for (cid, data) in &blocks {
                let last = boundaries[boundaries.len() - 1];
                boundaries.push(last + section(cid, data).len());
            }
            prop_assert_eq!(boundaries[boundaries.len() - 1], car.len());
            for cut in 0..car.len() {
                match (read_all(&car[..cut]), boundaries.iter().position(|&b| b == cut)) {
                    (Ok((r, b)), Some(n)) => {
                        prop_assert_eq!(&r, &roots);
                        prop_assert_eq!(&b[..], &blocks[..n]);
                    }
                    (Err(_), None) => {}
                    (got, boundary) => {
                        let got = got.map(|(_, b)| b.len());
                        prop_assert!(false, "cut at {}: {:?} (boundary {:?})", cut, got, boundary);
                    }
                }
            }

            let v2 = wrap_v2(&car, 5, None);
            let data_end = CARV2_PRAGMA.len() + CARV2_HEADER_LEN + 5 + car.len();
            for cut in 0..data_end {
                prop_assert!(read_all(&v2[..cut]).is_err(), "carv2 cut at {}", cut);
            }
            prop_assert_eq!(read_all(&v2[..data_end]).ok(), Some((roots, blocks)));
        }
    }
}
