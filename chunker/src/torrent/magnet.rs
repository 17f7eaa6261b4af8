//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<v1 infohash>&xt=urn:btmh:1220<v2 infohash>&dn=<name>&tr=<tracker>
//! &x.pe=<host:port>`, and bare infohash strings.
//!
//! A v1 infohash is 40 hex digits or 32 base32 digits (RFC 4648, the form some old links use); a v2 infohash is
//! a sha2-256 multihash (`1220` and 64 hex digits, BEP 52). Values are percent-decoded and `+` reads as a space,
//! as libtorrent does. Parameters this code does not use are skipped unread, as are `xt` URNs of other
//! networks; a link must still carry at least one BitTorrent infohash.

use super::to_hex;

/// A parsed magnet link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash_v1: Option<[u8; 20]>,
    /// Present in hybrid and v2-only links; a link with only this is for a v2-only torrent.
    pub info_hash_v2: Option<[u8; 32]>,
    /// `dn`: a display name until the metadata arrives.
    pub name: Option<String>,
    /// `tr` (and `tr.<n>`), in order.
    pub trackers: Vec<String>,
    /// `x.pe`: peers to try first, each `host:port`.
    pub peers: Vec<String>,
}

/// Why a string is not a usable magnet link or infohash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("magnet link does not start with \"magnet:?\"")]
    NotMagnet,
    #[error("magnet parameter {param} has a bad percent escape at byte {at} of its value")]
    BadEscape { param: String, at: usize },
    #[error("magnet parameter {param} is not valid UTF-8 once percent-decoded")]
    NotUtf8 { param: String },
    #[error(
        "{value:?} is not a BitTorrent infohash (expected 40 hex or 32 base32 digits for v1, \
         or a multihash 1220 and 64 hex digits for v2)"
    )]
    BadInfoHash { value: String },
    #[error("magnet link names two different {version} infohashes")]
    ConflictingInfoHash { version: &'static str },
    #[error("magnet link has no BitTorrent infohash (xt=urn:btih:... or xt=urn:btmh:...)")]
    NoInfoHash,
    #[error("magnet peer {value:?} is not host:port")]
    BadPeer { value: String },
}

/// Parses a magnet link.
pub fn parse_magnet(uri: &str) -> Result<Magnet, MagnetError> {
    let query = strip_prefix_ignore_case(uri, "magnet:?").ok_or(MagnetError::NotMagnet)?;
    let mut magnet = Magnet::default();
    for param in query.split('&') {
        let Some((key, raw)) = param.split_once('=') else { continue };
        let is_tracker = key == "tr" || key.strip_prefix("tr.").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !(matches!(key, "xt" | "dn" | "x.pe") || is_tracker) {
            continue;
        }
        let value = percent_decode(key, raw)?;
        match key {
            "xt" => add_exact_topic(&mut magnet, &value)?,
            "dn" => magnet.name = Some(value),
            "x.pe" => {
                let valid = value
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
                if !valid {
                    return Err(MagnetError::BadPeer { value });
                }
                magnet.peers.push(value);
            }
            _ => magnet.trackers.push(value),
        }
    }
    if magnet.info_hash_v1.is_none() && magnet.info_hash_v2.is_none() {
        return Err(MagnetError::NoInfoHash);
    }
    Ok(magnet)
}

/// A bare v1 infohash: 40 hex digits or 32 base32 digits, either case.
pub fn parse_info_hash(s: &str) -> Result<[u8; 20], MagnetError> {
    let bad = || MagnetError::BadInfoHash { value: s.to_owned() };
    let mut out = [0u8; 20];
    match s.len() {
        40 => decode_hex(s, &mut out).ok_or_else(bad)?,
        32 => {
            // 32 digits of 5 bits are exactly 160 bits.
            let mut acc: u64 = 0;
            let mut bits = 0;
            let mut at = 0;
            for c in s.bytes() {
                let digit = match c.to_ascii_uppercase() {
                    d @ b'A'..=b'Z' => d - b'A',
                    d @ b'2'..=b'7' => d - b'2' + 26,
                    _ => return Err(bad()),
                };
                acc = (acc << 5) | u64::from(digit);
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    out[at] = (acc >> bits) as u8;
                    at += 1;
                }
            }
        }
        _ => return Err(bad()),
    }
    Ok(out)
}

impl Magnet {
    /// The link: infohashes, then `dn`, `tr` and `x.pe`, every value percent-encoded.
    pub fn to_uri(&self) -> String {
        let mut params = Vec::new();
        if let Some(hash) = self.info_hash_v1 {
            params.push(format!("xt=urn:btih:{}", to_hex(&hash)));
        }
        if let Some(hash) = self.info_hash_v2 {
            params.push(format!("xt=urn:btmh:1220{}", to_hex(&hash)));
        }
        if let Some(name) = &self.name {
            params.push(format!("dn={}", percent_encode(name)));
        }
        params.extend(self.trackers.iter().map(|t| format!("tr={}", percent_encode(t))));
        params.extend(self.peers.iter().map(|p| format!("x.pe={}", percent_encode(p))));
        format!("magnet:?{}", params.join("&"))
    }
}

fn add_exact_topic(magnet: &mut Magnet, value: &str) -> Result<(), MagnetError> {
    let bad = || MagnetError::BadInfoHash { value: value.to_owned() };
    if let Some(digits) = strip_prefix_ignore_case(value, "urn:btih:") {
        let hash = parse_info_hash(digits).map_err(|_| bad())?;
        if magnet.info_hash_v1.is_some_and(|h| h != hash) {
            return Err(MagnetError::ConflictingInfoHash { version: "v1" });
        }
        magnet.info_hash_v1 = Some(hash);
    } else if let Some(multihash) = strip_prefix_ignore_case(value, "urn:btmh:") {
        // sha2-256 (0x12) of 32 bytes (0x20): the only multihash BEP 52 uses.
        let digits = strip_prefix_ignore_case(multihash, "1220").filter(|d| d.len() == 64).ok_or_else(bad)?;
        let mut hash = [0u8; 32];
        decode_hex(digits, &mut hash).ok_or_else(bad)?;
        if magnet.info_hash_v2.is_some_and(|h| h != hash) {
            return Err(MagnetError::ConflictingInfoHash { version: "v2" });
        }
        magnet.info_hash_v2 = Some(hash);
    }
    Ok(())
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Fills `out` from exactly `2 * out.len()` hex digits.
fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != 2 * out.len() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(())
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

fn percent_decode(param: &str, raw: &str) -> Result<String, MagnetError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|pair| Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?))
                    .ok_or_else(|| MagnetError::BadEscape { param: param.to_owned(), at: i })?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| MagnetError::NotUtf8 { param: param.to_owned() })
}

/// Keeps RFC 3986's unreserved characters and escapes every other byte.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A v1 infohash and its base32 form, from Python's `base64.b32encode(bytes.fromhex(HEX))`.
    const HEX: &str = "0ae9fdca01e39c820d605b14238a177052652085";
    const BASE32: &str = "BLU73SQB4OOIEDLALMKCHCQXOBJGKIEF";
    const V2_HEX: &str = "bc3d4f6a44a4e7eacaf437406802030ae1537f60659c5b4b430be7f83f28a303";

    fn bytes<const N: usize>(hex: &str) -> [u8; N] {
        let mut out = [0u8; N];
        decode_hex(hex, &mut out).expect("hex");
        out
    }

    #[test]
    fn a_full_link_parses() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2_HEX}&dn=My+File%20%C3%A9.iso\
             &tr=http%3A%2F%2Ftracker.example%2Fannounce&tr.1=udp://t2.example:6969&x.pe=10.0.0.1:6881\
             &x.pe=%5B%3A%3A1%5D:51413&ws=ignored&xs=%zz"
        );
        let m = parse_magnet(&uri).expect("valid");
        assert_eq!(m.info_hash_v1, Some(bytes(HEX)));
        assert_eq!(m.info_hash_v2, Some(bytes(V2_HEX)));
        assert_eq!(m.name.as_deref(), Some("My File é.iso"));
        assert_eq!(m.trackers, ["http://tracker.example/announce", "udp://t2.example:6969"]);
        assert_eq!(m.peers, ["10.0.0.1:6881", "[::1]:51413"]);
        assert_eq!(parse_magnet(&m.to_uri()), Ok(m));
    }

    #[test]
    fn v1_hashes_in_hex_and_base32_agree() {
        assert_eq!(parse_info_hash(HEX), Ok(bytes(HEX)));
        assert_eq!(parse_info_hash(&HEX.to_uppercase()), Ok(bytes(HEX)));
        assert_eq!(parse_info_hash(BASE32), Ok(bytes(HEX)));
        assert_eq!(parse_info_hash(&BASE32.to_lowercase()), Ok(bytes(HEX)));
        let link = parse_magnet(&format!("MAGNET:?xt=URN:BTIH:{BASE32}")).expect("valid");
        assert_eq!(link.info_hash_v1, Some(bytes(HEX)));
    }

    #[test]
    fn a_v2_only_link_parses() {
        let m = parse_magnet(&format!("magnet:?xt=urn:btmh:1220{V2_HEX}&dn=x")).expect("valid");
        assert_eq!((m.info_hash_v1, m.info_hash_v2), (None, Some(bytes(V2_HEX))));
    }

    #[test]
    fn bad_links_are_refused_by_name() {
        let cases: &[(&str, &str)] = &[
            ("http://example.com/?xt=urn:btih:0", "magnet link does not start with \"magnet:?\""),
            ("magnet:?dn=x", "magnet link has no BitTorrent infohash (xt=urn:btih:... or xt=urn:btmh:...)"),
            ("magnet:?xt=urn:ed2k:abc", "magnet link has no BitTorrent infohash (xt=urn:btih:... or xt=urn:btmh:...)"),
            (
                "magnet:?xt=urn:btih:abc",
                "\"urn:btih:abc\" is not a BitTorrent infohash (expected 40 hex or 32 base32 digits for v1, \
                 or a multihash 1220 and 64 hex digits for v2)",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a17705265208g",
                "\"urn:btih:0ae9fdca01e39c820d605b14238a17705265208g\" is not a BitTorrent infohash (expected 40 \
                 hex or 32 base32 digits for v1, or a multihash 1220 and 64 hex digits for v2)",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a177052652085&dn=%4",
                "magnet parameter dn has a bad percent escape at byte 0 of its value",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a177052652085&dn=%ff",
                "magnet parameter dn is not valid UTF-8 once percent-decoded",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a177052652085&x.pe=10.0.0.1",
                "magnet peer \"10.0.0.1\" is not host:port",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a177052652085&x.pe=:80",
                "magnet peer \":80\" is not host:port",
            ),
            (
                "magnet:?xt=urn:btih:0ae9fdca01e39c820d605b14238a177052652085&xt=urn:btih:BLU73SQB4OOIEDLALMKCHCQXOBJGKIEA",
                "magnet link names two different v1 infohashes",
            ),
        ];
        for (uri, message) in cases {
            assert_eq!(parse_magnet(uri).expect_err(uri).to_string(), *message, "{uri}");
        }
        // A sha1 multihash (0x11) is not BEP 52's.
        let sha1_mh = format!("magnet:?xt=urn:btmh:1114{HEX}");
        assert!(matches!(parse_magnet(&sha1_mh), Err(MagnetError::BadInfoHash { .. })));
        // The same hash twice, in two forms, is one hash.
        let twice = format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{BASE32}");
        assert_eq!(parse_magnet(&twice).expect("valid").info_hash_v1, Some(bytes(HEX)));
    }

    proptest! {
        #[test]
        fn links_round_trip(
            v1 in proptest::option::of(any::<[u8; 20]>()),
            v2 in any::<[u8; 32]>(),
            name in proptest::option::of(".{0,20}"),
            trackers in proptest::collection::vec(".{0,30}", 0..4),
            peers in proptest::collection::vec(any::<std::net::SocketAddr>(), 0..3),
        ) {
            let m = Magnet {
                info_hash_v1: v1,
                info_hash_v2: Some(v2),
                name,
                trackers,
                peers: peers.iter().filter(|p| p.port() != 0).map(|p| p.to_string()).collect(),
            };
            prop_assert_eq!(parse_magnet(&m.to_uri()), Ok(m));
        }

        #[test]
        fn any_string_is_parsed_or_refused(s in "(magnet:\\?)?[a-z.=&%:0-9A-F+]{0,80}") {
            let _ = parse_magnet(&s);
        }
    }
}
