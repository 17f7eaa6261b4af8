//! What a request asks for: the content path, the response format (`?format=` or `Accept`), byte ranges and
//! CAR parameters. Everything here is parsing of untrusted text into typed values, with the reason when it
//! fails, and no I/O.

use btfs_chunker::Cid;

/// A request path `/ipfs/<cid>/<segments...>` after percent-decoding and dot-segment removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPath {
    /// `ipfs` or `btfs`: kept so that redirects and `X-Ipfs-Path` use the prefix the client used.
    pub namespace: &'static str,
    pub root: Cid,
    /// The root CID as the client wrote it (CIDv0 stays CIDv0 in headers and links).
    pub root_text: String,
    pub segments: Vec<String>,
    /// Whether the path ended in `/` (directories redirect to it).
    pub trailing_slash: bool,
}

/// The longest request path we read; longer paths are refused with 414.
pub const MAX_PATH_LEN: usize = 8192;
/// The most path segments we follow.
pub const MAX_SEGMENTS: usize = 256;

/// Why a request path is not a content path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not /ipfs/<cid> or /btfs/<cid>")]
    NotContent,
    #[error("no CID in the path")]
    MissingCid,
    #[error("invalid CID {0:?}")]
    BadCid(String),
    #[error("path segment is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("path segment contains a slash or NUL once decoded")]
    BadSegment,
    #[error("path leaves the root CID through '..'")]
    EscapesRoot,
    #[error("path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
}

impl ContentPath {
    /// Parses the raw (still percent-encoded) path of a request URI.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let (namespace, rest) = if let Some(rest) = raw.strip_prefix("/ipfs/") {
            ("ipfs", rest)
        } else if let Some(rest) = raw.strip_prefix("/btfs/") {
            ("btfs", rest)
        } else if raw == "/ipfs" || raw == "/btfs" {
            return Err(PathError::MissingCid);
        } else {
            return Err(PathError::NotContent);
        };
        let mut parts = rest.split('/');
        let root_text = parts.next().unwrap_or("");
        if root_text.is_empty() {
            return Err(PathError::MissingCid);
        }
        let root_text = urlencoding::decode(root_text).map_err(|_| PathError::BadEncoding)?.into_owned();
        let root = Cid::try_from(root_text.as_str()).map_err(|_| PathError::BadCid(root_text.clone()))?;
        let trailing_slash = rest.contains('/') && rest.ends_with('/');
        let mut segments: Vec<String> = Vec::new();
        for part in parts {
            let decoded = urlencoding::decode(part).map_err(|_| PathError::BadEncoding)?;
            match decoded.as_ref() {
                "" | "." => {}
                ".." => {
                    segments.pop().ok_or(PathError::EscapesRoot)?;
                }
                name if name.contains(['/', '\0']) => return Err(PathError::BadSegment),
                name => segments.push(name.to_string()),
            }
            if segments.len() > MAX_SEGMENTS {
                return Err(PathError::TooManySegments);
            }
        }
        Ok(Self { namespace, root, root_text, segments, trailing_slash })
    }

    /// `/ipfs/<root>/<segments>` with each segment percent-encoded, no trailing slash.
    pub fn encoded(&self) -> String {
        let mut out = format!("/{}/{}", self.namespace, self.root_text);
        for s in &self.segments {
            out.push('/');
            out.push_str(&encode_segment(s));
        }
        out
    }

    /// The last segment, which names the file for `Content-Type` by extension.
    pub fn last_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters and sub-delims that are
/// safe in a path.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The order of blocks in a CAR response (IPIP-412 `order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarOrder {
    Dfs,
    Unknown,
}

/// CAR response parameters: `dag-scope`, `entity-bytes`, `car-order`, `car-dups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarParams {
    pub scope: DagScope,
    pub entity_bytes: Option<EntityBytes>,
    pub order: CarOrder,
    pub dups: bool,
}

/// How much of the DAG under the path a CAR carries (IPIP-402).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    /// The terminal block only.
    Block,
    /// The terminal entity: a whole file, a directory's own nodes (HAMT shards included), or one block of
    /// another codec.
    Entity,
    /// Everything reachable from the terminal block.
    All,
}

/// A byte range of a file entity, `from:to` with `to` inclusive; negative values count from the end and `*`
/// means the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityBytes {
    pub from: i64,
    pub to: Option<i64>,
}

impl EntityBytes {
    /// The half-open byte range `[start, end)` this selects in a file of `size` bytes; `None` when empty.
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        let abs = |v: i64| -> u64 { if v >= 0 { (v as u64).min(size) } else { size.saturating_sub(v.unsigned_abs()) } };
        let start = abs(self.from);
        let end = match self.to {
            None => size,
            Some(v) if v >= 0 => (v as u64).saturating_add(1).min(size),
            Some(v) => abs(v).saturating_add(1).min(size),
        };
        (start < end).then_some((start, end))
    }
}

/// The response format a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Deserialized: UnixFS files and directories, other codecs as they are.
    Default,
    Raw,
    Car(CarParams),
    Tar,
    DagJson,
    DagCbor,
    Json,
    Cbor,
    IpnsRecord,
}

/// Why a request's format or parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unsupported format {0:?}")]
    UnknownFormat(String),
    #[error("invalid {name} {value:?}")]
    BadParam { name: &'static str, value: String },
    #[error("unsupported CAR version {0:?} (only 1)")]
    CarVersion(String),
}

/// Query parameters the gateway reads, each at most once.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub format: Option<String>,
    pub filename: Option<String>,
    pub download: bool,
    pub dag_scope: Option<String>,
    pub entity_bytes: Option<String>,
    pub car_version: Option<String>,
    pub car_order: Option<String>,
    pub car_dups: Option<String>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Query::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = urlencoding::decode(&v.replace('+', " ")).map(|c| c.into_owned()).unwrap_or_default();
            match k {
                "format" => q.format = Some(v),
                "filename" => q.filename = Some(v),
                "download" => q.download = v == "true",
                "dag-scope" => q.dag_scope = Some(v),
                "entity-bytes" => q.entity_bytes = Some(v),
                "car-version" => q.car_version = Some(v),
                "car-order" => q.car_order = Some(v),
                "car-dups" => q.car_dups = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// Picks the response format: `?format=` wins over `Accept`, and an `Accept` with nothing we serve means the
/// default (a browser's `text/html,...`).
pub fn negotiate(query: &Query, accept: Option<&str>) -> Result<Format, FormatError> {
    // CAR parameters may come from the Accept header's media type parameters or from the query.
    // Parameters of the first CAR media type in Accept apply whenever the response is a CAR, even when
    // `?format=car` chose it; `car-*` query parameters override them.
    let mut car_accept: Option<Vec<(String, String)>> = None;
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';').map(str::trim);
        if parts.next().is_some_and(|m| m.eq_ignore_ascii_case("application/vnd.ipld.car")) {
            car_accept = Some(
                parts
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
                    .collect(),
            );
            break;
        }
    }
    let base = match query.format.as_deref() {
        Some("") | None => {
            let mut chosen = None;
            for item in accept.unwrap_or("").split(',') {
                let media = item.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                let format = match media.as_str() {
                    "application/vnd.ipld.raw" => "raw",
                    "application/vnd.ipld.car" => "car",
                    "application/x-tar" => "tar",
                    "application/vnd.ipld.dag-json" => "dag-json",
                    "application/vnd.ipld.dag-cbor" => "dag-cbor",
                    "application/json" => "json",
                    "application/cbor" => "cbor",
                    "application/vnd.ipfs.ipns-record" => "ipns-record",
                    _ => continue,
                };
                chosen = Some(format);
                break;
            }
            chosen.unwrap_or("")
        }
        Some(f) => f,
    };
    Ok(match base {
        "" => Format::Default,
        "raw" => Format::Raw,
        "car" => Format::Car(car_params(query, car_accept.as_deref().unwrap_or(&[]))?),
        "tar" => Format::Tar,
        "dag-json" => Format::DagJson,
        "dag-cbor" => Format::DagCbor,
        "json" => Format::Json,
        "cbor" => Format::Cbor,
        "ipns-record" => Format::IpnsRecord,
        other => return Err(FormatError::UnknownFormat(other.to_string())),
    })
}

fn car_params(query: &Query, accept: &[(String, String)]) -> Result<CarParams, FormatError> {
    let from_accept = |name: &str| accept.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let version = query.car_version.as_deref().or_else(|| from_accept("version"));
    if let Some(v) = version.filter(|v| *v != "1") {
        return Err(FormatError::CarVersion(v.to_string()));
    }
    let order = match query.car_order.as_deref().or_else(|| from_accept("order")) {
        None | Some("dfs") => CarOrder::Dfs,
        Some("unk") => CarOrder::Unknown,
        Some(other) => return Err(FormatError::BadParam { name: "car-order", value: other.into() }),
    };
    let dups = match query.car_dups.as_deref().or_else(|| from_accept("dups")) {
        None | Some("n") => false,
        Some("y") => true,
        Some(other) => return Err(FormatError::BadParam { name: "car-dups", value: other.into() }),
    };
    let scope = match query.dag_scope.as_deref() {
        None | Some("all") => DagScope::All,
        Some("entity") => DagScope::Entity,
        Some("block") => DagScope::Block,
        Some(other) => return Err(FormatError::BadParam { name: "dag-scope", value: other.into() }),
    };
    let entity_bytes = match query.entity_bytes.as_deref() {
        None => None,
        Some(text) => Some(
            parse_entity_bytes(text)
                .ok_or_else(|| FormatError::BadParam { name: "entity-bytes", value: text.to_string() })?,
        ),
    };
    Ok(CarParams { scope, entity_bytes, order, dups })
}

fn parse_entity_bytes(text: &str) -> Option<EntityBytes> {
    let (from, to) = text.split_once(':')?;
    let from: i64 = from.parse().ok()?;
    let to = match to {
        "*" => None,
        t => Some(t.parse::<i64>().ok()?),
    };
    // A positive end before a positive start selects nothing and is an error, as the spec says.
    if let Some(t) = to
        && from >= 0
        && t >= 0
        && t < from
    {
        return None;
    }
    Some(EntityBytes { from, to })
}

/// A single byte range from a `Range` header, before the file size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=from-` or `bytes=from-to` (inclusive).
    From { from: u64, to: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a `Range` header. Of several ranges only the first is served (a 206 for it, as boxo does); a
/// malformed header is ignored and the whole content served with 200, as RFC 9110 allows.
pub fn parse_range(header: &str) -> Option<ByteRange> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let first = spec.split(',').next()?;
    let (a, b) = first.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(ByteRange::Suffix(b.parse().ok()?));
    }
    let from = a.parse().ok()?;
    let to = if b.is_empty() { None } else { Some(b.parse().ok()?) };
    if to.is_some_and(|t| t < from) {
        return None;
    }
    Some(ByteRange::From { from, to })
}

impl ByteRange {
    /// The half-open range `[start, end)` in a file of `size` bytes, or `None` when unsatisfiable (416).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From { from, .. } if from >= size => None,
            ByteRange::From { from, to } => Some((from, to.map_or(size, |t| t.saturating_add(1).min(size)))),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((size.saturating_sub(n), size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkqaaa";

    #[test]
    fn paths_are_decoded_and_cleaned() {
        let p = ContentPath::parse(&format!("/ipfs/{CID}/a%20b/./c/../d/")).expect("test value");
        assert_eq!(p.segments, vec!["a b", "d"]);
        assert!(p.trailing_slash);
        assert_eq!(p.encoded(), format!("/ipfs/{CID}/a%20b/d"));
        assert_eq!(ContentPath::parse(&format!("/btfs/{CID}")).expect("test value").namespace, "btfs");
        assert!(!ContentPath::parse(&format!("/ipfs/{CID}")).expect("test value").trailing_slash);
    }

    #[test]
    fn bad_paths_say_why() {
        assert_eq!(ContentPath::parse("/ipfs/"), Err(PathError::MissingCid));
        assert_eq!(ContentPath::parse("/ipfs/nope"), Err(PathError::BadCid("nope".into())));
        assert_eq!(ContentPath::parse(&format!("/ipfs/{CID}/../x")), Err(PathError::EscapesRoot));
        assert_eq!(ContentPath::parse(&format!("/ipfs/{CID}/a%2Fb")), Err(PathError::BadSegment));
        assert_eq!(ContentPath::parse(&format!("/ipfs/{CID}/%FF")), Err(PathError::BadEncoding));
        assert_eq!(ContentPath::parse("/other"), Err(PathError::NotContent));
    }

    #[test]
    fn format_wins_over_accept() {
        let q = Query::parse(Some("format=raw"));
        assert_eq!(negotiate(&q, Some("application/vnd.ipld.car")), Ok(Format::Raw));
        let q = Query::default();
        assert_eq!(negotiate(&q, Some("text/html,*/*;q=0.8")), Ok(Format::Default));
        let Ok(Format::Car(car)) = negotiate(&q, Some("application/vnd.ipld.car; version=1; order=unk; dups=y")) else {
            panic!("not CAR")
        };
        assert_eq!((car.order, car.dups, car.scope), (CarOrder::Unknown, true, DagScope::All));
        let q = Query::parse(Some("format=car"));
        let Ok(Format::Car(car)) = negotiate(&q, Some("application/vnd.ipld.car; version=1; order=dfs; dups=y")) else {
            panic!("not CAR")
        };
        assert!(car.dups, "Accept's dups applies to ?format=car");
        let q = Query::parse(Some("format=car&car-dups=n"));
        let Ok(Format::Car(car)) = negotiate(&q, Some("application/vnd.ipld.car; dups=y")) else { panic!("not CAR") };
        assert!(!car.dups, "car-dups overrides Accept");
        assert!(negotiate(&Query::parse(Some("format=zip")), None).is_err());
        assert!(negotiate(&Query::parse(Some("format=car&car-version=2")), None).is_err());
    }

    #[test]
    fn entity_bytes_resolve_against_size() {
        let q = Query::parse(Some("format=car&entity-bytes=-10:*"));
        let Ok(Format::Car(car)) = negotiate(&q, None) else { panic!() };
        assert_eq!(car.entity_bytes.expect("test value").resolve(100), Some((90, 100)));
        assert_eq!(parse_entity_bytes("0:0").expect("test value").resolve(100), Some((0, 1)));
        assert_eq!(parse_entity_bytes("5:2"), None);
        assert_eq!(parse_entity_bytes("50:-20").expect("test value").resolve(100), Some((50, 81)));
        assert_eq!(parse_entity_bytes("200:*").expect("test value").resolve(100), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9").expect("test value").resolve(100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-").expect("test value").resolve(100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-5").expect("test value").resolve(100), Some((95, 100)));
        assert_eq!(parse_range("bytes=0-999").expect("test value").resolve(100), Some((0, 100)));
        assert_eq!(parse_range("bytes=100-").expect("test value").resolve(100), None);
        assert_eq!(parse_range("bytes=6-16,0-4").expect("first range").resolve(31), Some((6, 17)));
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=5-2"), None);
    }
}
