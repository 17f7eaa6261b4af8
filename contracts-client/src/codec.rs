//! Compact serde forms for EVM types on the wire: addresses, words and amounts as CBOR byte strings.
//!
//! alloy's own serde writes hex strings (CBOR serializers report themselves human-readable by default), which
//! round-trip but take twice the bytes; these modules write fixed-length byte strings and reject any other length.

use alloy::primitives::{Address, B256, U256};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use serde_bytes::ByteBuf;

fn fixed<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let buf = ByteBuf::deserialize(d)?;
    <[u8; N]>::try_from(buf.as_slice())
        .map_err(|_| D::Error::custom(format_args!("expected {N} bytes, got {}", buf.len())))
}

/// An [`Address`] as a 20-byte string.
pub(crate) mod address {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(a.as_slice())
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        fixed::<D, 20>(d).map(Address::from)
    }
}

/// A [`B256`] as a 32-byte string.
pub(crate) mod b256 {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(b: &B256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b.as_slice())
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
        fixed::<D, 32>(d).map(B256::from)
    }
}

/// A [`U256`] as a 32-byte big-endian string.
pub(crate) mod u256 {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&v.to_be_bytes::<32>())
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        fixed::<D, 32>(d).map(|b| U256::from_be_bytes(b))
    }
}

/// A list of byte strings (proof paths).
pub(crate) mod bytes_list {
    use super::*;
    use serde::Serialize;
    pub(crate) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let bufs: Vec<&serde_bytes::Bytes> = v.iter().map(|b| serde_bytes::Bytes::new(b)).collect();
        bufs.serialize(s)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let bufs = Vec::<ByteBuf>::deserialize(d)?;
        Ok(bufs.into_iter().map(ByteBuf::into_vec).collect())
    }
}
