//! The tar (POSIX ustar + PAX) entry headers that `btfs get`'s tar stream and the gateway's `?format=tar`
//! write. Pure: callers write the bytes, then the entry's data, then [`padding`] zeros, then [`END`].
//!
//! An entry gets a PAX extended header in front when its path or link target does not fit ustar's fields or
//! its size passes ustar's 8 GiB. Modes are kubo's defaults (0644 files, 0755 directories, 0777 symlinks).

/// The tar block size (POSIX).
pub const BLOCK: usize = 512;
/// The largest size a ustar size field holds: 11 octal digits.
pub const USTAR_MAX_SIZE: u64 = 0o777_7777_7777;
/// The end-of-archive marker: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

pub const TYPE_FILE: u8 = b'0';
pub const TYPE_SYMLINK: u8 = b'2';
pub const TYPE_DIR: u8 = b'5';
pub const TYPE_PAX: u8 = b'x';

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

/// The header bytes of one entry (a PAX header first when needed): `size` is the file's length (0 for
/// others), `link` a symlink's target.
pub fn entry_header(path: &str, kind: EntryKind, size: u64, link: &str, mtime: u64) -> Vec<u8> {
    let (type_flag, mode) = match kind {
        EntryKind::File => (TYPE_FILE, 0o644),
        EntryKind::Directory => (TYPE_DIR, 0o755),
        EntryKind::Symlink => (TYPE_SYMLINK, 0o777),
    };
    let mut out = Vec::with_capacity(BLOCK);
    let mut pax = Vec::new();
    let split = split_ustar_path(path);
    if split.is_none() {
        pax_record(&mut pax, "path", path);
    }
    if link.len() > 100 {
        pax_record(&mut pax, "linkpath", link);
    }
    if size > USTAR_MAX_SIZE {
        pax_record(&mut pax, "size", &size.to_string());
    }
    if !pax.is_empty() {
        let name = format!("PaxHeaders/{}", truncate(path.rsplit('/').next().unwrap_or(""), 80));
        out.extend_from_slice(&ustar_header(("", &name), TYPE_PAX, 0o644, pax.len() as u64, mtime, ""));
        out.extend_from_slice(&pax);
        out.extend_from_slice(&[0; BLOCK][..padding(pax.len() as u64)]);
    }
    let (prefix, name) = split.unwrap_or(("", truncate(path, 100)));
    let size_field = if size > USTAR_MAX_SIZE { 0 } else { size };
    out.extend_from_slice(&ustar_header((prefix, name), type_flag, mode, size_field, mtime, truncate(link, 100)));
    out
}

/// Zero bytes that follow `size` bytes of data to fill the last block.
pub fn padding(size: u64) -> usize {
    // The remainder is below 512, so it fits any usize.
    let rem = usize::try_from(size % BLOCK as u64).unwrap_or(0);
    (BLOCK - rem) % BLOCK
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits a path into ustar's (prefix ≤ 155 bytes, name ≤ 100 bytes) at a `/`, if it can be.
fn split_ustar_path(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && !name.is_empty() && name.len() <= 100)
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where `len` counts the whole record, itself included.
pub fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let rest = key.len() + value.len() + 3; // the space, the '=' and the newline
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

fn ustar_header((prefix, name): (&str, &str), kind: u8, mode: u32, size: u64, mtime: u64, link: &str) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], name.as_bytes());
    put(&mut h[100..108], format!("{mode:07o}").as_bytes());
    put(&mut h[108..116], b"0000000");
    put(&mut h[116..124], b"0000000");
    put(&mut h[124..136], format!("{size:011o}").as_bytes());
    put(&mut h[136..148], format!("{:011o}", mtime.min(USTAR_MAX_SIZE)).as_bytes());
    h[148..156].fill(b' ');
    h[156] = kind;
    put(&mut h[157..257], link.as_bytes());
    put(&mut h[257..263], b"ustar\0");
    put(&mut h[263..265], b"00");
    put(&mut h[345..500], prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
    h
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}
