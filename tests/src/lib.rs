//! Helpers for the workspace's end-to-end tests: finding the `btfs` binary and running it against a
//! throwaway repository ([`TestRepo`]), the deterministic content generator the published CID vectors
//! use ([`chacha20_bytes`]), the published vectors themselves ([`fixtures`]), and the CID oracle
//! ([`js_oracle`]): the IPFS project's JavaScript UnixFS importer in `tests/js/oracle.mjs`, run as a
//! `node` child process over a batch of cases.
//!
//! Everything here panics on failure with a message that says what to do: these are test helpers,
//! and a failure to set up is a test failure, never a skip.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub mod bt;
pub mod chain;
pub mod daemon;

/// The `btfs` binary of the current build: `target/<profile>/btfs`, next to the `deps/` directory
/// that holds a test executable, or beside a benchmark binary.
pub fn btfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().expect("the executable has a directory");
    let profile_dir = if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir };
    let bin = profile_dir.join(format!("btfs{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the btfs binary is missing at {}: run `cargo build --release -p btfs-node` (with the same \
         CARGO_TARGET_DIR and profile as the tests) first",
        bin.display()
    );
    bin
}

/// A BTFS repository in a temporary directory, removed on drop; every command runs with
/// `BTFS_PATH` pointing at it.
pub struct TestRepo {
    dir: TempDir,
    bin: PathBuf,
}

impl TestRepo {
    /// Creates the directory and runs `btfs init --profile test` in it, with [`btfs_bin`].
    pub fn init() -> Self {
        Self::init_with(btfs_bin())
    }

    /// [`TestRepo::init`] with another `btfs` binary, which every command of this repo then runs (a
    /// benchmark's `--btfs`).
    pub fn init_with(bin: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("btfs-repo-").tempdir().expect("create a temporary BTFS_PATH");
        let repo = Self { dir, bin };
        repo.run_ok(&["init", "--profile", "test"]);
        repo
    }

    /// The repository directory (`BTFS_PATH`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `btfs` command with `BTFS_PATH` set, for callers that need more than [`TestRepo::run`].
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.env("BTFS_PATH", self.path()).stdin(Stdio::null());
        command
    }

    /// Runs `btfs <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()))
    }

    /// Runs `btfs <args>` and returns its stdout; panics with its stderr if it fails.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "`btfs {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("btfs prints UTF-8 on stdout")
    }
}

/// kubo's deterministic test content (test/cli/testutils/random_deterministic.go): the IETF ChaCha20
/// keystream with key = SHA-256 of the seed's UTF-8 bytes, a 12-byte zero nonce and counter 0.
pub struct KeyStream(ChaCha20);

impl KeyStream {
    pub fn new(seed: &str) -> Self {
        let key: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
        let nonce = [0u8; 12];
        Self(ChaCha20::new(&key.into(), &nonce.into()))
    }

    /// Overwrites `buf` with the next `buf.len()` bytes of the keystream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        buf.fill(0);
        self.0.apply_keystream(buf);
    }
}

/// The first `len` bytes of [`KeyStream`] for `seed`.
pub fn chacha20_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    KeyStream::new(seed).fill(&mut bytes);
    bytes
}

/// Writes the first `len` bytes of [`KeyStream`] for `seed` to a new file at `path`, a megabyte at a
/// time, so a 1 GiB vector costs no more memory than a small one.
pub fn write_chacha20_file(path: &Path, seed: &str, len: u64) -> io::Result<()> {
    const BLOCK: usize = 1 << 20;
    let mut stream = KeyStream::new(seed);
    let mut out = BufWriter::new(File::create(path)?);
    let mut buf = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(BLOCK as u64)).expect("a block fits in usize");
        stream.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// kubo's `Import` profiles (IPIP-499), as `btfs add --cid-profile` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Profile {
    #[serde(rename = "unixfs-v0-2015")]
    UnixfsV0_2015,
    #[serde(rename = "unixfs-v1-2025")]
    UnixfsV1_2025,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::UnixfsV0_2015 => "unixfs-v0-2015",
            Self::UnixfsV1_2025 => "unixfs-v1-2025",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::UnixfsV0_2015, Self::UnixfsV1_2025].into_iter().find(|p| p.name() == name)
    }
}

/// The multihash functions `btfs add --hash` takes, by their multicodec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HashFn {
    #[serde(rename = "sha2-256")]
    Sha2_256,
    #[serde(rename = "sha2-512")]
    Sha2_512,
    #[serde(rename = "blake2b-256")]
    Blake2b256,
    #[serde(rename = "blake3")]
    Blake3,
}

impl HashFn {
    pub const ALL: [Self; 4] = [Self::Sha2_256, Self::Sha2_512, Self::Blake2b256, Self::Blake3];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha2_256 => "sha2-256",
            Self::Sha2_512 => "sha2-512",
            Self::Blake2b256 => "blake2b-256",
            Self::Blake3 => "blake3",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// The flags of one `add`, shared by our CLI ([`AddOptions::cli_args`]) and the oracle (serialized
/// as the case's `opts`). `None` means the flag is not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_leaves: Option<bool>,
    /// `--chunker size-N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub trickle: bool,
    /// kubo's `--max-file-links`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_links: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashFn>,
    /// `-w`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wrap: bool,
}

impl AddOptions {
    /// Parses kubo `ipfs add` flags as the fixtures write them (`default`, `--cid-version=1`,
    /// `--raw-leaves=false`, `--hash=sha2-512`, `--trickle`, `--cid-profile=unixfs-v1-2025`, ...).
    pub fn from_kubo_flags(flags: &str) -> Result<Self, String> {
        let mut opts = Self::default();
        for flag in flags.split_whitespace() {
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            let bad = || format!("unsupported add flag {flag:?}");
            match (name, value) {
                ("default", None) => {}
                ("--cid-version", Some(v)) => opts.cid_version = Some(v.parse().map_err(|_| bad())?),
                ("--raw-leaves", None) => opts.raw_leaves = Some(true),
                ("--raw-leaves", Some(v)) => opts.raw_leaves = Some(v.parse().map_err(|_| bad())?),
                ("--trickle", None) => opts.trickle = true,
                ("-w" | "--wrap-with-directory", None) => opts.wrap = true,
                ("--hash", Some(v)) => opts.hash = Some(HashFn::parse(v).ok_or_else(bad)?),
                ("--cid-profile", Some(v)) => opts.profile = Some(Profile::parse(v).ok_or_else(bad)?),
                ("--max-file-links", Some(v)) => opts.max_links = Some(v.parse().map_err(|_| bad())?),
                ("--chunker", Some(v)) => {
                    let size = v.strip_prefix("size-").ok_or_else(bad)?;
                    opts.chunk_size = Some(size.parse().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(opts)
    }

    /// The flags for `btfs add` (without `-Q`, `--only-hash`, `-r` or the path).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(v) = self.cid_version {
            args.extend(["--cid-version".to_owned(), v.to_string()]);
        }
        match self.raw_leaves {
            Some(true) => args.push("--raw-leaves".to_owned()),
            Some(false) => args.push("--raw-leaves=false".to_owned()),
            None => {}
        }
        if let Some(size) = self.chunk_size {
            args.extend(["--chunker".to_owned(), format!("size-{size}")]);
        }
        if self.trickle {
            args.push("--trickle".to_owned());
        }
        if let Some(links) = self.max_links {
            args.extend(["--max-file-links".to_owned(), links.to_string()]);
        }
        if let Some(profile) = self.profile {
            args.extend(["--cid-profile".to_owned(), profile.name().to_owned()]);
        }
        if let Some(hash) = self.hash {
            args.extend(["--hash".to_owned(), hash.name().to_owned()]);
        }
        if self.wrap {
            args.push("-w".to_owned());
        }
        args
    }
}

/// `btfs add -Q --only-hash [flags] [-r] <path>` in `repo`: the CID it printed, or its error.
pub fn btfs_add_cid(repo: &TestRepo, path: &Path, opts: &AddOptions) -> Result<String, String> {
    let path_arg = path.to_str().expect("test paths are UTF-8");
    let flags = opts.cli_args();
    let mut args = vec!["add", "-Q", "--only-hash"];
    args.extend(flags.iter().map(String::as_str));
    if path.is_dir() {
        args.push("-r");
    }
    args.push(path_arg);
    let output = repo.run(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("exit {}: {}", output.status, stderr.trim()));
    }
    match stdout.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>()[..] {
        [cid] => Ok(cid.trim().to_owned()),
        _ => Err(format!("expected one line with the CID, got {stdout:?}")),
    }
}

/// One input for [`js_oracle`]: a file or directory on disk and the `add` flags to import it with.
#[derive(Debug, Clone, Serialize)]
pub struct OracleCase {
    pub id: String,
    /// Absolute path of a file or directory.
    pub path: PathBuf,
    pub opts: AddOptions,
}

#[derive(Deserialize)]
struct OracleLine {
    id: String,
    cid: Option<String>,
    error: Option<String>,
}

/// The directory of the JavaScript oracle (`tests/js`).
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs the JavaScript importer once over all `cases` and returns each case's CID by id. Panics if
/// `tests/js/node_modules` is missing (run `npm ci --prefix tests/js`), if node fails, or if the
/// oracle reports an error for any case (the case is malformed, or kubo would refuse it).
pub fn js_oracle(cases: &[OracleCase]) -> HashMap<String, String> {
    let dir = js_dir();
    assert!(
        dir.join("node_modules").is_dir(),
        "{} is missing: run `npm ci --prefix tests/js` from the workspace root (needs Node 20)",
        dir.join("node_modules").display()
    );
    let mut ids = HashSet::new();
    for case in cases {
        assert!(ids.insert(case.id.as_str()), "duplicate oracle case id {:?}", case.id);
        assert!(case.path.is_absolute(), "oracle case {:?} needs an absolute path", case.id);
    }

    let input = serde_json::to_vec(cases).expect("oracle cases serialize");
    let mut child = Command::new("node")
        .arg(dir.join("oracle.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `node` (Node 20 must be on PATH): {e}"));
    // The oracle reads all of stdin before it writes anything, so writing first cannot deadlock.
    child.stdin.take().expect("stdin is piped").write_all(&input).expect("write the cases to the oracle");
    let output = child.wait_with_output().expect("wait for the oracle");
    assert!(
        output.status.success(),
        "the JavaScript oracle failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let mut cids = HashMap::new();
    let mut errors = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line: OracleLine = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the oracle printed {line:?}, not a result line: {e}"));
        match (line.cid, line.error) {
            (Some(cid), None) => {
                cids.insert(line.id, cid);
            }
            (_, error) => errors.push(format!("{}: {}", line.id, error.unwrap_or_default())),
        }
    }
    assert!(errors.is_empty(), "the oracle refused cases:\n{}", errors.join("\n"));
    let missing: Vec<_> = ids.iter().filter(|id| !cids.contains_key(**id)).collect();
    assert!(missing.is_empty(), "the oracle gave no answer for {missing:?}");
    cids
}

/// Formats rows as a left-aligned text table under `header`, for failure messages.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub mod fixtures {
    //! The published content → CID vectors in `shared/fixtures/` (facts from kubo's tests, IPIP-499
    //! and the UnixFS spec), read at test time, and the directory vectors of `cid-dir-vectors.md`
    //! written out as a table that [`dir_vector_cids_in_markdown`] keeps in step with the file.

    use std::fs;
    use std::io;
    use std::path::{Path, PathBuf};

    use super::{AddOptions, KeyStream, Profile, write_chacha20_file};

    /// `shared/fixtures`, beside the workspace.
    pub fn dir() -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures")).to_path_buf()
    }

    fn read(name: &str) -> String {
        let path = dir().join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the fixture {}: {e}", path.display()))
    }

    /// The content column of `cid-vectors.tsv`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Content {
        Text(Vec<u8>),
        Zeros(u64),
        ChaCha20 { seed: String, len: u64 },
    }

    impl Content {
        fn parse(spec: &str) -> Result<Self, String> {
            if let Some(text) = spec.strip_prefix("text:") {
                return unescape(text).map(Self::Text);
            }
            if let Some(len) = spec.strip_prefix("zeros:") {
                return len.parse().map(Self::Zeros).map_err(|e| format!("{spec:?}: {e}"));
            }
            if let Some(rest) = spec.strip_prefix("chacha20:") {
                let (seed, len) =
                    rest.rsplit_once(':').ok_or_else(|| format!("{spec:?}: expected chacha20:<seed>:<bytes>"))?;
                let len = len.parse().map_err(|e| format!("{spec:?}: {e}"))?;
                return Ok(Self::ChaCha20 { seed: seed.to_owned(), len });
            }
            Err(format!("unknown content spec {spec:?}"))
        }

        pub fn len(&self) -> u64 {
            match self {
                Self::Text(bytes) => bytes.len() as u64,
                Self::Zeros(len) | Self::ChaCha20 { len, .. } => *len,
            }
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Writes the content to a new file, streaming large contents.
        pub fn write_to(&self, path: &Path) -> io::Result<()> {
            match self {
                Self::Text(bytes) => fs::write(path, bytes),
                Self::Zeros(len) => fs::File::create(path)?.set_len(*len),
                Self::ChaCha20 { seed, len } => write_chacha20_file(path, seed, *len),
            }
        }
    }

    fn unescape(text: &str) -> Result<Vec<u8>, String> {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                other => return Err(format!("unknown escape \\{other:?} in {text:?}")),
            }
        }
        Ok(out.into_bytes())
    }

    /// One row of `cid-vectors.tsv`.
    #[derive(Debug, Clone)]
    pub struct FileVector {
        /// `line <n>: <content> <options>`, for messages.
        pub id: String,
        pub content: Content,
        pub opts: AddOptions,
        pub cid: String,
        pub source: String,
    }

    /// Every row of `cid-vectors.tsv`. Panics on a row it cannot interpret, so a new kind of vector
    /// fails loudly instead of being skipped.
    pub fn file_vectors() -> Vec<FileVector> {
        let text = read("cid-vectors.tsv");
        let mut rows = Vec::new();
        let mut header_seen = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            if !header_seen {
                assert_eq!(cols, ["content", "options", "cid", "source"], "cid-vectors.tsv header");
                header_seen = true;
                continue;
            }
            let [content, options, cid, source] = cols[..] else {
                panic!("cid-vectors.tsv line {}: expected 4 columns: {line:?}", n + 1);
            };
            let fail = |e: String| -> ! { panic!("cid-vectors.tsv line {}: {e}", n + 1) };
            rows.push(FileVector {
                id: format!("tsv line {}: {content} {options}", n + 1),
                content: Content::parse(content).unwrap_or_else(|e| fail(e)),
                opts: AddOptions::from_kubo_flags(options).unwrap_or_else(|e| fail(e)),
                cid: cid.to_owned(),
                source: source.to_owned(),
            });
        }
        assert!(!rows.is_empty(), "cid-vectors.tsv holds no vectors");
        rows
    }

    /// Vectors from kubo's test/cli/cid_profiles_test.go (`TestCIDProfiles`, the IPIP-499 profile
    /// expectations) that `cid-vectors.tsv` does not carry.
    pub fn kubo_profile_file_vectors() -> Vec<FileVector> {
        let source = "kubo test/cli/cid_profiles_test.go";
        let v1 = AddOptions { profile: Some(Profile::UnixfsV1_2025), ..AddOptions::default() };
        vec![
            FileVector {
                id: "kubo unixfs-v0-2015 file over max links (44800 KiB)".to_owned(),
                content: Content::ChaCha20 { seed: "v0-seed".to_owned(), len: 44_800 * 1024 },
                opts: AddOptions::default(),
                cid: "QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf".to_owned(),
                source: source.to_owned(),
            },
            FileVector {
                id: "kubo unixfs-v1-2025 file over max links (1025 MiB)".to_owned(),
                content: Content::ChaCha20 { seed: "v1-2025-seed".to_owned(), len: 1025 << 20 },
                opts: v1,
                cid: "bafybeihmzokxxjqwxjcryerhp5ezpcog2wcawfryb2xm64xiakgm4a5jue".to_owned(),
                source: source.to_owned(),
            },
        ]
    }

    /// How a directory vector's input is built.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DirSpec {
        /// An empty directory.
        Empty,
        /// kubo t0040's `planets/`: `mars.txt` = "Hello Mars!\n", `venus.txt` = "Hello Venus!\n".
        Planets,
        /// kubo's `createDeterministicFiles` (test/cli/add_test.go): see [`kubo_deterministic_names`];
        /// every file holds the single byte `x`.
        KuboDeterministic { files: usize, name_len: usize, last_name_len: usize, seed: &'static str },
    }

    impl DirSpec {
        /// Creates the directory `path` (which must not exist) with this content.
        pub fn write_to(&self, path: &Path) -> io::Result<()> {
            fs::create_dir(path)?;
            match *self {
                Self::Empty => {}
                Self::Planets => {
                    fs::write(path.join("mars.txt"), "Hello Mars!\n")?;
                    fs::write(path.join("venus.txt"), "Hello Venus!\n")?;
                }
                Self::KuboDeterministic { files, name_len, last_name_len, seed } => {
                    for name in kubo_deterministic_names(files, name_len, last_name_len, seed) {
                        fs::write(path.join(name), "x")?;
                    }
                }
            }
            Ok(())
        }
    }

    /// kubo test/cli/testutils `AlphabetEasy` (39 characters: the digit 0 appears twice).
    const ALPHABET_EASY: &[u8] = b"abcdefghijklmnopqrstuvwxyz01234567890-_";

    /// The file names kubo's `createDeterministicFiles(dir, files, name_len, last_name_len, seed)`
    /// creates: one keystream ([`KeyStream`] of `seed`) read `name_len` bytes per name (the last name
    /// `last_name_len`), each byte mapped to `ALPHABET_EASY[byte % 39]`.
    pub fn kubo_deterministic_names(files: usize, name_len: usize, last_name_len: usize, seed: &str) -> Vec<String> {
        let mut stream = KeyStream::new(seed);
        let names: Vec<String> = (0..files)
            .map(|i| {
                let len = if i + 1 == files { last_name_len } else { name_len };
                let mut bytes = vec![0u8; len];
                stream.fill(&mut bytes);
                bytes.iter().map(|b| char::from(ALPHABET_EASY[usize::from(*b) % ALPHABET_EASY.len()])).collect()
            })
            .collect();
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), files, "kubo's deterministic names collided");
        names
    }

    /// One directory vector.
    #[derive(Debug, Clone)]
    pub struct DirVector {
        pub id: &'static str,
        pub spec: DirSpec,
        pub opts: AddOptions,
        pub cid: &'static str,
        pub source: &'static str,
    }

    /// The vectors of `cid-dir-vectors.md`, plus kubo's unixfs-v1-2025 HAMT threshold pair from
    /// test/cli/cid_profiles_test.go.
    pub fn dir_vectors() -> Vec<DirVector> {
        let default = AddOptions::default();
        let raw = AddOptions { raw_leaves: Some(true), ..AddOptions::default() };
        let v1 = AddOptions { cid_version: Some(1), ..AddOptions::default() };
        let v1_no_raw = AddOptions { raw_leaves: Some(false), ..v1.clone() };
        let v1_2025 = AddOptions { profile: Some(Profile::UnixfsV1_2025), ..AddOptions::default() };
        let v0_hamt = |files, name_len| DirSpec::KuboDeterministic {
            files,
            name_len,
            last_name_len: name_len,
            seed: "hamt-unixfs-v0-2015",
        };
        let v1_hamt = |last_name_len| DirSpec::KuboDeterministic {
            files: 4766,
            name_len: 11,
            last_name_len,
            seed: "hamt-unixfs-v1-2025",
        };
        let md = "cid-dir-vectors.md";
        let profiles = "kubo test/cli/cid_profiles_test.go";
        vec![
            DirVector {
                id: "empty dir",
                spec: DirSpec::Empty,
                opts: default.clone(),
                cid: "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                source: md,
            },
            DirVector {
                id: "empty dir cid-v1",
                spec: DirSpec::Empty,
                opts: v1.clone(),
                cid: "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354",
                source: md,
            },
            DirVector {
                id: "planets",
                spec: DirSpec::Planets,
                opts: default.clone(),
                cid: "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY",
                source: md,
            },
            DirVector {
                id: "planets raw-leaves",
                spec: DirSpec::Planets,
                opts: raw,
                cid: "QmfWfQfKCY5Ukv9peBbxM5vqWM9BzmqUSXvdCgjT2wsiBT",
                source: md,
            },
            DirVector {
                id: "planets cid-v1",
                spec: DirSpec::Planets,
                opts: v1,
                cid: "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi",
                source: md,
            },
            DirVector {
                id: "planets cid-v1 no-raw",
                spec: DirSpec::Planets,
                opts: v1_no_raw,
                cid: "bafybeif5tuep5ap2d7zyhbktucey75aoacxufgt6i3v4gebmixyipnyp7y",
                source: md,
            },
            DirVector {
                id: "hamt v0 at threshold (4096 x 30)",
                spec: v0_hamt(4096, 30),
                opts: default.clone(),
                cid: "QmX5GtRk3TSSEHtdrykgqm4eqMEn3n2XhfkFAis5fjyZmN",
                source: md,
            },
            DirVector {
                id: "hamt v0 over threshold (4033 x 31)",
                spec: v0_hamt(4033, 31),
                opts: default,
                cid: "QmeMiJzmhpJAUgynAcxTQYek5PPKgdv3qEvFsdV3XpVnvP",
                source: md,
            },
            DirVector {
                id: "hamt v1-2025 at threshold (4765 x 11 + 21)",
                spec: v1_hamt(21),
                opts: v1_2025.clone(),
                cid: "bafybeic3h7rwruealwxkacabdy45jivq2crwz6bufb5ljwupn36gicplx4",
                source: profiles,
            },
            DirVector {
                id: "hamt v1-2025 over threshold (4765 x 11 + 22)",
                spec: v1_hamt(22),
                opts: v1_2025,
                cid: "bafybeiegvuterwurhdtkikfhbxcldohmxp566vpjdofhzmnhv6o4freidu",
                source: profiles,
            },
        ]
    }

    /// CIDs in `cid-dir-vectors.md` that no local input can reproduce, with the reason.
    pub const DIR_VECTORS_NOT_REPRODUCIBLE: &[(&str, &str)] = &[(
        "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i",
        "root of gateway-conformance's single-layer-hamt-with-multi-block-files.car, whose \
         content is not in shared/fixtures",
    )];

    /// Every CID written in backticks in `cid-dir-vectors.md`.
    pub fn dir_vector_cids_in_markdown() -> Vec<String> {
        read("cid-dir-vectors.md")
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                (s.starts_with("Qm") && s.len() == 46)
                    || (s.starts_with("baf") && s.len() > 50 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            })
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubo_flags_round_trip_to_cli_args() {
        let opts =
            AddOptions::from_kubo_flags("--cid-version=1 --raw-leaves=false --hash=blake3 -w").expect("valid flags");
        assert_eq!(opts.cli_args(), ["--cid-version", "1", "--raw-leaves=false", "--hash", "blake3", "-w"]);
        assert!(AddOptions::from_kubo_flags("--inline").is_err());
    }

    #[test]
    fn oracle_options_serialize_in_camel_case_without_unset_flags() {
        let opts = AddOptions { cid_version: Some(1), chunk_size: Some(1000), ..AddOptions::default() };
        let json = serde_json::to_string(&opts).expect("serializes");
        assert_eq!(json, r#"{"cidVersion":1,"chunkSize":1000}"#);
    }

    #[test]
    fn streamed_file_matches_in_memory_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let len = (1 << 20) + 17;
        write_chacha20_file(&path, "s", len as u64).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), chacha20_bytes("s", len));
    }

    /// RFC 8439 §2.4.2's test vector fixes the IETF variant (12-byte nonce, 32-bit counter): its key
    /// and nonce are not of our seed form, so this checks the cipher, and the published CIDs check
    /// the key derivation.
    #[test]
    fn chacha20_is_the_ietf_variant() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce = [0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let mut cipher = ChaCha20::new(&key.into(), &nonce.into());
        let mut block = [0u8; 64 + 16];
        cipher.apply_keystream(&mut block);
        // counter 1 starts at byte 64: RFC 8439 §2.4.2 uses initial counter 1
        assert_eq!(
            &block[64..80],
            &[0x22, 0x4f, 0x51, 0xf3, 0x40, 0x1b, 0xd9, 0xe1, 0x2f, 0xde, 0x27, 0x6f, 0xb8, 0x63, 0x1d, 0xed]
        );
    }
}
