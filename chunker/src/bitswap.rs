//! Bitswap wire messages (`/ipfs/bitswap/1.2.0`, also 1.1.0 and 1.0.0): a strict protobuf decoder with
//! size caps, and the encoder.
//!
//! ```text
//! message Message {
//!   message Wantlist {
//!     message Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
//!                     WantType wantType = 4; bool sendDontHave = 5; }   // WantType: Block = 0, Have = 1
//!     repeated Entry entries = 1; bool full = 2;
//!   }
//!   message Block { bytes prefix = 1; bytes data = 2; }                // prefix: the CID without its digest
//!   message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; } // Have = 0, DontHave = 1
//!   Wantlist wantlist = 1;
//!   repeated bytes blocks = 2;          // 1.0.0: CIDv0 blocks
//!   repeated Block payload = 3;         // 1.1.0+
//!   repeated BlockPresence blockPresences = 4;
//!   int32 pendingBytes = 5;
//! }
//! ```
//!
//! Blocks arrive here unverified: the decoder rebuilds each block's CID from its prefix and the hash of its
//! bytes, so a block can never be filed under a CID it does not hash to.

use bytes::Bytes;

use crate::Cid;
use crate::dagpb::{DecodeError, Reader};
use crate::hash::HashFunction;
use crate::varint;

/// Largest message we write (kubo's limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest message we read. Helia 7 answers every want it holds in one message, whatever its size (16
/// blocks of 256 KiB already pass 4 MiB), so reads allow 16 MiB; our sessions keep no more than 12 MiB
/// outstanding per peer, and all inbound buffers share one memory budget.
pub const MAX_INBOUND_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest block we accept or send (kubo's and the spec's limit).
pub const MAX_BLOCK: usize = 2 * 1024 * 1024;
/// Most wantlist entries one message may carry.
pub const MAX_ENTRIES: usize = 8192;

const DAG_PB: u64 = 0x70;
const SHA2_256: u64 = 0x12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantType {
    Block,
    Have,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cid: Cid,
    pub priority: i32,
    pub cancel: bool,
    pub want_type: WantType,
    pub send_dont_have: bool,
}

impl Entry {
    pub fn want(cid: Cid, want_type: WantType, send_dont_have: bool) -> Self {
        Self { cid, priority: 1, cancel: false, want_type, send_dont_have }
    }

    pub fn cancel(cid: Cid) -> Self {
        Self { cid, priority: 0, cancel: true, want_type: WantType::Block, send_dont_have: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Have,
    DontHave,
}

/// One Bitswap message. `blocks` hold CIDs rebuilt from the received bytes (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub full: bool,
    pub wantlist: Vec<Entry>,
    pub blocks: Vec<(Cid, Bytes)>,
    pub presences: Vec<(Cid, Presence)>,
    pub pending_bytes: i32,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("bitswap message: {0} at byte {1}")]
    Malformed(&'static str, usize),
    #[error("bitswap message: {0} bytes is over the {MAX_INBOUND_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("bitswap message: a block of {0} bytes is over the {MAX_BLOCK}-byte limit")]
    BlockTooLarge(usize),
    #[error("bitswap message: more than {MAX_ENTRIES} wantlist entries")]
    TooManyEntries,
    #[error("bitswap message: invalid CID in {0}")]
    BadCid(&'static str),
    #[error("bitswap message: block prefix names unsupported hash function 0x{0:x}")]
    UnsupportedHash(u64),
}

impl From<DecodeError> for MessageError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Malformed(what, at) => Self::Malformed(what, at),
            _ => Self::Malformed("bad field", 0),
        }
    }
}

/// Which protocol version a stream speaks: 1.0.0 carries plain CIDv0 blocks and no presences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V100,
    V110,
    V120,
}

fn bool_field(r: &mut Reader<'_>) -> Result<bool, MessageError> {
    Ok(r.varint()? != 0)
}

fn cid_field(bytes: &[u8], what: &'static str) -> Result<Cid, MessageError> {
    Cid::try_from(bytes).map_err(|_| MessageError::BadCid(what))
}

impl Message {
    pub fn is_empty(&self) -> bool {
        self.wantlist.is_empty() && self.blocks.is_empty() && self.presences.is_empty() && !self.full
    }

    /// Decodes and checks a message body (without its length prefix). Blocks are copied out of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        Self::decode_with(buf, Bytes::copy_from_slice)
    }

    /// `decode` of a body held as `Bytes`: a block that fills at least a quarter of the body is a slice of
    /// it, not a copy. Smaller ones are copied, so a block kept (say, on its way to the store) keeps at most
    /// four times its own size alive, however a peer pads its message.
    pub fn decode_shared(body: &Bytes) -> Result<Self, MessageError> {
        Self::decode_with(body, |data| {
            if data.len().saturating_mul(4) >= body.len() { body.slice_ref(data) } else { Bytes::copy_from_slice(data) }
        })
    }

    fn decode_with(buf: &[u8], block: impl Fn(&[u8]) -> Bytes) -> Result<Self, MessageError> {
        if buf.len() > MAX_INBOUND_MESSAGE {
            return Err(MessageError::TooLarge(buf.len()));
        }
        let mut msg = Message::default();
        let mut r = Reader::new(buf);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 2) => msg.decode_wantlist(r.bytes()?)?,
                (2, 2) => {
                    let data = r.bytes()?;
                    check_block_size(data.len())?;
                    let mh = HashFunction::Sha2_256.digest(data);
                    msg.blocks.push((Cid::new_v0(mh).map_err(|_| MessageError::BadCid("block"))?, block(data)));
                }
                (3, 2) => {
                    let (cid, data) = decode_payload(r.bytes()?)?;
                    msg.blocks.push((cid, block(data)));
                }
                (4, 2) => {
                    let presence = decode_presence(r.bytes()?)?;
                    msg.presences.push(presence);
                }
                (5, 0) => msg.pending_bytes = r.varint()? as i32,
                (_, wire) => r.skip(wire)?,
            }
            if msg.wantlist.len() + msg.presences.len() > MAX_ENTRIES {
                return Err(MessageError::TooManyEntries);
            }
        }
        Ok(msg)
    }

    fn decode_wantlist(&mut self, buf: &[u8]) -> Result<(), MessageError> {
        let mut r = Reader::new(buf);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 2) => {
                    let entry = decode_entry(r.bytes()?)?;
                    if self.wantlist.len() >= MAX_ENTRIES {
                        return Err(MessageError::TooManyEntries);
                    }
                    self.wantlist.push(entry);
                }
                (2, 0) => self.full = bool_field(&mut r)?,
                (_, wire) => r.skip(wire)?,
            }
        }
        Ok(())
    }

    /// Encodes for a stream of the given version (1.0.0 cannot carry presences or non-v0 blocks; those are
    /// left out).
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        if !self.wantlist.is_empty() || self.full {
            let mut wl = Vec::new();
            for entry in &self.wantlist {
                let mut e = Vec::new();
                put_bytes(1, &entry.cid.to_bytes(), &mut e);
                if entry.priority != 0 {
                    put_varint(2, entry.priority as u32 as u64, &mut e);
                }
                if entry.cancel {
                    put_varint(3, 1, &mut e);
                }
                if version == Version::V120 {
                    if entry.want_type == WantType::Have {
                        put_varint(4, 1, &mut e);
                    }
                    if entry.send_dont_have {
                        put_varint(5, 1, &mut e);
                    }
                }
                put_bytes(1, &e, &mut wl);
            }
            if self.full {
                put_varint(2, 1, &mut wl);
            }
            put_bytes(1, &wl, &mut out);
        }
        for (cid, data) in &self.blocks {
            encode_block(version, cid, data, &mut out);
        }
        if version == Version::V120 {
            for (cid, presence) in &self.presences {
                let mut p = Vec::new();
                put_bytes(1, &cid.to_bytes(), &mut p);
                if *presence == Presence::DontHave {
                    put_varint(2, 1, &mut p);
                }
                put_bytes(4, &p, &mut out);
            }
        }
        if self.pending_bytes != 0 {
            put_varint(5, self.pending_bytes as u32 as u64, &mut out);
        }
        out
    }

    /// Roughly the encoded size, for batching.
    pub fn encoded_len_hint(&self) -> usize {
        self.blocks.iter().map(|(_, d)| d.len() + 16).sum::<usize>()
            + (self.wantlist.len() + self.presences.len()) * 48
            + 8
    }
}

/// Appends one block as a message of `version` carries it, a field of its own. Fields may come in any order,
/// so a sender can encode blocks as it reads them and send them after the rest of a message. 1.0.0 carries
/// CIDv0 blocks only; others are left out.
pub fn encode_block(version: Version, cid: &Cid, data: &[u8], out: &mut Vec<u8>) {
    if version == Version::V100 {
        if cid.version() == cid::Version::V0 {
            put_bytes(2, data, out);
        }
        return;
    }
    // The payload's header is written in place and the data copied once, straight into `out`.
    let prefix = prefix(cid);
    let payload_len = bytes_field_len(1, prefix.len()) + bytes_field_len(2, data.len());
    varint::encode((3 << 3) | 2, out);
    varint::encode(payload_len as u64, out);
    put_bytes(1, &prefix, out);
    put_bytes(2, data, out);
}

fn check_block_size(len: usize) -> Result<(), MessageError> {
    if len > MAX_BLOCK { Err(MessageError::BlockTooLarge(len)) } else { Ok(()) }
}

fn decode_entry(buf: &[u8]) -> Result<Entry, MessageError> {
    let mut r = Reader::new(buf);
    let mut cid = None;
    // Protobuf defaults: absent fields are zero.
    let mut entry = Entry { priority: 0, ..Entry::want(Cid::default(), WantType::Block, false) };
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => cid = Some(cid_field(r.bytes()?, "wantlist entry")?),
            (2, 0) => entry.priority = r.varint()? as i32,
            (3, 0) => entry.cancel = bool_field(&mut r)?,
            (4, 0) => entry.want_type = if r.varint()? == 1 { WantType::Have } else { WantType::Block },
            (5, 0) => entry.send_dont_have = bool_field(&mut r)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    entry.cid = cid.ok_or(MessageError::BadCid("wantlist entry (missing)"))?;
    Ok(entry)
}

fn decode_payload(buf: &[u8]) -> Result<(Cid, &[u8]), MessageError> {
    let mut r = Reader::new(buf);
    let (mut pre, mut data) = (None, None);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => pre = Some(r.bytes()?),
            (2, 2) => data = Some(r.bytes()?),
            (_, wire) => r.skip(wire)?,
        }
    }
    let pre = pre.ok_or(MessageError::Malformed("block without prefix", 0))?;
    let data = data.unwrap_or_default();
    check_block_size(data.len())?;
    Ok((cid_from_prefix(pre, data)?, data))
}

fn decode_presence(buf: &[u8]) -> Result<(Cid, Presence), MessageError> {
    let mut r = Reader::new(buf);
    let mut cid = None;
    let mut presence = Presence::Have;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => cid = Some(cid_field(r.bytes()?, "block presence")?),
            (2, 0) => presence = if r.varint()? == 1 { Presence::DontHave } else { Presence::Have },
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((cid.ok_or(MessageError::BadCid("block presence (missing)"))?, presence))
}

/// The CID prefix: version, codec, hash code and digest length, as varints.
pub fn prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let (version, codec) = match cid.version() {
        cid::Version::V0 => (0, DAG_PB),
        cid::Version::V1 => (1, cid.codec()),
    };
    varint::encode(version, &mut out);
    varint::encode(codec, &mut out);
    varint::encode(cid.hash().code(), &mut out);
    varint::encode(cid.hash().size() as u64, &mut out);
    out
}

/// Rebuilds a block's CID from its prefix by hashing the data: the result always matches the bytes.
fn cid_from_prefix(pre: &[u8], data: &[u8]) -> Result<Cid, MessageError> {
    let mut at = 0;
    let mut next = || -> Result<u64, MessageError> {
        let (v, n) = varint::decode(&pre[at..]).map_err(|_| MessageError::Malformed("bad block prefix", at))?;
        at += n;
        Ok(v)
    };
    let (version, codec, code, len) = (next()?, next()?, next()?, next()?);
    let hash = HashFunction::from_code(code).ok_or(MessageError::UnsupportedHash(code))?;
    let mh = hash.digest(data);
    if mh.size() as u64 != len {
        return Err(MessageError::Malformed("block prefix digest length does not match its hash", 0));
    }
    match version {
        0 if codec == DAG_PB && code == SHA2_256 => Cid::new_v0(mh).map_err(|_| MessageError::BadCid("block")),
        1 => Ok(Cid::new_v1(codec, mh)),
        _ => Err(MessageError::Malformed("bad CID version in block prefix", 0)),
    }
}

fn put_varint(field: u64, value: u64, out: &mut Vec<u8>) {
    varint::encode(field << 3, out);
    varint::encode(value, out);
}

/// The encoded size of a length-delimited field holding `len` bytes.
fn bytes_field_len(field: u64, len: usize) -> usize {
    varint::encoded_len((field << 3) | 2) + varint::encoded_len(len as u64) + len
}

fn put_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint::encode((field << 3) | 2, out);
    varint::encode(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::RAW;

    fn raw(data: &[u8]) -> Cid {
        Cid::new_v1(RAW, HashFunction::Sha2_256.digest(data))
    }

    fn v0(data: &[u8]) -> Cid {
        Cid::new_v0(HashFunction::Sha2_256.digest(data)).expect("v0")
    }

    #[test]
    fn round_trips_every_part() {
        let msg = Message {
            full: true,
            wantlist: vec![
                Entry::want(raw(b"a"), WantType::Have, true),
                Entry::want(v0(b"b"), WantType::Block, false),
                Entry::cancel(raw(b"c")),
            ],
            blocks: vec![(raw(b"hello"), Bytes::from_static(b"hello")), (v0(b"pb"), Bytes::from_static(b"pb"))],
            presences: vec![(raw(b"x"), Presence::Have), (raw(b"y"), Presence::DontHave)],
            pending_bytes: 7,
        };
        assert_eq!(Message::decode(&msg.encode(Version::V120)).expect("decode"), msg);
    }

    #[test]
    fn large_blocks_are_framed_as_protobuf_nests_them() {
        // Lengths from one to three varint bytes. The expected bytes are built the plain way: the payload
        // message encoded on its own, then wrapped as field 3.
        for len in [5usize, 200, 300 * 1024] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let cid = raw(&data);
            let msg = Message { blocks: vec![(cid, Bytes::from(data.clone()))], ..Default::default() };
            let mut payload = Vec::new();
            put_bytes(1, &prefix(&cid), &mut payload);
            put_bytes(2, &data, &mut payload);
            let mut expected = Vec::new();
            put_bytes(3, &payload, &mut expected);
            let encoded = msg.encode(Version::V120);
            assert_eq!(encoded, expected, "block of {len} bytes");
            assert_eq!(Message::decode(&encoded).expect("decode"), msg);
        }
    }

    #[test]
    fn shared_decoding_slices_big_blocks_and_copies_small_ones() {
        let big: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
        let msg = Message {
            blocks: vec![(raw(&big), Bytes::from(big.clone())), (raw(b"tiny"), Bytes::from_static(b"tiny"))],
            ..Default::default()
        };
        let body = Bytes::from(msg.encode(Version::V120));
        let decoded = Message::decode_shared(&body).expect("decode");
        assert_eq!(decoded, msg);
        let inside = |b: &Bytes| body.as_ptr_range().contains(&b.as_ptr());
        assert!(inside(&decoded.blocks[0].1), "a block filling most of the body is a slice of it");
        assert!(!inside(&decoded.blocks[1].1), "a block under a quarter of the body is a copy");
        // The same blocks through a body padded with an unknown field: now both are copies, so neither
        // keeps the padding alive.
        let mut padded = body.to_vec();
        put_bytes(9, &vec![0u8; 4 * body.len()], &mut padded);
        let padded = Bytes::from(padded);
        let decoded = Message::decode_shared(&padded).expect("decode");
        assert_eq!(decoded, msg);
        assert!(decoded.blocks.iter().all(|(_, b)| !padded.as_ptr_range().contains(&b.as_ptr())));
    }

    #[test]
    fn encode_block_writes_what_encode_writes() {
        let blocks = [(raw(b"r"), Bytes::from_static(b"r")), (v0(b"p"), Bytes::from_static(b"p"))];
        for version in [Version::V100, Version::V110, Version::V120] {
            let mut one_by_one = Vec::new();
            for (cid, data) in &blocks {
                encode_block(version, cid, data, &mut one_by_one);
            }
            let msg = Message { blocks: blocks.to_vec(), ..Default::default() };
            assert_eq!(one_by_one, msg.encode(version), "{version:?}");
        }
    }

    #[test]
    fn a_block_is_filed_under_the_hash_of_its_bytes() {
        // A peer claims "hello" under the prefix of a raw CID: the decoded CID is the one "hello" hashes to,
        // so it can only ever satisfy a want for that CID.
        let msg = Message { blocks: vec![(raw(b"other"), Bytes::from_static(b"hello"))], ..Default::default() };
        let decoded = Message::decode(&msg.encode(Version::V120)).expect("decode");
        assert_eq!(decoded.blocks[0].0, raw(b"hello"));
        assert_ne!(decoded.blocks[0].0, raw(b"other"));
    }

    #[test]
    fn version_one_carries_v0_blocks_only() {
        let msg = Message {
            blocks: vec![(raw(b"r"), Bytes::from_static(b"r")), (v0(b"p"), Bytes::from_static(b"p"))],
            presences: vec![(raw(b"x"), Presence::Have)],
            ..Default::default()
        };
        let decoded = Message::decode(&msg.encode(Version::V100)).expect("decode");
        assert_eq!(decoded.blocks, vec![(v0(b"p"), Bytes::from_static(b"p"))]);
        assert!(decoded.presences.is_empty());
    }

    #[test]
    fn refuses_oversized_and_malformed_input() {
        let big = vec![0u8; MAX_BLOCK + 1];
        let mut body = Vec::new();
        put_bytes(2, &big, &mut body);
        assert_eq!(Message::decode(&body), Err(MessageError::BlockTooLarge(MAX_BLOCK + 1)));
        let over = MAX_INBOUND_MESSAGE + 1;
        assert_eq!(Message::decode(&vec![0; over]), Err(MessageError::TooLarge(over)));
        assert!(Message::decode(&[0x0a, 0x05, 0x0a]).is_err(), "length past the end");
        let mut bad_cid = Vec::new();
        put_bytes(1, &[1, 2, 3], &mut bad_cid);
        let mut wl = Vec::new();
        put_bytes(1, &bad_cid, &mut wl);
        let mut body = Vec::new();
        put_bytes(1, &wl, &mut body);
        assert_eq!(Message::decode(&body), Err(MessageError::BadCid("wantlist entry")));
        let mut payload = Vec::new();
        put_bytes(1, &[1, 0x55, 0x99, 0x01, 32], &mut payload);
        let mut body = Vec::new();
        put_bytes(3, &payload, &mut body);
        assert!(matches!(Message::decode(&body), Err(MessageError::UnsupportedHash(_))));
    }

    #[test]
    fn too_many_entries_is_refused() {
        let entries: Vec<Entry> = (0..=MAX_ENTRIES as u32).map(|i| Entry::cancel(raw(&i.to_le_bytes()))).collect();
        let msg = Message { wantlist: entries, ..Default::default() };
        assert_eq!(Message::decode(&msg.encode(Version::V120)), Err(MessageError::TooManyEntries));
    }
}
