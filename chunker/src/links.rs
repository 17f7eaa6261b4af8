//! The links out of a block, by codec: what pinning, garbage collection and DAG export walk; and IPLD
//! pathing inside dag-cbor and dag-json blocks (`/ipfs/<cid>/foo/link/bar`).

use cid::Cid;

use crate::block::RAW;
use crate::dagpb::{self, DecodeError, PbNodeRef};

/// Multicodec of dag-cbor.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec of dag-json.
pub const DAG_JSON: u64 = 0x0129;
/// Multicodec of plain JSON (no links by definition).
pub const JSON: u64 = 0x0200;
/// Multicodec of plain CBOR (no links by definition).
pub const CBOR: u64 = 0x51;

/// Why the links of a block could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinksError {
    #[error("block {cid} is not valid dag-pb")]
    DagPb { cid: Cid, source: DecodeError },
    #[error("block {cid} is not valid dag-cbor: {reason}")]
    DagCbor { cid: Cid, reason: &'static str },
    #[error("block {cid} is not valid dag-json: {reason}")]
    DagJson { cid: Cid, reason: String },
    #[error(
        "block {cid} has codec {codec:#x}, whose links this node cannot read (raw, dag-pb, dag-cbor, dag-json, \
         json and cbor only)"
    )]
    UnsupportedCodec { cid: Cid, codec: u64 },
}

/// The CIDs a block links to. Raw blocks have none; a codec this node cannot read is an error rather than
/// "no links", so that pinning never silently leaves a DAG's children unprotected.
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, LinksError> {
    match cid.codec() {
        dagpb::CODEC => {
            // The borrowing decoder: a leaf's payload is not copied just to find it has no links.
            let node = PbNodeRef::decode(data).map_err(|source| LinksError::DagPb { cid: *cid, source })?;
            Ok(node.links.into_iter().map(|l| l.hash).collect())
        }
        DAG_CBOR => {
            let mut out = Vec::new();
            cbor_links(data, &mut out).map_err(|reason| LinksError::DagCbor { cid: *cid, reason })?;
            Ok(out)
        }
        DAG_JSON => {
            let value = parse_json(cid, data)?;
            let mut out = Vec::new();
            json_links(&value, &mut out, 0).map_err(|reason| LinksError::DagJson { cid: *cid, reason })?;
            Ok(out)
        }
        RAW | JSON | CBOR => Ok(Vec::new()),
        codec => Err(LinksError::UnsupportedCodec { cid: *cid, codec }),
    }
}

/// Where an IPLD path inside one block leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// After `consumed` segments the path reached a link to `cid`; the rest continues in that block.
    Link { cid: Cid, consumed: usize },
    /// Every segment was consumed and the path ends on a value inside this block, not on a link.
    Value,
    /// Segment number `index` names nothing here.
    Missing { index: usize },
}

/// Follows `segments` inside a dag-cbor or dag-json block: map keys by name, list items by index, stopping
/// at the first link.
pub fn resolve_in_block(cid: &Cid, data: &[u8], segments: &[String]) -> Result<PathStep, LinksError> {
    match cid.codec() {
        DAG_CBOR => {
            let bad = |reason| LinksError::DagCbor { cid: *cid, reason };
            let mut pos = 0usize;
            for index in 0..=segments.len() {
                if let Some(target) = cbor_link_at(data, pos).map_err(bad)? {
                    return Ok(PathStep::Link { cid: target, consumed: index });
                }
                let Some(segment) = segments.get(index) else { return Ok(PathStep::Value) };
                match cbor_child(data, pos, segment).map_err(bad)? {
                    Some(child) => pos = child,
                    None => return Ok(PathStep::Missing { index }),
                }
            }
            Ok(PathStep::Value)
        }
        DAG_JSON => {
            let mut value = &parse_json(cid, data)?;
            for index in 0..=segments.len() {
                if let Some(target) = json_link(value).map_err(|reason| LinksError::DagJson { cid: *cid, reason })? {
                    return Ok(PathStep::Link { cid: target, consumed: index });
                }
                let Some(segment) = segments.get(index) else { return Ok(PathStep::Value) };
                let child = match value {
                    serde_json::Value::Object(map) => map.get(segment.as_str()),
                    serde_json::Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                };
                match child {
                    Some(child) => value = child,
                    None => return Ok(PathStep::Missing { index }),
                }
            }
            Ok(PathStep::Value)
        }
        codec => Err(LinksError::UnsupportedCodec { cid: *cid, codec }),
    }
}

fn parse_json(cid: &Cid, data: &[u8]) -> Result<serde_json::Value, LinksError> {
    // serde_json refuses nesting past 128 levels, so hostile depth cannot exhaust the stack.
    serde_json::from_slice(data).map_err(|e| LinksError::DagJson { cid: *cid, reason: e.to_string() })
}

/// The CID of a dag-json link (`{"/": "<cid>"}`), if `value` is one.
fn json_link(value: &serde_json::Value) -> Result<Option<Cid>, String> {
    let serde_json::Value::Object(map) = value else { return Ok(None) };
    match (map.len(), map.get("/")) {
        (1, Some(serde_json::Value::String(text))) => {
            Cid::try_from(text.as_str()).map(Some).map_err(|_| format!("invalid CID {text:?} in a link"))
        }
        _ => Ok(None),
    }
}

fn json_links(value: &serde_json::Value, out: &mut Vec<Cid>, depth: usize) -> Result<(), String> {
    if depth > MAX_CBOR_DEPTH * 2 {
        return Err("nested too deeply".into());
    }
    if let Some(cid) = json_link(value)? {
        out.push(cid);
        return Ok(());
    }
    match value {
        serde_json::Value::Object(map) => map.values().try_for_each(|v| json_links(v, out, depth + 1)),
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| json_links(v, out, depth + 1)),
        _ => Ok(()),
    }
}

/// The link at `pos` of a dag-cbor block, if the item there is one.
fn cbor_link_at(data: &[u8], pos: usize) -> Result<Option<Cid>, &'static str> {
    let mut at = pos;
    let (major, n) = cbor_head(data, &mut at)?;
    if major != 6 || n != 42 {
        return Ok(None);
    }
    let mut found = Vec::with_capacity(1);
    let mut at = pos;
    cbor_item(data, &mut at, &mut found, 0)?;
    Ok(found.pop())
}

/// The position of the child named `segment` of the map or list at `pos`, if there is one.
fn cbor_child(data: &[u8], pos: usize, segment: &str) -> Result<Option<usize>, &'static str> {
    let mut at = pos;
    let (major, n) = cbor_head(data, &mut at)?;
    let mut ignored = Vec::new();
    match major {
        5 => {
            for _ in 0..n {
                let key_start = at;
                let (key_major, key_len) = cbor_head(data, &mut at)?;
                if key_major == 3 {
                    let len = usize::try_from(key_len).map_err(|_| "length overflows")?;
                    let end = at.checked_add(len).filter(|&e| e <= data.len()).ok_or("truncated")?;
                    let key = &data[at..end];
                    at = end;
                    if key == segment.as_bytes() {
                        return Ok(Some(at));
                    }
                } else {
                    at = key_start;
                    cbor_item(data, &mut at, &mut ignored, 1)?;
                }
                cbor_item(data, &mut at, &mut ignored, 1)?;
            }
            Ok(None)
        }
        4 => {
            let Ok(wanted) = segment.parse::<u64>() else { return Ok(None) };
            if wanted >= n {
                return Ok(None);
            }
            for _ in 0..wanted {
                cbor_item(data, &mut at, &mut ignored, 1)?;
            }
            Ok(Some(at))
        }
        _ => Ok(None),
    }
}

/// The deepest nesting of CBOR arrays and maps we walk before calling a block hostile.
const MAX_CBOR_DEPTH: usize = 64;

/// Collects tag-42 CIDs from a dag-cbor block without building the whole value.
fn cbor_links(data: &[u8], out: &mut Vec<Cid>) -> Result<(), &'static str> {
    let mut pos = 0;
    cbor_item(data, &mut pos, out, 0)?;
    if pos != data.len() {
        return Err("trailing bytes after the top-level item");
    }
    Ok(())
}

fn cbor_head(data: &[u8], pos: &mut usize) -> Result<(u8, u64), &'static str> {
    let first = *data.get(*pos).ok_or("truncated")?;
    *pos += 1;
    let major = first >> 5;
    let info = first & 0x1f;
    let n = match info {
        0..=23 => u64::from(info),
        24..=27 => {
            let len = 1usize << (info - 24);
            let bytes = data.get(*pos..*pos + len).ok_or("truncated")?;
            *pos += len;
            bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }
        _ => return Err("indefinite lengths are not allowed in dag-cbor"),
    };
    Ok((major, n))
}

fn cbor_item(data: &[u8], pos: &mut usize, out: &mut Vec<Cid>, depth: usize) -> Result<(), &'static str> {
    if depth > MAX_CBOR_DEPTH {
        return Err("nested too deeply");
    }
    let (major, n) = cbor_head(data, pos)?;
    match major {
        0 | 1 | 7 => Ok(()),
        2 | 3 => {
            let len = usize::try_from(n).map_err(|_| "length overflows")?;
            let end = pos.checked_add(len).filter(|&e| e <= data.len()).ok_or("truncated")?;
            *pos = end;
            Ok(())
        }
        4 | 5 => {
            let items = if major == 5 { n.checked_mul(2).ok_or("length overflows")? } else { n };
            // Every item takes at least one byte, so a count beyond the remaining bytes is a lie.
            if items > (data.len() - *pos) as u64 {
                return Err("truncated");
            }
            for _ in 0..items {
                cbor_item(data, pos, out, depth + 1)?;
            }
            Ok(())
        }
        6 => {
            if n == 42 {
                let (major, len) = cbor_head(data, pos)?;
                if major != 2 {
                    return Err("tag 42 must wrap a byte string");
                }
                let len = usize::try_from(len).map_err(|_| "length overflows")?;
                let end = pos.checked_add(len).filter(|&e| e <= data.len()).ok_or("truncated")?;
                let bytes = &data[*pos..end];
                *pos = end;
                let (&prefix, cid_bytes) = bytes.split_first().ok_or("empty CID")?;
                if prefix != 0 {
                    return Err("CID bytes must start with 0x00");
                }
                out.push(Cid::try_from(cid_bytes).map_err(|_| "invalid CID")?);
                Ok(())
            } else {
                cbor_item(data, pos, out, depth + 1)
            }
        }
        _ => Err("unknown major type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::CidParams;

    #[test]
    fn cbor_links_found_and_garbage_rejected() {
        let target = CidParams::V0.cid(RAW, b"x");
        let mut cid_bytes = vec![0u8];
        cid_bytes.extend(target.to_bytes());
        // {"a": [42(cid)]}
        let mut block = vec![0xa1, 0x61, b'a', 0x81, 0xd8, 0x2a, 0x58, cid_bytes.len() as u8];
        block.extend(&cid_bytes);
        let cid = Cid::new_v1(DAG_CBOR, crate::hash::HashFunction::Sha2_256.digest(&block));
        assert_eq!(links(&cid, &block), Ok(vec![target]));
        for bad in [&[0x9f][..], &[0x85, 0x01], &[0x5a, 0xff, 0xff, 0xff, 0xff], &[0x01, 0x02]] {
            assert!(links(&cid, bad).is_err(), "{bad:?}");
        }
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_in_block(&cid, &block, &path(&["a", "0", "x"])),
            Ok(PathStep::Link { cid: target, consumed: 2 })
        );
        assert_eq!(resolve_in_block(&cid, &block, &path(&["a"])), Ok(PathStep::Value));
        assert_eq!(resolve_in_block(&cid, &block, &path(&["b"])), Ok(PathStep::Missing { index: 0 }));
        assert_eq!(resolve_in_block(&cid, &block, &path(&["a", "1"])), Ok(PathStep::Missing { index: 1 }));
    }

    #[test]
    fn dag_json_links_and_paths() {
        let target = CidParams::V0.cid(RAW, b"x");
        let block = format!(r#"{{"foo":{{"link":{{"/":"{target}"}},"n":1}}}}"#).into_bytes();
        let cid = Cid::new_v1(DAG_JSON, crate::hash::HashFunction::Sha2_256.digest(&block));
        assert_eq!(links(&cid, &block), Ok(vec![target]));
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_in_block(&cid, &block, &path(&["foo", "link", "bar"])),
            Ok(PathStep::Link { cid: target, consumed: 2 })
        );
        assert_eq!(resolve_in_block(&cid, &block, &path(&["foo"])), Ok(PathStep::Value));
        assert_eq!(resolve_in_block(&cid, &block, &path(&["nope"])), Ok(PathStep::Missing { index: 0 }));
        assert!(links(&cid, b"{\"/\": \"not a cid\"}").is_err());
        assert!(links(&cid, b"{").is_err());
    }
}
