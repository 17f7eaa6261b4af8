//! The BitTorrent peer wire protocol (BEP 3), as far as a downloading peer needs it: the handshake, and
//! messages parsed in place from a receive buffer. Every length a peer sends is checked before it is
//! trusted, so a hostile peer gets an error naming what it did wrong, never a panic or an allocation of its
//! choosing.

/// The block size every client requests and serves (BEP 3 and libtorrent refuse larger requests).
pub(super) const BLOCK_LEN: u32 = 16 * 1024;
/// The handshake's length: 1 + 19 + 8 reserved + 20 infohash + 20 peer id.
pub(super) const HANDSHAKE_LEN: usize = 68;
const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

const CHOKE: u8 = 0;
const UNCHOKE: u8 = 1;
const INTERESTED: u8 = 2;
const NOT_INTERESTED: u8 = 3;
const HAVE: u8 = 4;
const BITFIELD: u8 = 5;
const REQUEST: u8 = 6;
const PIECE: u8 = 7;
const CANCEL: u8 = 8;
const EXTENDED: u8 = 20;
/// The id we give `ut_pex` in our extension handshake: peers send their PEX messages to us under it.
pub(super) const OUR_PEX_ID: u8 = 1;
/// Our extension handshake (BEP 10): only `ut_pex` (BEP 11), so peers tell us of other peers.
const EXTENSION_HANDSHAKE: &[u8] = b"d1:md6:ut_pexi1eee";
/// Peers taken from one PEX message; more are ignored.
const MAX_PEX_PEERS: usize = 100;

/// What a peer did wrong on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WireError {
    #[error("the handshake names protocol {0:?}, not \"BitTorrent protocol\"")]
    Protocol(String),
    #[error("the handshake is for another torrent (infohash {0})")]
    OtherTorrent(String),
    #[error("a message of {len} bytes is longer than the {max} this torrent allows")]
    TooLong { len: usize, max: usize },
    #[error("message {id} has {len} bytes of payload, which is wrong for it")]
    BadLength { id: u8, len: usize },
    #[error("the bitfield has {got} bytes for {pieces} pieces, or bits set past the last piece")]
    BadBitfield { got: usize, pieces: usize },
    #[error("piece {index} is past the torrent's last piece ({pieces} pieces)")]
    NoSuchPiece { index: u32, pieces: usize },
}

/// One message, borrowing from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    /// A BEP 10 message: `id` 0 is the peer's extension handshake, others the ids we announced.
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// Anything else (the DHT port, the fast extension's messages, ...): ignored.
    Other(u8),
}

/// Our handshake: the BEP 10 extension bit only (for PEX), so peers send no fast-extension messages.
pub(super) fn handshake(info_hash: &[u8; 20], peer_id: &[u8; 20]) -> [u8; HANDSHAKE_LEN] {
    let mut out = [0u8; HANDSHAKE_LEN];
    out[0] = PROTOCOL.len() as u8;
    out[1..20].copy_from_slice(PROTOCOL);
    out[25] = 0x10;
    out[28..48].copy_from_slice(info_hash);
    out[48..68].copy_from_slice(peer_id);
    out
}

/// Checks a peer's handshake against the torrent; returns its peer id.
pub(super) fn check_handshake(got: &[u8; HANDSHAKE_LEN], info_hash: &[u8; 20]) -> Result<[u8; 20], WireError> {
    if usize::from(got[0]) != PROTOCOL.len() || &got[1..20] != PROTOCOL {
        let n = usize::from(got[0]).min(HANDSHAKE_LEN - 1);
        return Err(WireError::Protocol(String::from_utf8_lossy(&got[1..1 + n]).into_owned()));
    }
    if &got[28..48] != info_hash {
        return Err(WireError::OtherTorrent(btfs_chunker::torrent::to_hex(&got[28..48])));
    }
    let mut id = [0u8; 20];
    id.copy_from_slice(&got[48..68]);
    Ok(id)
}

/// The longest message a peer of a torrent with `pieces` pieces may send: its bitfield, or a block.
pub(super) fn max_message_len(pieces: usize) -> usize {
    (1 + pieces.div_ceil(8)).max(9 + BLOCK_LEN as usize)
}

/// Parses the message at the start of `buf`: `Ok(None)` when it is not all there yet, else the message and
/// how many bytes it took.
pub(super) fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Message<'_>, usize)>, WireError> {
    let Some(prefix) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max_len {
        return Err(WireError::TooLong { len, max: max_len });
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let Some((&id, payload)) = body.split_first() else { return Ok(Some((Message::KeepAlive, 4))) };
    let want =
        |n: usize| if payload.len() == n { Ok(()) } else { Err(WireError::BadLength { id, len: payload.len() }) };
    let word = |at: usize| u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
    let message = match id {
        CHOKE => want(0).map(|()| Message::Choke)?,
        UNCHOKE => want(0).map(|()| Message::Unchoke)?,
        INTERESTED => want(0).map(|()| Message::Interested)?,
        NOT_INTERESTED => want(0).map(|()| Message::NotInterested)?,
        HAVE => {
            want(4)?;
            Message::Have(word(0))
        }
        BITFIELD => Message::Bitfield(payload),
        REQUEST | CANCEL => {
            want(12)?;
            let (index, begin, length) = (word(0), word(4), word(8));
            if id == REQUEST {
                Message::Request { index, begin, length }
            } else {
                Message::Cancel { index, begin, length }
            }
        }
        EXTENDED => match payload.split_first() {
            Some((&id, payload)) => Message::Extended { id, payload },
            None => return Err(WireError::BadLength { id, len: 0 }),
        },
        PIECE => {
            if payload.len() < 8 {
                return Err(WireError::BadLength { id, len: payload.len() });
            }
            Message::Piece { index: word(0), begin: word(4), data: &payload[8..] }
        }
        other => Message::Other(other),
    };
    Ok(Some((message, 4 + len)))
}

/// Checks a bitfield's length and spare bits for a torrent of `pieces` pieces.
pub(super) fn check_bitfield(bits: &[u8], pieces: usize) -> Result<(), WireError> {
    let bad = WireError::BadBitfield { got: bits.len(), pieces };
    if bits.len() != pieces.div_ceil(8) {
        return Err(bad);
    }
    let spare = bits.len() * 8 - pieces;
    if spare > 0 && bits.last().is_some_and(|last| last & ((1u8 << spare) - 1) != 0) {
        return Err(bad);
    }
    Ok(())
}

/// Whether a handshake announces the BEP 10 extension protocol.
pub(super) fn speaks_extensions(handshake: &[u8; HANDSHAKE_LEN]) -> bool {
    handshake[25] & 0x10 != 0
}

/// Appends our extension handshake.
pub(super) fn put_extension_handshake(out: &mut Vec<u8>) {
    out.extend_from_slice(&((2 + EXTENSION_HANDSHAKE.len()) as u32).to_be_bytes());
    out.extend_from_slice(&[EXTENDED, 0]);
    out.extend_from_slice(EXTENSION_HANDSHAKE);
}

/// The peers a `ut_pex` message adds (`added`, 6 bytes each, and `added6`, 18 bytes each), at most
/// `MAX_PEX_PEERS`; a message that is not a bencoded dict adds none.
pub(super) fn pex_added(payload: &[u8]) -> Vec<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let Ok(value) = btfs_chunker::torrent::bencode::decode(payload) else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(v4) = value.get(b"added").and_then(|v| v.as_bytes()) {
        for c in v4.chunks_exact(6) {
            let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
            out.push(SocketAddr::from((ip, u16::from_be_bytes([c[4], c[5]]))));
        }
    }
    if let Some(v6) = value.get(b"added6").and_then(|v| v.as_bytes()) {
        for c in v6.chunks_exact(18) {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            out.push(SocketAddr::from((Ipv6Addr::from(ip), u16::from_be_bytes([c[16], c[17]]))));
        }
    }
    out.truncate(MAX_PEX_PEERS);
    out
}

/// The `reqq` of a peer's extension handshake: how many requests it queues, if it says.
pub(super) fn extension_reqq(payload: &[u8]) -> Option<usize> {
    let value = btfs_chunker::torrent::bencode::decode(payload).ok()?;
    usize::try_from(value.get(b"reqq")?.as_int()?).ok()
}

/// Whether bit `i` of a checked bitfield is set.
pub(super) fn has_bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

/// Appends `interested`.
pub(super) fn put_interested(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 1, INTERESTED]);
}

/// Appends a request (or, with `cancel`, a cancel) for `length` bytes of piece `index` at `begin`.
pub(super) fn put_request(out: &mut Vec<u8>, index: u32, begin: u32, length: u32, cancel: bool) {
    out.extend_from_slice(&[0, 0, 0, 13, if cancel { CANCEL } else { REQUEST }]);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Appends a keep-alive.
pub(super) fn put_keep_alive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(id);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn handshakes_round_trip_and_another_torrent_is_refused() {
        let ours = handshake(&[7; 20], &[9; 20]);
        assert_eq!(check_handshake(&ours, &[7; 20]), Ok([9; 20]));
        assert!(matches!(check_handshake(&ours, &[8; 20]), Err(WireError::OtherTorrent(_))));
        let mut other = ours;
        other[1..20].copy_from_slice(b"BitTorrent protocoX");
        assert!(matches!(check_handshake(&other, &[7; 20]), Err(WireError::Protocol(_))));
        other[0] = 200;
        assert!(matches!(check_handshake(&other, &[7; 20]), Err(WireError::Protocol(_))));
    }

    #[test]
    fn messages_parse_in_place_and_partial_ones_wait() {
        let mut buf = frame(PIECE, &[0, 0, 0, 3, 0, 0, 0x40, 0, 1, 2, 3]);
        buf.extend_from_slice(&frame(HAVE, &[0, 0, 0, 5]));
        buf.extend_from_slice(&[0, 0, 0, 0]);
        let (m, used) = parse(&buf, 100).expect("valid").expect("whole");
        assert_eq!(m, Message::Piece { index: 3, begin: 0x4000, data: &[1, 2, 3] });
        let (m, used2) = parse(&buf[used..], 100).expect("valid").expect("whole");
        assert_eq!(m, Message::Have(5));
        assert_eq!(parse(&buf[used + used2..], 100), Ok(Some((Message::KeepAlive, 4))));
        for cut in 0..used {
            assert_eq!(parse(&buf[..cut], 100), Ok(None), "a message cut at {cut} bytes waits");
        }
        assert_eq!(parse(&frame(UNCHOKE, &[]), 100), Ok(Some((Message::Unchoke, 5))));
        assert_eq!(parse(&frame(9, &[0x1a, 0xe1]), 100).map(|m| m.map(|m| m.0)), Ok(Some(Message::Other(9))));
        assert_eq!(
            parse(&frame(EXTENDED, b"\x01d5:added0:e"), 100).map(|m| m.map(|m| m.0)),
            Ok(Some(Message::Extended { id: 1, payload: b"d5:added0:e" }))
        );
        assert_eq!(parse(&frame(EXTENDED, b""), 100), Err(WireError::BadLength { id: EXTENDED, len: 0 }));
    }

    #[test]
    fn hostile_lengths_are_errors_that_name_the_problem() {
        // A length past the cap is refused before anything is buffered for it.
        assert_eq!(
            parse(&[0xff, 0xff, 0xff, 0xff, 7], 1000),
            Err(WireError::TooLong { len: u32::MAX as usize, max: 1000 })
        );
        assert_eq!(parse(&frame(HAVE, &[0, 0, 1]), 100), Err(WireError::BadLength { id: HAVE, len: 3 }));
        assert_eq!(parse(&frame(UNCHOKE, &[0]), 100), Err(WireError::BadLength { id: UNCHOKE, len: 1 }));
        assert_eq!(parse(&frame(PIECE, &[0; 7]), 100), Err(WireError::BadLength { id: PIECE, len: 7 }));
        assert_eq!(parse(&frame(REQUEST, &[0; 13]), 100), Err(WireError::BadLength { id: REQUEST, len: 13 }));
        assert_eq!(max_message_len(10), 9 + BLOCK_LEN as usize);
        assert_eq!(max_message_len(1_000_000), 1 + 125_000);
    }

    #[test]
    fn bitfields_must_fit_the_torrent_exactly() {
        assert!(check_bitfield(&[0xff, 0x80], 9).is_ok());
        assert!(check_bitfield(&[0xff, 0xc0], 9).is_err(), "a spare bit set");
        assert!(check_bitfield(&[0xff], 9).is_err(), "too short");
        assert!(check_bitfield(&[0xff, 0x80, 0], 9).is_err(), "too long");
        assert!(check_bitfield(&[0xff], 8).is_ok());
        assert!(has_bit(&[0x80, 0x01], 0) && has_bit(&[0x80, 0x01], 15) && !has_bit(&[0x80, 0x01], 1));
        assert!(!has_bit(&[0xff], 8), "past the end reads as absent");
    }

    /// Random and mutated input never panics, and a parsed message never claims more bytes than it had.
    #[test]
    fn arbitrary_bytes_parse_to_messages_or_errors() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut valid = frame(PIECE, &[0, 0, 0, 1, 0, 0, 0, 0, 9, 9]);
        valid.extend_from_slice(&frame(BITFIELD, &[0xff, 0x80]));
        valid.extend_from_slice(&frame(HAVE, &[0, 0, 0, 8]));
        for round in 0..200_000 {
            let mut buf = if round % 2 == 0 {
                let mut v = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                }
                v.truncate(rng.random_range(0..=v.len()));
                v
            } else {
                (0..rng.random_range(0..40)).map(|_| rng.random()).collect()
            };
            if round % 3 == 0 && buf.len() >= 4 {
                buf[..4].copy_from_slice(&(rng.random_range(0..64u32)).to_be_bytes());
            }
            let mut at = 0;
            while let Ok(Some((message, used))) = parse(&buf[at..], 100) {
                assert!(used >= 4 && at + used <= buf.len(), "{message:?} took {used} of {}", buf.len() - at);
                if let Message::Bitfield(bits) = message {
                    let _ = check_bitfield(bits, 9);
                }
                at += used;
            }
        }
    }

    #[test]
    fn pex_messages_give_their_peers_and_junk_gives_none() {
        let mut msg = b"d5:added12:".to_vec();
        msg.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
        msg.extend_from_slice(b"6:added618:");
        msg.extend_from_slice(&[0; 15]);
        msg.extend_from_slice(&[1, 0x1f, 0x90]);
        msg.extend_from_slice(b"e");
        let peers: Vec<String> = pex_added(&msg).iter().map(|a| a.to_string()).collect();
        assert_eq!(peers, ["127.0.0.1:6881", "10.0.0.2:80", "[::1]:8080"]);
        assert!(pex_added(b"d5:addedi3ee").is_empty(), "added is not a string");
        assert!(pex_added(b"not bencode").is_empty());
        assert_eq!(extension_reqq(b"d1:md6:ut_pexi1ee4:reqqi250ee"), Some(250));
        assert_eq!(extension_reqq(b"d4:reqqi-1ee"), None);
        assert_eq!(extension_reqq(b"d1:md6:ut_pexi1eee"), None);
        let many = [b"d5:added600:".as_slice(), &[7u8; 600], b"e"].concat();
        assert_eq!(pex_added(&many).len(), MAX_PEX_PEERS);
        let ours = handshake(&[1; 20], &[2; 20]);
        assert!(speaks_extensions(&ours));
        let mut out = Vec::new();
        put_extension_handshake(&mut out);
        assert_eq!(parse(&out, 100), Ok(Some((Message::Extended { id: 0, payload: EXTENSION_HANDSHAKE }, out.len()))));
    }

    #[test]
    fn requests_are_encoded_as_bep_3_says() {
        let mut out = Vec::new();
        put_request(&mut out, 1, 0x4000, BLOCK_LEN, false);
        put_request(&mut out, 1, 0x4000, BLOCK_LEN, true);
        put_interested(&mut out);
        put_keep_alive(&mut out);
        let (m, n) = parse(&out, 100).expect("valid").expect("whole");
        assert_eq!(m, Message::Request { index: 1, begin: 0x4000, length: BLOCK_LEN });
        let (m, n2) = parse(&out[n..], 100).expect("valid").expect("whole");
        assert_eq!(m, Message::Cancel { index: 1, begin: 0x4000, length: BLOCK_LEN });
        assert_eq!(&out[n + n2..], &[0, 0, 0, 1, INTERESTED, 0, 0, 0, 0]);
    }
}
