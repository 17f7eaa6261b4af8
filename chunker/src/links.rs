//! The links out of a block, by codec: what pinning, garbage collection and DAG export walk.

use cid::Cid;

use crate::block::RAW;
use crate::dagpb::{self, DecodeError, PbNode};

/// Multicodec of dag-cbor.
pub const DAG_CBOR: u64 = 0x71;

/// Why the links of a block could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinksError {
    #[error("block {cid} is not valid dag-pb")]
    DagPb { cid: Cid, source: DecodeError },
    #[error("block {cid} is not valid dag-cbor: {reason}")]
    DagCbor { cid: Cid, reason: &'static str },
    #[error("block {cid} has codec {codec:#x}, whose links this node cannot read (raw, dag-pb and dag-cbor only)")]
    UnsupportedCodec { cid: Cid, codec: u64 },
}

/// The CIDs a block links to. Raw blocks have none; a codec this node cannot read is an error rather than
/// "no links", so that pinning never silently leaves a DAG's children unprotected.
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, LinksError> {
    match cid.codec() {
        dagpb::CODEC => {
            let node = PbNode::decode(data).map_err(|source| LinksError::DagPb { cid: *cid, source })?;
            Ok(node.links.into_iter().map(|l| l.hash).collect())
        }
        DAG_CBOR => {
            let mut out = Vec::new();
            cbor_links(data, &mut out).map_err(|reason| LinksError::DagCbor { cid: *cid, reason })?;
            Ok(out)
        }
        RAW => Ok(Vec::new()),
        codec => Err(LinksError::UnsupportedCodec { cid: *cid, codec }),
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
    }
}
