//! Bencode (BEP 3): a strict, bounded decoder over borrowed bytes and a canonical encoder.
//!
//! Decoding reads outside bytes (a .torrent a user hands us, an info dict a peer sends), so it accepts the
//! canonical form and nothing else: integers without leading zeros, `-0` or empty digits, within `i64`;
//! string lengths likewise, checked against the bytes left before anything is sliced (a `99999999999:` fails
//! at once, nothing that size is allocated); dict keys are byte strings in strictly increasing byte order
//! (sorted, no duplicates); no bytes after the value. Nesting is at most [`MAX_DEPTH`] containers deep and a
//! document holds at most [`MAX_ELEMENTS`] elements. The decoder keeps its own stack on the heap, so hostile
//! nesting cannot overflow the thread's, and values borrow from the input, so memory is bounded by a small
//! multiple of the element count.
//!
//! Because only canonical input is accepted, `encode(&decode(b)?) == b` for every accepted `b`. Hashes are
//! still taken over the bytes as they arrived ([`decode_dict`] gives each top-level value's exact bytes), never
//! over a re-encoding: that is what the infohash is defined over, and it keeps this code out of the trust path.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The deepest nesting of lists and dicts accepted. BitTorrent metainfo needs 4 for v1 and one more per
/// directory level of a v2 file tree; libtorrent's default is 100.
pub const MAX_DEPTH: usize = 64;
/// The most elements (integers, strings, lists, dicts and dict keys) one document may hold: libtorrent's
/// `load_torrent_limits::max_decode_tokens`. A decoded element takes at most 48 bytes, so a document costs at
/// most about 144 MB however it is built; real torrents need a few per file.
pub const MAX_ELEMENTS: usize = 3_000_000;

/// A decoded bencode value, borrowing its strings from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in key order when decoded (the decoder refuses any other order); [`encode`] sorts them.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// A byte string holding `s`.
    pub fn text(s: &'a str) -> Self {
        Value::Bytes(s.as_bytes())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` if this is a dict holding it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict()?.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// One entry of a top-level dict with the exact bytes its value occupies in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
    /// The value's bytes as they appear in the input (for the infohash: SHA-1 of the raw `info` value).
    pub raw: &'a [u8],
}

/// Why bytes are not canonical bencode within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    #[error("bencode: input ends at byte {at} inside {inside}")]
    UnexpectedEnd { at: usize, inside: &'static str },
    #[error("bencode: unexpected byte {byte:#04x} at byte {at}, expected {expected}")]
    UnexpectedByte { at: usize, byte: u8, expected: &'static str },
    #[error("bencode: integer at byte {at} {reason}")]
    BadInteger { at: usize, reason: &'static str },
    #[error("bencode: string length at byte {at} {reason}")]
    BadLength { at: usize, reason: &'static str },
    #[error("bencode: string length {len} at byte {at} runs past the end of the input ({input_len} bytes)")]
    StringPastEnd { at: usize, len: u64, input_len: usize },
    #[error("bencode: dict key {key} at byte {at} appears twice")]
    DuplicateKey { at: usize, key: String },
    #[error("bencode: dict key {key} at byte {at} comes after {previous} but sorts before it (keys must be sorted)")]
    UnsortedKey { at: usize, key: String, previous: String },
    #[error("bencode: dict key {key} at byte {at} has no value")]
    MissingValue { at: usize, key: String },
    #[error("bencode: nesting deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
    #[error("bencode: more than {MAX_ELEMENTS} elements (the last at byte {at})")]
    TooManyElements { at: usize },
    #[error("bencode: {extra} bytes after the value, from byte {at}")]
    TrailingBytes { at: usize, extra: usize },
}

/// Decodes exactly one value filling all of `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    let mut d = Decoder { input, pos: 0, elements: 0 };
    let value = d.value(0)?;
    d.end()?;
    Ok(value)
}

/// Decodes a dict filling all of `input` and returns its entries with the raw bytes of each value.
pub fn decode_dict(input: &[u8]) -> Result<Vec<RawEntry<'_>>, BencodeError> {
    let mut d = Decoder { input, pos: 0, elements: 0 };
    let at = d.pos;
    match d.peek("a value")? {
        b'd' => {}
        byte => return Err(BencodeError::UnexpectedByte { at, byte, expected: "a dict ('d')" }),
    }
    d.count(at)?;
    d.pos += 1;
    let mut entries: Vec<RawEntry<'_>> = Vec::new();
    loop {
        if d.peek("a dict")? == b'e' {
            d.pos += 1;
            break;
        }
        let key_at = d.pos;
        let key = d.key(entries.last().map(|e| e.key))?;
        if d.peek("a dict")? == b'e' {
            return Err(BencodeError::MissingValue { at: key_at, key: show(key) });
        }
        let start = d.pos;
        let value = d.value(1)?;
        entries.push(RawEntry { key, value, raw: &input[start..d.pos] });
    }
    d.end()?;
    Ok(entries)
}

/// The canonical encoding of `value`: dict keys sorted bytewise. A dict holding one key twice (which
/// [`DictBuilder`] cannot make) encodes to bytes [`decode`] refuses.
pub fn encode(value: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => put_bytes(out, b),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(entries) => {
            let mut sorted: Vec<&(&[u8], Value<'_>)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            debug_assert!(sorted.windows(2).all(|w| w[0].0 != w[1].0), "a dict with a duplicate key");
            out.push(b'd');
            for (key, value) in sorted {
                put_bytes(out, key);
                encode_into(value, out);
            }
            out.push(b'e');
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Builds a dict with unique keys; [`DictBuilder::build`] gives its entries in key order.
#[derive(Debug, Clone, Default)]
pub struct DictBuilder<'a> {
    entries: BTreeMap<&'a [u8], Value<'a>>,
}

impl<'a> DictBuilder<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(mut self, key: &'a str, value: Value<'a>) -> Self {
        self.entries.insert(key.as_bytes(), value);
        self
    }

    pub fn remove(mut self, key: &str) -> Self {
        self.entries.remove(key.as_bytes());
        self
    }

    pub fn int(self, key: &'a str, value: i64) -> Self {
        self.insert(key, Value::Int(value))
    }

    pub fn bytes(self, key: &'a str, value: &'a [u8]) -> Self {
        self.insert(key, Value::Bytes(value))
    }

    pub fn text(self, key: &'a str, value: &'a str) -> Self {
        self.insert(key, Value::text(value))
    }

    pub fn build(self) -> Value<'a> {
        Value::Dict(self.entries.into_iter().collect())
    }
}

/// A dict key for an error message: quoted, escaped, and cut at 64 bytes.
fn show(key: &[u8]) -> String {
    const SHOWN: usize = 64;
    let cut = &key[..key.len().min(SHOWN)];
    let more = if key.len() > SHOWN { "..." } else { "" };
    format!("\"{}{more}\"", cut.escape_ascii())
}

/// A container being filled. A dict's keys and values are kept apart until it ends, so "a key is waiting for
/// its value" is `keys.len() > values.len()` and needs no state that could disagree with the vectors.
enum Frame<'a> {
    List(Vec<Value<'a>>),
    Dict { keys: Vec<(&'a [u8], usize)>, values: Vec<Value<'a>> },
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    elements: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self, inside: &'static str) -> Result<u8, BencodeError> {
        self.input.get(self.pos).copied().ok_or(BencodeError::UnexpectedEnd { at: self.pos, inside })
    }

    fn count(&mut self, at: usize) -> Result<(), BencodeError> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(BencodeError::TooManyElements { at });
        }
        Ok(())
    }

    fn end(&self) -> Result<(), BencodeError> {
        if self.pos != self.input.len() {
            return Err(BencodeError::TrailingBytes { at: self.pos, extra: self.input.len() - self.pos });
        }
        Ok(())
    }

    /// One value starting at `pos`, inside `depth` containers already. Iterative: the stack is `stack`.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        loop {
            let at = self.pos;
            let (inside, key_wanted) = match stack.last() {
                None => ("a value", false),
                Some(Frame::List(_)) => ("a list", false),
                Some(Frame::Dict { keys, values }) => ("a dict", keys.len() == values.len()),
            };
            let byte = self.peek(inside)?;
            let complete = match byte {
                b'e' if !stack.is_empty() => {
                    self.pos += 1;
                    match stack.pop() {
                        Some(Frame::List(items)) => Value::List(items),
                        Some(Frame::Dict { keys, values }) => {
                            if let Some(&(key, key_at)) = keys.get(values.len()) {
                                return Err(BencodeError::MissingValue { at: key_at, key: show(key) });
                            }
                            Value::Dict(keys.into_iter().map(|(k, _)| k).zip(values).collect())
                        }
                        None => return Err(BencodeError::UnexpectedByte { at, byte, expected: "a value" }),
                    }
                }
                _ if key_wanted => {
                    if let Some(Frame::Dict { keys, .. }) = stack.last_mut() {
                        let previous = keys.last().map(|k| k.0);
                        let key = self.key(previous)?;
                        keys.push((key, at));
                    }
                    continue;
                }
                b'i' => {
                    self.count(at)?;
                    Value::Int(self.int()?)
                }
                b'0'..=b'9' => {
                    self.count(at)?;
                    Value::Bytes(self.bytes()?)
                }
                b'l' | b'd' => {
                    if depth + stack.len() >= MAX_DEPTH {
                        return Err(BencodeError::TooDeep { at });
                    }
                    self.count(at)?;
                    self.pos += 1;
                    stack.push(if byte == b'l' {
                        Frame::List(Vec::new())
                    } else {
                        Frame::Dict { keys: Vec::new(), values: Vec::new() }
                    });
                    continue;
                }
                _ => {
                    let expected = if stack.is_empty() {
                        "a value ('i', a digit, 'l' or 'd')"
                    } else {
                        "a value ('i', a digit, 'l' or 'd') or 'e'"
                    };
                    return Err(BencodeError::UnexpectedByte { at, byte, expected });
                }
            };
            match stack.last_mut() {
                None => return Ok(complete),
                Some(Frame::List(items)) => items.push(complete),
                Some(Frame::Dict { values, .. }) => values.push(complete),
            }
        }
    }

    /// A dict key, which must sort strictly after `previous`.
    fn key(&mut self, previous: Option<&[u8]>) -> Result<&'a [u8], BencodeError> {
        let at = self.pos;
        let byte = self.peek("a dict")?;
        if !byte.is_ascii_digit() {
            return Err(BencodeError::UnexpectedByte { at, byte, expected: "a dict key (a byte string) or 'e'" });
        }
        self.count(at)?;
        let key = self.bytes()?;
        if let Some(previous) = previous {
            match previous.cmp(key) {
                Ordering::Less => {}
                Ordering::Equal => return Err(BencodeError::DuplicateKey { at, key: show(key) }),
                Ordering::Greater => {
                    return Err(BencodeError::UnsortedKey { at, key: show(key), previous: show(previous) });
                }
            }
        }
        Ok(key)
    }

    /// `i<digits>e` at `pos`.
    fn int(&mut self) -> Result<i64, BencodeError> {
        let at = self.pos;
        let bad = |reason| BencodeError::BadInteger { at, reason };
        self.pos += 1;
        let negative = self.peek("an integer")? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_at = self.pos;
        // Accumulated toward the sign so that i64::MIN, whose magnitude i64 cannot hold, still parses.
        let mut value: i64 = 0;
        loop {
            let byte = self.peek("an integer")?;
            self.pos += 1;
            match byte {
                b'e' => break,
                b'0'..=b'9' => {
                    if value == 0 && self.pos - 1 > digits_at {
                        return Err(bad("has a leading zero"));
                    }
                    let digit = i64::from(byte - b'0');
                    let next = value
                        .checked_mul(10)
                        .and_then(|v| if negative { v.checked_sub(digit) } else { v.checked_add(digit) });
                    value = next.ok_or_else(|| bad("does not fit in 64 bits"))?;
                }
                _ => {
                    return Err(BencodeError::UnexpectedByte { at: self.pos - 1, byte, expected: "a digit or 'e'" });
                }
            }
        }
        let digits = self.pos - 1 - digits_at;
        if digits == 0 {
            return Err(bad("has no digits"));
        }
        if negative && value == 0 {
            return Err(bad("is negative zero"));
        }
        Ok(value)
    }

    /// `<length>:<bytes>` at `pos`; the length is checked against the bytes left before slicing.
    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let at = self.pos;
        let mut len: u64 = 0;
        loop {
            let byte = self.peek("a string length")?;
            self.pos += 1;
            match byte {
                b':' => break,
                b'0'..=b'9' => {
                    if len == 0 && self.pos - 1 > at {
                        return Err(BencodeError::BadLength { at, reason: "has a leading zero" });
                    }
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(byte - b'0')))
                        .ok_or(BencodeError::BadLength { at, reason: "does not fit in 64 bits" })?;
                }
                _ => {
                    return Err(BencodeError::UnexpectedByte { at: self.pos - 1, byte, expected: "a digit or ':'" });
                }
            }
        }
        let left = self.input.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= left => {
                let start = self.pos;
                self.pos += n;
                Ok(&self.input[start..self.pos])
            }
            _ => Err(BencodeError::StringPastEnd { at, len, input_len: self.input.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn err(input: &[u8]) -> String {
        decode(input).expect_err("refused").to_string()
    }

    #[test]
    fn canonical_values_decode() {
        let cases: &[(&[u8], Value<'_>)] = &[
            (b"i0e", Value::Int(0)),
            (b"i-1e", Value::Int(-1)),
            (b"i9223372036854775807e", Value::Int(i64::MAX)),
            (b"i-9223372036854775808e", Value::Int(i64::MIN)),
            (b"0:", Value::Bytes(b"")),
            (b"4:spam", Value::Bytes(b"spam")),
            (b"le", Value::List(vec![])),
            (b"de", Value::Dict(vec![])),
            (b"l4:spami3ee", Value::List(vec![Value::Bytes(b"spam"), Value::Int(3)])),
            (
                b"d0:i1e1:a0:2:aalee",
                Value::Dict(vec![(b"", Value::Int(1)), (b"a", Value::Bytes(b"")), (b"aa", Value::List(vec![]))]),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(input).as_ref(), Ok(expected), "{}", input.escape_ascii());
            assert_eq!(encode(expected), *input);
        }
    }

    /// (input, the message a user sees) for each way bytes are refused.
    const REFUSED: &[(&[u8], &str)] = &[
        (b"", "bencode: input ends at byte 0 inside a value"),
        (b"l", "bencode: input ends at byte 1 inside a list"),
        (b"d1:a", "bencode: input ends at byte 4 inside a dict"),
        (b"d1:ae", "bencode: dict key \"a\" at byte 1 has no value"),
        (b"ie", "bencode: integer at byte 0 has no digits"),
        (b"i-e", "bencode: integer at byte 0 has no digits"),
        (b"i-0e", "bencode: integer at byte 0 is negative zero"),
        (b"i03e", "bencode: integer at byte 0 has a leading zero"),
        (b"i-03e", "bencode: integer at byte 0 has a leading zero"),
        (b"i00e", "bencode: integer at byte 0 has a leading zero"),
        (b"i1.5e", "bencode: unexpected byte 0x2e at byte 2, expected a digit or 'e'"),
        (b"i9223372036854775808e", "bencode: integer at byte 0 does not fit in 64 bits"),
        (b"i-9223372036854775809e", "bencode: integer at byte 0 does not fit in 64 bits"),
        (b"i12", "bencode: input ends at byte 3 inside an integer"),
        (b"01:a", "bencode: string length at byte 0 has a leading zero"),
        (b"5:abc", "bencode: string length 5 at byte 0 runs past the end of the input (5 bytes)"),
        (b"99999999999999999999999:", "bencode: string length at byte 0 does not fit in 64 bits"),
        (b"3a:abc", "bencode: unexpected byte 0x61 at byte 1, expected a digit or ':'"),
        (b"x", "bencode: unexpected byte 0x78 at byte 0, expected a value ('i', a digit, 'l' or 'd')"),
        (b"e", "bencode: unexpected byte 0x65 at byte 0, expected a value ('i', a digit, 'l' or 'd')"),
        (b"i1ei2e", "bencode: 3 bytes after the value, from byte 3"),
        (b"di1ei2ee", "bencode: unexpected byte 0x69 at byte 1, expected a dict key (a byte string) or 'e'"),
        (
            b"d1:bi1e1:ai2ee",
            "bencode: dict key \"a\" at byte 7 comes after \"b\" but sorts before it (keys must be sorted)",
        ),
        (b"d1:ai1e1:ai2ee", "bencode: dict key \"a\" at byte 7 appears twice"),
        (
            b"d2:aai1e1:ai2ee",
            "bencode: dict key \"a\" at byte 8 comes after \"aa\" but sorts before it (keys must be sorted)",
        ),
    ];

    #[test]
    fn non_canonical_and_broken_input_is_refused_by_name() {
        for (input, message) in REFUSED {
            assert_eq!(err(input), *message, "{}", input.escape_ascii());
        }
    }

    #[test]
    fn a_huge_string_length_fails_before_allocating() {
        // 40 bytes of input claiming an 11-digit string.
        let mut input = b"d3:key".to_vec();
        input.extend_from_slice(b"l1:x99999999999:");
        input.resize(40, b'a');
        assert_eq!(
            err(&input),
            "bencode: string length 99999999999 at byte 10 runs past the end of the input (40 bytes)"
        );
        let max = format!("{}:", u64::MAX);
        assert_eq!(
            err(max.as_bytes()),
            format!("bencode: string length {} at byte 0 runs past the end of the input (21 bytes)", u64::MAX)
        );
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let nested = |n: usize| [vec![b'l'; n], vec![b'e'; n]].concat();
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(err(&nested(MAX_DEPTH + 1)), "bencode: nesting deeper than 64 at byte 64");
        // A million open lists: refused at the limit, and nothing recursed a million deep.
        assert_eq!(err(&vec![b'l'; 1_000_000]), "bencode: nesting deeper than 64 at byte 64");
        let dicts: Vec<u8> = b"d1:a".repeat(MAX_DEPTH + 1);
        assert_eq!(err(&dicts), format!("bencode: nesting deeper than 64 at byte {}", 4 * MAX_DEPTH));
    }

    #[test]
    fn element_count_is_bounded() {
        let list = |n: usize| [b"l".as_slice(), &b"0:".repeat(n), b"e"].concat();
        assert!(decode(&list(MAX_ELEMENTS - 1)).is_ok());
        assert_eq!(
            err(&list(MAX_ELEMENTS)),
            format!("bencode: more than {MAX_ELEMENTS} elements (the last at byte {})", 1 + 2 * (MAX_ELEMENTS - 1))
        );
    }

    #[test]
    fn decode_dict_gives_each_values_exact_bytes() {
        let input = b"d4:infod1:xi1ee1:zl0:ee";
        let entries = decode_dict(input).expect("valid");
        let raws: Vec<(&[u8], &[u8])> = entries.iter().map(|e| (e.key, e.raw)).collect();
        assert_eq!(raws, [(b"info".as_slice(), b"d1:xi1ee".as_slice()), (b"z", b"l0:e")]);
        assert_eq!(entries[0].value.get(b"x"), Some(&Value::Int(1)));
        assert_eq!(
            decode_dict(b"le").expect_err("a list").to_string(),
            "bencode: unexpected byte 0x6c at byte 0, expected a dict ('d')"
        );
        assert!(decode_dict(b"d1:ai1ee ").is_err());
        assert!(decode_dict(b"d1:bi1e1:ai1ee").is_err());
        assert_eq!(
            decode_dict(b"d1:ae").expect_err("no value").to_string(),
            "bencode: dict key \"a\" at byte 1 has no value"
        );
    }

    #[test]
    fn builder_sorts_and_replaces() {
        let dict = DictBuilder::new().int("b", 1).text("a", "x").int("b", 2).bytes("c", b"\xff").build();
        assert_eq!(encode(&dict), b"d1:a1:x1:bi2e1:c1:\xffe");
        // Encoding sorts a hand-made dict too.
        let unsorted = Value::Dict(vec![(b"z", Value::Int(0)), (b"a", Value::Int(1))]);
        assert_eq!(encode(&unsorted), b"d1:ai1e1:zi0ee");
    }

    fn arb_value() -> impl Strategy<Value = OwnedValue> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(OwnedValue::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(OwnedValue::Bytes)
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(OwnedValue::List),
                proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..6), inner, 0..6)
                    .prop_map(OwnedValue::Dict),
            ]
        })
    }

    /// An owned value for proptest to generate; borrowed as a [`Value`] to encode.
    #[derive(Debug, Clone)]
    enum OwnedValue {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<OwnedValue>),
        Dict(BTreeMap<Vec<u8>, OwnedValue>),
    }

    impl OwnedValue {
        fn borrow(&self) -> Value<'_> {
            match self {
                OwnedValue::Int(i) => Value::Int(*i),
                OwnedValue::Bytes(b) => Value::Bytes(b),
                OwnedValue::List(items) => Value::List(items.iter().map(OwnedValue::borrow).collect()),
                OwnedValue::Dict(map) => Value::Dict(map.iter().map(|(k, v)| (k.as_slice(), v.borrow())).collect()),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn values_round_trip(owned in arb_value()) {
            let value = owned.borrow();
            let bytes = encode(&value);
            prop_assert_eq!(decode(&bytes), Ok(value.clone()));
            if let Value::Dict(entries) = &value {
                let raw = decode_dict(&bytes).expect("a dict");
                prop_assert_eq!(raw.len(), entries.len());
                for (entry, (key, v)) in raw.iter().zip(entries) {
                    prop_assert_eq!(entry.key, *key);
                    let expected = encode(v);
                    prop_assert_eq!(entry.raw, expected.as_slice());
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(value) = decode(&bytes) {
                prop_assert_eq!(encode(&value), bytes.clone(), "accepted input is canonical");
            }
            let _ = decode_dict(&bytes);
        }

        #[test]
        fn mutated_values_never_panic(owned in arb_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut bytes = encode(&owned.borrow());
            for (at, byte) in flips {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            if let Ok(value) = decode(&bytes) {
                prop_assert_eq!(encode(&value), bytes.clone(), "accepted input is canonical");
            }
            let _ = decode_dict(&bytes);
        }
    }
}
