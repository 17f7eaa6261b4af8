//! A small tar codec: the ustar writer behind the RPC API's `get` (kubo sends a tar there) and the extractor
//! the CLI uses to unpack it in remote mode.
//!
//! The writer emits the headers of `btfs_chunker::tar` (ustar, with PAX where a field does not fit); file
//! bodies stream through, so memory does not grow with the file.
//!
//! The extractor treats the archive as hostile: every path must lie under the first entry (the root, which
//! becomes `dest`), `..` and absolute paths are refused, an entry's parent must be a directory this
//! extraction created (so nothing is ever written through a symlink), nothing existing is overwritten, and
//! the tree is built under a temporary name that is renamed into place only when the whole archive was
//! read, as the local `get` does.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use btfs_chunker::tar::{BLOCK, EntryKind, TYPE_DIR, TYPE_FILE, TYPE_PAX, TYPE_SYMLINK, entry_header, padding};

/// PAX and GNU long-name headers larger than this are refused: no path or link target needs more.
const MAX_META: u64 = 64 * 1024;

/// Writes a tar stream entry by entry.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> Writer<W> {
    /// A writer stamping every entry with `mtime` (seconds since the epoch).
    pub fn new(out: W, mtime: u64) -> Self {
        Self { out, mtime }
    }

    pub fn directory(&mut self, path: &str) -> io::Result<()> {
        self.header(path, EntryKind::Directory, 0, "")
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.header(path, EntryKind::Symlink, 0, target)
    }

    /// Starts a file of exactly `size` bytes; write them to the returned body, then call `finish` on it.
    pub fn file(&mut self, path: &str, size: u64) -> io::Result<FileBody<'_, W>> {
        self.header(path, EntryKind::File, size, "")?;
        Ok(FileBody { out: &mut self.out, size, remaining: size })
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, path: &str, kind: EntryKind, size: u64, link: &str) -> io::Result<()> {
        self.out.write_all(&entry_header(path, kind, size, link, self.mtime))
    }
}

/// The body of one file entry: takes exactly the size its header announced.
#[derive(Debug)]
pub struct FileBody<'a, W: Write> {
    out: &'a mut W,
    size: u64,
    remaining: u64,
}

impl<W: Write> FileBody<'_, W> {
    /// Pads the entry to a whole block; fails if fewer bytes came than the header announced.
    pub fn finish(self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar entry got {} bytes, its header announced {}", self.size - self.remaining, self.size),
            ));
        }
        self.out.write_all(&[0; BLOCK][..padding(self.size)])
    }
}

impl<W: Write> Write for FileBody<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar entry got more bytes than its header announced ({})", self.size),
            ));
        }
        let n = self.out.write(buf)?;
        self.remaining -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Errors extracting a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    #[error("the archive ended in the middle of an entry")]
    Truncated,
    #[error("the archive is not a valid tar: {0}")]
    Malformed(String),
    #[error("the archive is empty")]
    Empty,
    #[error("archive entry {path:?} is outside the root or names a parent directory")]
    Unsafe { path: String },
    #[error("archive entry {path:?} has no directory entry for its parent before it")]
    NoParent { path: String },
    #[error("cannot write {path}")]
    Output { path: String, source: io::Error },
}

/// One header, PAX and GNU extensions already applied.
struct Entry {
    path: String,
    kind: u8,
    size: u64,
    link: String,
}

/// Extracts the archive in `input` to `dest`, which must not exist: the archive's first entry becomes
/// `dest`, the rest must lie under it. `progress` hears of every file byte written.
pub fn extract(input: impl Read, dest: &Path, progress: &dyn Fn(u64)) -> Result<(), ExtractError> {
    let out_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| ExtractError::Output { path, source }
    };
    if dest.symlink_metadata().is_ok() {
        return Err(out_err(dest)(io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists")));
    }
    let tmp =
        dest.with_file_name(format!(".{}.btfs-partial", dest.file_name().and_then(|n| n.to_str()).unwrap_or("get")));
    let result = Extractor { input, root: Vec::new(), dirs: HashSet::new(), tmp: tmp.clone() }.run(progress);
    match result {
        Ok(()) => fs::rename(&tmp, dest).map_err(out_err(dest)),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
            Err(e)
        }
    }
}

struct Extractor<R> {
    input: R,
    /// The first entry's path components: every later entry must start with them.
    root: Vec<String>,
    /// Directories this extraction created, relative to the root ("" is the root itself).
    dirs: HashSet<String>,
    tmp: PathBuf,
}

impl<R: Read> Extractor<R> {
    fn run(mut self, progress: &dyn Fn(u64)) -> Result<(), ExtractError> {
        let mut first = true;
        while let Some(entry) = self.next_entry()? {
            let parts = clean_path(&entry.path)?;
            let rel = if first {
                self.root = parts;
                first = false;
                Vec::new()
            } else {
                match parts.strip_prefix(self.root.as_slice()) {
                    Some(rest) if !rest.is_empty() => rest.to_vec(),
                    _ => return Err(ExtractError::Unsafe { path: entry.path }),
                }
            };
            if let Some((_, parent)) = rel.split_last()
                && !self.dirs.contains(&parent.join("/"))
            {
                return Err(ExtractError::NoParent { path: entry.path });
            }
            let target = rel.iter().fold(self.tmp.clone(), |p, part| p.join(part));
            let out_err = |source| ExtractError::Output { path: target.display().to_string(), source };
            match entry.kind {
                TYPE_DIR => {
                    fs::create_dir(&target).map_err(out_err)?;
                    self.dirs.insert(rel.join("/"));
                }
                TYPE_SYMLINK => crate::read::make_symlink(&entry.link, &target).map_err(out_err)?,
                _ => {
                    // `create_new` refuses an existing path, a symlink included.
                    let file = fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(out_err)?;
                    let mut file = io::BufWriter::with_capacity(1 << 20, file);
                    self.copy_body(entry.size, &mut file, progress).map_err(|e| match e {
                        CopyError::Read(e) => e,
                        CopyError::Write(source) => out_err(source),
                    })?;
                    file.flush().map_err(out_err)?;
                    self.skip(padding(entry.size) as u64)?;
                }
            }
        }
        if first { Err(ExtractError::Empty) } else { Ok(()) }
    }

    /// Reads headers until a file, directory or symlink entry; `None` at the end-of-archive marker.
    fn next_entry(&mut self) -> Result<Option<Entry>, ExtractError> {
        let (mut long_path, mut long_link, mut pax_size) = (None, None, None);
        loop {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                // Some writers omit the end marker; a stream that ends between entries is complete.
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_checksum(&block)?;
            let kind = block[156];
            let size = parse_size(&block[124..136])?;
            match kind {
                TYPE_PAX | b'g' | b'L' | b'K' => {
                    let body = self.read_meta(size)?;
                    match kind {
                        TYPE_PAX => {
                            for (key, value) in parse_pax(&body)? {
                                match key.as_str() {
                                    "path" => long_path = Some(value),
                                    "linkpath" => long_link = Some(value),
                                    "size" => {
                                        pax_size = Some(value.parse::<u64>().map_err(|_| {
                                            ExtractError::Malformed(format!("PAX size {value:?} is not a number"))
                                        })?);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        b'L' => long_path = Some(nul_terminated(&body)?),
                        b'K' => long_link = Some(nul_terminated(&body)?),
                        _ => {} // global PAX records carry nothing an extraction needs
                    }
                }
                TYPE_FILE | b'\0' | b'7' | TYPE_DIR | TYPE_SYMLINK => {
                    let path = match long_path {
                        Some(p) => p,
                        None => {
                            let name = nul_terminated(&block[0..100])?;
                            let prefix = if &block[257..262] == b"ustar" {
                                nul_terminated(&block[345..500])?
                            } else {
                                String::new()
                            };
                            if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
                        }
                    };
                    let link = match long_link {
                        Some(l) => l,
                        None => nul_terminated(&block[157..257])?,
                    };
                    let kind = if kind == TYPE_DIR || kind == TYPE_SYMLINK { kind } else { TYPE_FILE };
                    let size = if kind == TYPE_FILE { pax_size.unwrap_or(size) } else { 0 };
                    return Ok(Some(Entry { path, kind, size, link }));
                }
                other => {
                    return Err(ExtractError::Malformed(format!(
                        "entry type {:?} is not a file, directory or symlink",
                        char::from(other)
                    )));
                }
            }
        }
    }

    /// Fills `block`; false at a clean end of input before the first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, ExtractError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.input.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(ExtractError::Truncated),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ExtractError::Read(e)),
            }
        }
        Ok(true)
    }

    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>, ExtractError> {
        if size > MAX_META {
            return Err(ExtractError::Malformed(format!("extended header of {size} bytes")));
        }
        let mut body = Vec::new();
        (&mut self.input).take(size).read_to_end(&mut body).map_err(ExtractError::Read)?;
        if body.len() as u64 != size {
            return Err(ExtractError::Truncated);
        }
        self.skip(padding(size) as u64)?;
        Ok(body)
    }

    fn skip(&mut self, n: u64) -> Result<(), ExtractError> {
        let skipped = io::copy(&mut (&mut self.input).take(n), &mut io::sink()).map_err(ExtractError::Read)?;
        if skipped == n { Ok(()) } else { Err(ExtractError::Truncated) }
    }

    fn copy_body(&mut self, size: u64, out: &mut dyn Write, progress: &dyn Fn(u64)) -> Result<(), CopyError> {
        let mut remaining = size;
        let mut buf = vec![0u8; 256 * 1024];
        while remaining > 0 {
            let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
            let n = match self.input.read(&mut buf[..want]) {
                Ok(0) => return Err(CopyError::Read(ExtractError::Truncated)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(ExtractError::Read(e))),
            };
            out.write_all(&buf[..n]).map_err(CopyError::Write)?;
            progress(n as u64);
            remaining -= n as u64;
        }
        Ok(())
    }
}

enum CopyError {
    Read(ExtractError),
    Write(io::Error),
}

/// A path's components with `.` and empty segments dropped; absolute paths and `..` are refused.
fn clean_path(path: &str) -> Result<Vec<String>, ExtractError> {
    if path.starts_with('/') {
        return Err(ExtractError::Unsafe { path: path.to_string() });
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ExtractError::Unsafe { path: path.to_string() }),
            p if p.contains('\\') => return Err(ExtractError::Unsafe { path: path.to_string() }),
            p => parts.push(p.to_string()),
        }
    }
    if parts.is_empty() {
        return Err(ExtractError::Unsafe { path: path.to_string() });
    }
    Ok(parts)
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<(), ExtractError> {
    let stored = parse_octal(&block[148..156])?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) })
        .sum();
    if stored == sum { Ok(()) } else { Err(ExtractError::Malformed("header checksum mismatch".into())) }
}

/// A numeric field: octal digits, or GNU's base-256 form (high bit of the first byte set).
fn parse_size(field: &[u8]) -> Result<u64, ExtractError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| ExtractError::Malformed("size overflows 64 bits".into()))?;
        }
        return Ok(v);
    }
    parse_octal(field)
}

fn parse_octal(field: &[u8]) -> Result<u64, ExtractError> {
    let text = field.iter().take_while(|&&b| b != 0).map(|&b| char::from(b)).collect::<String>();
    let digits = text.trim_matches(' ');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8).map_err(|_| ExtractError::Malformed(format!("numeric field {text:?} is not octal")))
}

fn nul_terminated(bytes: &[u8]) -> Result<String, ExtractError> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| ExtractError::Malformed("a name is not valid UTF-8".into()))
}

/// Parses PAX records (`"<len> <key>=<value>\n"`).
fn parse_pax(mut body: &[u8]) -> Result<Vec<(String, String)>, ExtractError> {
    let bad = || ExtractError::Malformed("invalid PAX record".into());
    let mut out = Vec::new();
    while !body.is_empty() {
        let space = body.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&body[..space]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if len <= space + 1 || len > body.len() || body[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = std::str::from_utf8(&body[space + 1..len - 1]).map_err(|_| bad())?;
        let (key, value) = record.split_once('=').ok_or_else(bad)?;
        out.push((key.to_string(), value.to_string()));
        body = &body[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs GNU tar (an outside reference) on `archive` and returns its verbose listing.
    fn gnu_tar_list(archive: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        fs::write(&path, archive).expect("write");
        let out = std::process::Command::new("tar").arg("-tvf").arg(&path).output().expect("run tar");
        assert!(out.status.success(), "tar -t failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn sample(long: &str) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), 1_700_000_000);
        w.directory("root").expect("dir");
        let mut body = w.file("root/a.txt", 5).expect("file");
        body.write_all(b"hello").expect("body");
        body.finish().expect("finish");
        w.symlink("root/link", "a.txt").expect("symlink");
        w.directory(&format!("root/{long}")).expect("long dir");
        let mut body = w.file(&format!("root/{long}/{long}"), 0).expect("long file");
        body.flush().expect("flush");
        body.finish().expect("finish");
        w.finish().expect("finish")
    }

    #[test]
    fn gnu_tar_reads_what_the_writer_writes() {
        let long = "n".repeat(150);
        let listing = gnu_tar_list(&sample(&long));
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 5, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" root"), "{}", lines[0]);
        assert!(lines[1].starts_with("-rw-r--r--") && lines[1].contains(" 5 ") && lines[1].ends_with("root/a.txt"));
        assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("root/link -> a.txt"), "{}", lines[2]);
        assert!(lines[4].ends_with(&format!("root/{long}/{long}")), "PAX long path: {}", lines[4]);
    }

    #[test]
    fn extract_round_trips_and_refuses_an_existing_destination() {
        let long = "n".repeat(150);
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out");
        extract(&sample(&long)[..], &dest, &|_| {}).expect("extract");
        assert_eq!(fs::read(dest.join("a.txt")).expect("a.txt"), b"hello");
        assert_eq!(fs::read_link(dest.join("link")).expect("link"), Path::new("a.txt"));
        assert!(dest.join(&long).join(&long).is_file());
        assert!(extract(&sample(&long)[..], &dest, &|_| {}).is_err(), "existing destination");
    }

    /// Archives made by GNU tar, the outside reference, that an extraction must refuse.
    #[test]
    fn hostile_archives_are_refused_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("root")).expect("mkdir");
        fs::write(src.join("root/f"), b"x").expect("write");
        std::os::unix::fs::symlink("/tmp", src.join("root/escape")).expect("symlink");
        let gnu = |args: &[&str]| {
            let out = std::process::Command::new("tar")
                .arg("-C")
                .arg(&src)
                .args(["--format=ustar", "--blocking-factor=1", "-cf", "-"])
                .args(args)
                .output()
                .expect("run tar");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        // A symlink, then a file "through" it; a file outside the root; a path climbing out.
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("write through a symlink", {
                let mut a = gnu(&["--no-recursion", "root", "root/escape"]);
                a.truncate(a.len() - 2 * BLOCK);
                let mut w = Writer::new(a, 0);
                let mut body = w.file("root/escape/pwned", 1).expect("file");
                body.write_all(b"x").expect("body");
                body.finish().expect("finish");
                w.finish().expect("finish")
            }),
            ("second root", gnu(&["--no-recursion", "root/f", "root"])),
            ("parent path", gnu(&["--no-recursion", "--transform=s,^root/f,root/../f,", "root", "root/f"])),
        ];
        for (what, archive) in cases {
            let dest = dir.path().join("out");
            assert!(extract(&archive[..], &dest, &|_| {}).is_err(), "{what}");
            assert!(!dest.exists(), "{what}: nothing left at the destination");
            assert!(!Path::new("/tmp/pwned").exists());
        }
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for len in [1, 5, 90, 93, 94, 95, 995, 996, 997] {
            let mut out = Vec::new();
            btfs_chunker::tar::pax_record(&mut out, "path", &"a".repeat(len));
            let parsed = parse_pax(&out).expect("parses");
            assert_eq!(parsed, vec![("path".to_string(), "a".repeat(len))]);
        }
    }
}
