//! The dag-pb codec (multicodec 0x70): `PBNode { Links, Data }` in protobuf, encoded as the spec and kubo do.
//!
//! The byte-level rules that decide whether CIDs match kubo's: links are written before data (field 2 before
//! field 1), every link carries `Name` (possibly empty) and `Tsize`, and links keep the order the builder gave.
//! Decoding is strict (the dag-pb spec's rules) because its input comes from peers and files.

use cid::Cid;

use crate::varint;

/// Multicodec of dag-pb.
pub const CODEC: u64 = 0x70;

/// A link from a dag-pb node to another block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    pub hash: Cid,
    pub name: Option<String>,
    pub tsize: Option<u64>,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Vec<u8>>,
}

/// Why bytes are not a valid dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("dag-pb: {0} at byte {1}")]
    Malformed(&'static str, usize),
    #[error("dag-pb: link {index} has an invalid CID")]
    BadCid { index: usize },
    #[error("dag-pb: link {index} name is not UTF-8")]
    BadName { index: usize },
}

const WIRE_VARINT: u8 = 0;
const WIRE_LEN: u8 = 2;

fn put_key(field: u8, wire: u8, out: &mut Vec<u8>) {
    out.push((field << 3) | wire);
}

fn put_bytes(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(field, WIRE_LEN, out);
    varint::encode(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl PbLink {
    /// A link as kubo writes it: empty or given name, and a Tsize.
    pub fn new(hash: Cid, name: impl Into<String>, tsize: u64) -> Self {
        Self { hash, name: Some(name.into()), tsize: Some(tsize) }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        put_bytes(1, &self.hash.to_bytes(), out);
        if let Some(name) = &self.name {
            put_bytes(2, name.as_bytes(), out);
        }
        if let Some(tsize) = self.tsize {
            put_key(3, WIRE_VARINT, out);
            varint::encode(tsize, out);
        }
    }
}

impl PbNode {
    /// Serialises the node: links first, then data.
    pub fn encode(&self) -> Vec<u8> {
        let data_len = self.data.as_ref().map_or(0, |d| d.len() + 16);
        let mut out = Vec::with_capacity(data_len + self.links.len() * 56);
        let mut link_buf = Vec::with_capacity(64);
        for link in &self.links {
            link_buf.clear();
            link.encode_into(&mut link_buf);
            put_bytes(2, &link_buf, &mut out);
        }
        if let Some(data) = &self.data {
            put_bytes(1, data, &mut out);
        }
        out
    }

    /// Parses a dag-pb block under the spec's strict rules.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let node = PbNodeRef::decode(bytes)?;
        Ok(Self { links: node.links, data: node.data.map(<[u8]>::to_vec) })
    }
}

/// A decoded dag-pb node that borrows its Data field from the block (no copy of the payload).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNodeRef<'a> {
    pub links: Vec<PbLink>,
    pub data: Option<&'a [u8]>,
}

impl<'a> PbNodeRef<'a> {
    /// Parses a dag-pb block under the spec's strict rules.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut node = PbNodeRef::default();
        let mut reader = Reader { buf: bytes, pos: 0 };
        while !reader.done() {
            let at = reader.pos;
            let (field, wire) = reader.key()?;
            if wire != WIRE_LEN {
                return Err(DecodeError::Malformed("unexpected wire type in PBNode", at));
            }
            let body = reader.bytes()?;
            match field {
                1 => {
                    if node.data.is_some() {
                        return Err(DecodeError::Malformed("duplicate Data field", at));
                    }
                    node.data = Some(body);
                }
                2 => {
                    if node.data.is_some() {
                        return Err(DecodeError::Malformed("link after Data field", at));
                    }
                    let index = node.links.len();
                    node.links.push(decode_link(body, index, reader.pos - body.len())?);
                }
                _ => return Err(DecodeError::Malformed("unknown PBNode field", at)),
            }
        }
        Ok(node)
    }
}

fn decode_link(bytes: &[u8], index: usize, base: usize) -> Result<PbLink, DecodeError> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let mut hash = None;
    let mut name = None;
    let mut tsize = None;
    let mut last_field = 0;
    while !reader.done() {
        let at = base + reader.pos;
        let (field, wire) = reader.key().map_err(|e| rebase(e, base))?;
        if field <= last_field {
            return Err(DecodeError::Malformed("PBLink fields out of order or repeated", at));
        }
        last_field = field;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let raw = reader.bytes().map_err(|e| rebase(e, base))?;
                hash = Some(Cid::try_from(raw).map_err(|_| DecodeError::BadCid { index })?);
            }
            (2, WIRE_LEN) => {
                let raw = reader.bytes().map_err(|e| rebase(e, base))?;
                name = Some(String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadName { index })?);
            }
            (3, WIRE_VARINT) => tsize = Some(reader.varint().map_err(|e| rebase(e, base))?),
            _ => {
                return Err(DecodeError::Malformed("unknown PBLink field or wire type", at));
            }
        }
    }
    let hash = hash.ok_or(DecodeError::Malformed("PBLink without Hash", base))?;
    Ok(PbLink { hash, name, tsize })
}

fn rebase(e: DecodeError, base: usize) -> DecodeError {
    match e {
        DecodeError::Malformed(m, at) => DecodeError::Malformed(m, at + base),
        other => other,
    }
}

/// A cursor over protobuf bytes; shared with the UnixFS decoder and the node's Bitswap messages.
pub struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far (the offset reported in errors).
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) =
            varint::decode(&self.buf[self.pos..]).map_err(|_| DecodeError::Malformed("bad varint", self.pos))?;
        self.pos += n;
        Ok(v)
    }

    pub fn key(&mut self) -> Result<(u64, u8), DecodeError> {
        let at = self.pos;
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::Malformed("field number 0", at));
        }
        Ok((field, wire))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("length overflows", at))?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(DecodeError::Malformed("length runs past the end", at))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn fixed32(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        let end = self.pos + 4;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Malformed("truncated fixed32", at))?;
        self.pos = end;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Skips a field of the given wire type (used by lenient decoders for unknown fields).
    pub fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos = self
                    .pos
                    .checked_add(8)
                    .filter(|&e| e <= self.buf.len())
                    .ok_or(DecodeError::Malformed("truncated fixed64", at))?;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            5 => self.fixed32().map(|_| ()),
            _ => Err(DecodeError::Malformed("unsupported wire type", at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashFunction;

    fn sample_cid() -> Cid {
        Cid::new_v0(HashFunction::Sha2_256.digest(b"x")).expect("sha2-256 makes a v0 cid")
    }

    #[test]
    fn round_trip() {
        let node = PbNode {
            links: vec![PbLink::new(sample_cid(), "", 9), PbLink::new(sample_cid(), "b", 10)],
            data: Some(vec![8, 1]),
        };
        let bytes = node.encode();
        assert_eq!(PbNode::decode(&bytes), Ok(node));
    }

    #[test]
    fn links_come_before_data() {
        let node = PbNode { links: vec![PbLink::new(sample_cid(), "", 1)], data: Some(vec![1]) };
        assert_eq!(node.encode()[0], 0x12);
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&str, &[u8])] = &[
            ("unknown field", &[0x1a, 0x00]),
            ("truncated length", &[0x0a, 0x05, 0x01]),
            ("duplicate data", &[0x0a, 0x00, 0x0a, 0x00]),
            ("link after data", &[0x0a, 0x00, 0x12, 0x00]),
            ("link without hash", &[0x12, 0x00]),
            ("varint wire type", &[0x08, 0x01]),
        ];
        for (name, bytes) in cases {
            assert!(PbNode::decode(bytes).is_err(), "{name}");
        }
    }
}
