//! The UnixFS `Data` message carried in a dag-pb node's Data field, encoded field by field as kubo does.
//!
//! Encoding follows go-unixfs and the JavaScript importer byte for byte: fields in number order, `Data`
//! omitted when empty, `filesize` present on every file and raw node, `blocksizes` unpacked (one key per
//! value), `mode` omitted when it is the default for the node type. Decoding is lenient where real data
//! differs (packed blocksizes, unknown fields are skipped) and strict where it matters (required Type).

use crate::dagpb::{DecodeError, Reader};
use crate::varint;

/// UnixFS node types (unixfs.proto `DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
    Metadata = 3,
    Symlink = 4,
    HamtShard = 5,
}

impl DataType {
    fn from_u64(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Raw,
            1 => Self::Directory,
            2 => Self::File,
            3 => Self::Metadata,
            4 => Self::Symlink,
            5 => Self::HamtShard,
            _ => return None,
        })
    }

    /// Whether nodes of this type are directories.
    pub fn is_directory(self) -> bool {
        matches!(self, Self::Directory | Self::HamtShard)
    }
}

/// A modification time (unixfs.proto `UnixTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixTime {
    pub seconds: i64,
    pub nanos: Option<u32>,
}

/// Default permission bits of a file (unixfs spec).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Default permission bits of a directory (unixfs spec).
pub const DEFAULT_DIRECTORY_MODE: u32 = 0o755;
/// The HAMT hash function: murmur3-x64-64 (multicodec 0x22).
pub const HAMT_HASH_MURMUR3: u64 = 0x22;

/// The UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub kind: DataType,
    pub data: Option<Vec<u8>>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

impl Data {
    /// An empty message of the given type.
    pub fn new(kind: DataType) -> Self {
        DataRef::empty(kind).into_owned()
    }

    /// A plain directory node's data (`08 01`).
    pub fn directory() -> Self {
        Self::new(DataType::Directory)
    }

    /// Serialises the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.as_ref().map_or(0, Vec::len) + 16 + self.blocksizes.len() * 5);
        self.encode_into(&mut out);
        out
    }

    /// Serialises the message onto `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(0x08);
        varint::encode(self.kind as u64, out);
        if let Some(data) = self.data.as_deref().filter(|d| !d.is_empty()) {
            out.push(0x12);
            varint::encode(data.len() as u64, out);
            out.extend_from_slice(data);
        }
        if let Some(size) = self.filesize {
            out.push(0x18);
            varint::encode(size, out);
        }
        for &size in &self.blocksizes {
            out.push(0x20);
            varint::encode(size, out);
        }
        if let Some(h) = self.hash_type {
            out.push(0x28);
            varint::encode(h, out);
        }
        if let Some(f) = self.fanout {
            out.push(0x30);
            varint::encode(f, out);
        }
        let default_mode = if self.kind.is_directory() { DEFAULT_DIRECTORY_MODE } else { DEFAULT_FILE_MODE };
        if let Some(mode) = self.mode.filter(|&m| m != default_mode) {
            out.push(0x38);
            varint::encode(u64::from(mode), out);
        }
        if let Some(t) = self.mtime {
            let mut inner = Vec::with_capacity(16);
            inner.push(0x08);
            // int64 on the wire is the two's complement value as a 64-bit varint.
            varint::encode(t.seconds as u64, &mut inner);
            if let Some(n) = t.nanos.filter(|&n| n != 0) {
                inner.push(0x15);
                inner.extend_from_slice(&n.to_le_bytes());
            }
            out.push(0x42);
            varint::encode(inner.len() as u64, out);
            out.extend_from_slice(&inner);
        }
    }

    /// Parses a UnixFS `Data` message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        DataRef::decode(bytes).map(DataRef::into_owned)
    }
}

/// A decoded UnixFS `Data` message that borrows its payload (no copy of file bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRef<'a> {
    pub kind: DataType,
    pub data: Option<&'a [u8]>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

impl<'a> DataRef<'a> {
    /// An empty message of the given type.
    pub fn empty(kind: DataType) -> Self {
        Self {
            kind,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
            mode: None,
            mtime: None,
        }
    }

    /// Copies the payload out of the block.
    pub fn into_owned(self) -> Data {
        Data {
            kind: self.kind,
            data: self.data.map(<[u8]>::to_vec),
            filesize: self.filesize,
            blocksizes: self.blocksizes,
            hash_type: self.hash_type,
            fanout: self.fanout,
            mode: self.mode,
            mtime: self.mtime,
        }
    }

    /// Parses a UnixFS `Data` message.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader { buf: bytes, pos: 0 };
        let mut kind = None;
        let mut out = DataRef::empty(DataType::Raw);
        while !reader.done() {
            let at = reader.pos;
            let (field, wire) = reader.key()?;
            match (field, wire) {
                (1, 0) => {
                    let v = reader.varint()?;
                    kind = Some(DataType::from_u64(v).ok_or(DecodeError::Malformed("unknown UnixFS type", at))?);
                }
                (2, 2) => out.data = Some(reader.bytes()?),
                (3, 0) => out.filesize = Some(reader.varint()?),
                (4, 0) => out.blocksizes.push(reader.varint()?),
                (4, 2) => {
                    let packed = reader.bytes()?;
                    let mut inner = Reader { buf: packed, pos: 0 };
                    while !inner.done() {
                        out.blocksizes.push(inner.varint()?);
                    }
                }
                (5, 0) => out.hash_type = Some(reader.varint()?),
                (6, 0) => out.fanout = Some(reader.varint()?),
                (7, 0) => {
                    let mode = reader.varint()?;
                    out.mode = Some(u32::try_from(mode).map_err(|_| DecodeError::Malformed("mode overflows u32", at))?);
                }
                (8, 2) => out.mtime = Some(decode_time(reader.bytes()?, at)?),
                (_, wire) => reader.skip(wire)?,
            }
        }
        out.kind = kind.ok_or(DecodeError::Malformed("UnixFS Data without Type", 0))?;
        Ok(out)
    }
}

fn decode_time(bytes: &[u8], at: usize) -> Result<UnixTime, DecodeError> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let mut seconds = None;
    let mut nanos = None;
    while !reader.done() {
        match reader.key()? {
            (1, 0) => seconds = Some(reader.varint()? as i64),
            (2, 5) => {
                let n = reader.fixed32()?;
                if n >= 1_000_000_000 {
                    return Err(DecodeError::Malformed("mtime nanoseconds out of range", at));
                }
                nanos = Some(n);
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    let seconds = seconds.ok_or(DecodeError::Malformed("mtime without seconds", at))?;
    Ok(UnixTime { seconds, nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_two_bytes() {
        assert_eq!(Data::directory().encode(), [0x08, 0x01]);
    }

    #[test]
    fn round_trips_every_field() {
        let mut d = Data::new(DataType::File);
        d.data = Some(b"abc".to_vec());
        d.filesize = Some(300);
        d.blocksizes = vec![100, 200];
        d.mode = Some(0o600);
        d.mtime = Some(UnixTime { seconds: -5, nanos: Some(7) });
        assert_eq!(Data::decode(&d.encode()), Ok(d));
        let mut h = Data::new(DataType::HamtShard);
        h.data = Some(vec![1, 0]);
        h.hash_type = Some(HAMT_HASH_MURMUR3);
        h.fanout = Some(256);
        assert_eq!(Data::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn default_mode_is_omitted() {
        let mut d = Data::new(DataType::File);
        d.mode = Some(DEFAULT_FILE_MODE);
        assert_eq!(d.encode(), [0x08, 0x02]);
    }

    #[test]
    fn rejects_missing_or_unknown_type() {
        assert!(Data::decode(&[]).is_err());
        assert!(Data::decode(&[0x08, 0x09]).is_err());
        assert!(Data::decode(&[0x08]).is_err());
    }
}
