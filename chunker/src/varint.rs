//! Unsigned LEB128 varints as used by protobuf, multiformats and CAR files.

/// The longest varint we accept: 10 bytes hold any u64 (protobuf's limit).
pub const MAX_LEN: usize = 10;

/// Appends `value` as a varint.
pub fn encode(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes `encode(value)` writes.
pub fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("varint is truncated")]
    Truncated,
    #[error("varint is longer than 10 bytes or overflows 64 bits")]
    Overflow,
}

/// Reads a varint from the front of `buf`, returning the value and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_LEN) {
        let low = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= MAX_LEN { Err(VarintError::Overflow) } else { Err(VarintError::Truncated) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &[u64] = &[0, 1, 127, 128, 255, 300, 16383, 16384, u32::MAX as u64, u64::MAX - 1, u64::MAX];

    #[test]
    fn round_trip() {
        for &v in VALUES {
            let mut buf = Vec::new();
            encode(v, &mut buf);
            assert_eq!(buf.len(), encoded_len(v), "{v}");
            assert_eq!(decode(&buf), Ok((v, buf.len())), "{v}");
            assert_eq!(decode(&buf[..buf.len() - 1]).err(), Some(VarintError::Truncated), "{v} cut short");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::Overflow));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), Err(VarintError::Overflow));
    }
}
