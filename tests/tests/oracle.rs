//! CID parity with kubo, checked two ways against outside references:
//!
//! - `oracle_agrees_with_btfs`: a named table of edge cases (chunk and link-count boundaries, trickle
//!   layers, profiles, hash functions, `-w`, directories up to HAMT thresholds) is written to a
//!   tempdir, imported once by the JavaScript UnixFS importer (the oracle, `tests/js/oracle.mjs`, one
//!   batch) and once per case by `btfs add --only-hash`; every disagreement is collected and reported
//!   as one table.
//! - `vectors`: every published vector in `shared/fixtures/` (and kubo's IPIP-499 profile vectors)
//!   against our binary, the 1 GiB ones included.
//!
//! Before the oracle is trusted, `oracle_reproduces_published_vectors` checks it against the same
//! published vectors, so a disagreement can be blamed on the right side.
//!
//! Needs `cargo build --release -p btfs-node` (for `btfs`) and `npm ci --prefix tests/js` (for the
//! oracle); a test that lacks either fails and says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use btfs_tests::fixtures::{self, Content, DirSpec};
use btfs_tests::{
    AddOptions, HashFn, KeyStream, OracleCase, Profile, TestRepo, btfs_add_cid, js_oracle, table, write_chacha20_file,
};
use tempfile::TempDir;

/// kubo's default chunker, `size-262144`.
const CHUNK: u64 = 262_144;
/// kubo's default links per file node (boxo `helpers.DefaultLinksPerBlock`).
const LINKS: u64 = 174;
/// unixfs-v1-2025's chunk size and links per file node (IPIP-499).
const V1_CHUNK: u64 = 1 << 20;
const V1_LINKS: u64 = 1024;
/// kubo's trickle builder repeats each layer 4 times, so with `l` links per node a trickle DAG is
/// full at l, 5l, 25l, 125l leaves.
const TRICKLE_REPEAT: u64 = 4;
/// Published vectors above this size go to the oracle one at a time.
const ORACLE_BATCH_LIMIT: u64 = 64 << 20;

/// Names whose byte order matters: case, prefixes of each other, punctuation below and above
/// letters, and U+FF5E (3 UTF-8 bytes) against U+1F642 (4 bytes), which UTF-16 order sorts the
/// other way round.
#[rustfmt::skip]
const SORTING_NAMES: &[&str] = &[
    "B", "a", "A", "b", "a.txt", "ab", "a-b", "a b", "aa", "a_", "e", "é", "z", "Z", "日本語", "🙂", "\u{FF5E}",
    "1", "10", "2", "_", "-", "~",
];

fn opts() -> AddOptions {
    AddOptions::default()
}

/// The four leaf/CID combinations kubo distinguishes, each named for case ids.
fn leaf_variants() -> [(&'static str, AddOptions); 4] {
    [
        ("default", opts()),
        ("raw-leaves", AddOptions { raw_leaves: Some(true), ..opts() }),
        ("cid-v1", AddOptions { cid_version: Some(1), ..opts() }),
        ("cid-v1-no-raw", AddOptions { cid_version: Some(1), raw_leaves: Some(false), ..opts() }),
    ]
}

/// The three variants every directory case runs under.
fn dir_variants() -> [(&'static str, AddOptions); 3] {
    let [default, raw, v1, _] = leaf_variants();
    [default, raw, v1]
}

fn v1_2025() -> AddOptions {
    AddOptions { profile: Some(Profile::UnixfsV1_2025), ..opts() }
}

/// Where the test inputs live: one file per (size), content from a per-input seed, shared by every
/// case that imports it.
struct Inputs {
    root: TempDir,
    files: std::collections::HashMap<u64, PathBuf>,
}

impl Inputs {
    fn new() -> Self {
        let root = tempfile::Builder::new().prefix("btfs-oracle-").tempdir().expect("create the input tempdir");
        fs::create_dir(root.path().join("files")).expect("create files/");
        fs::create_dir(root.path().join("dirs")).expect("create dirs/");
        Self { root, files: Default::default() }
    }

    /// A file of `len` bytes of the keystream seeded `file-<len>`.
    fn file(&mut self, len: u64) -> PathBuf {
        let dir = self.root.path().join("files");
        self.files
            .entry(len)
            .or_insert_with(|| {
                let path = dir.join(format!("len-{len}"));
                write_chacha20_file(&path, &format!("file-{len}"), len).expect("write an input file");
                path
            })
            .clone()
    }

    /// A directory named `name` filled by `build`.
    fn dir(&self, name: &str, build: impl FnOnce(&Path) -> io::Result<()>) -> PathBuf {
        let path = self.root.path().join("dirs").join(name);
        fs::create_dir(&path).expect("create an input directory");
        build(&path).unwrap_or_else(|e| panic!("fill {}: {e}", path.display()));
        path
    }
}

/// Writes a file of `len` bytes seeded by its name and length.
fn seeded_file(path: &Path, len: u64) -> io::Result<()> {
    let seed = format!("{}-{len}", path.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    write_chacha20_file(path, &seed, len)
}

/// `count` sizes below `max`, from a seeded generator.
fn random_sizes(stream: &mut KeyStream, count: usize, max: u64) -> Vec<u64> {
    (0..count)
        .map(|_| {
            let mut b = [0u8; 8];
            stream.fill(&mut b);
            u64::from_le_bytes(b) % max
        })
        .collect()
}

/// The sizes at which a balanced DAG changes shape for chunk size `c`: empty, one partial chunk,
/// around one chunk, around a full root (`LINKS` leaves), one leaf past it (a second level), and,
/// with `two_levels`, around a full second level.
fn balanced_sizes(c: u64, two_levels: bool) -> Vec<u64> {
    let mut sizes = vec![0, 1, c - 1, c, c + 1, c * LINKS - 1, c * LINKS, c * LINKS + 1, c * (LINKS + 1)];
    if two_levels {
        sizes.extend([c * LINKS * LINKS, c * LINKS * LINKS + 1]);
    }
    sizes
}

struct Suite {
    inputs: Inputs,
    cases: Vec<OracleCase>,
}

impl Suite {
    fn case(&mut self, id: String, path: &Path, opts: AddOptions) {
        self.cases.push(OracleCase { id, path: path.to_path_buf(), opts });
    }

    fn file_case(&mut self, group: &str, len: u64, variant: &str, opts: AddOptions) {
        let path = self.inputs.file(len);
        self.case(format!("file {group} len={len} {variant}"), &path, opts);
    }

    /// Balanced files: every boundary size under every leaf variant, for the default chunker and two
    /// small ones (which reach two-level trees with small files).
    fn balanced_files(&mut self, sizes_rng: &mut KeyStream) {
        for (chunk, two_levels) in [(None, false), (Some(1000u32), true), (Some(4096), false)] {
            let c = chunk.map_or(CHUNK, u64::from);
            let mut sizes = balanced_sizes(c, two_levels);
            sizes.extend(random_sizes(sizes_rng, 3, 3 * c));
            let group = format!("c{c}");
            for len in sizes {
                for (variant, o) in leaf_variants() {
                    self.file_case(&group, len, variant, AddOptions { chunk_size: chunk, ..o });
                }
            }
        }
    }

    /// Trickle files around each layer boundary (1, 5, 25 and 125 full nodes of `LINKS` leaves),
    /// with size-1000 chunks, plus the default chunker and the unixfs-v1-2025 profile.
    fn trickle_files(&mut self) {
        let trickle = AddOptions { trickle: true, chunk_size: Some(1000), ..opts() };
        let mut leaves = vec![1, 2];
        let mut full = LINKS;
        for _ in 0..4 {
            leaves.extend([full, full + 1]);
            full *= 1 + TRICKLE_REPEAT;
        }
        let mut sizes = vec![0, 1];
        sizes.extend(leaves.iter().map(|l| l * 1000));
        for &len in &sizes {
            self.file_case("trickle c1000", len, "trickle", trickle.clone());
        }
        for len in [1000, (LINKS + 1) * 1000, (5 * LINKS + 1) * 1000] {
            for (variant, o) in leaf_variants().into_iter().skip(1) {
                let o = AddOptions { trickle: true, chunk_size: Some(1000), ..o };
                self.file_case("trickle c1000", len, &format!("trickle {variant}"), o);
            }
        }
        for len in [0, 1, CHUNK, CHUNK + 1, CHUNK * LINKS + 1] {
            self.file_case("trickle c262144", len, "trickle", AddOptions { trickle: true, ..opts() });
        }
        for len in [(V1_LINKS + 1) * 1000, (5 * V1_LINKS + 1) * 1000] {
            let o = AddOptions { trickle: true, chunk_size: Some(1000), ..v1_2025() };
            self.file_case("trickle c1000", len, "trickle unixfs-v1-2025", o);
        }
    }

    /// unixfs-v1-2025: its own chunk size, and its 1024-link boundary through a small chunker.
    fn profile_files(&mut self) {
        for len in [0, 1, V1_CHUNK - 1, V1_CHUNK, V1_CHUNK + 1, 3 * V1_CHUNK + 5] {
            self.file_case("unixfs-v1-2025", len, "profile", v1_2025());
        }
        for len in [V1_LINKS * 1000, V1_LINKS * 1000 + 1, (V1_LINKS + 1) * 1000] {
            let o = AddOptions { chunk_size: Some(1000), ..v1_2025() };
            self.file_case("unixfs-v1-2025 c1000", len, "profile", o);
        }
    }

    fn hash_files(&mut self, nested: &Path) {
        for hash in HashFn::ALL.into_iter().filter(|h| *h != HashFn::Sha2_256) {
            let with_hash = AddOptions { hash: Some(hash), ..opts() };
            for len in [0, 11, 1000, CHUNK + 1] {
                self.file_case("hash", len, hash.name(), with_hash.clone());
            }
            let no_raw = AddOptions { raw_leaves: Some(false), ..with_hash.clone() };
            self.file_case("hash", CHUNK + 1, &format!("{} no-raw", hash.name()), no_raw);
            let trickle = AddOptions { trickle: true, chunk_size: Some(1000), ..with_hash.clone() };
            self.file_case("hash", 5000, &format!("{} trickle", hash.name()), trickle);
            self.case(format!("dir nested {}", hash.name()), nested, with_hash);
        }
    }

    fn wrapped(&mut self, nested: &Path) {
        for (variant, o) in [leaf_variants()[0].clone(), leaf_variants()[2].clone()] {
            let w = AddOptions { wrap: true, ..o };
            for len in [0, 1000, CHUNK + 1] {
                self.file_case("wrap", len, &format!("-w {variant}"), w.clone());
            }
            self.case(format!("dir nested -w {variant}"), nested, w);
        }
    }

    /// Directory cases; returns the nested directory for the hash and wrap cases.
    fn directories(&mut self) -> PathBuf {
        let inputs = &self.inputs;
        let empty = inputs.dir("empty", |_| Ok(()));
        let one_file = inputs.dir("one-file", |d| seeded_file(&d.join("only.bin"), 1000));
        let nested = inputs.dir("nested", |d| {
            seeded_file(&d.join("a.txt"), 11)?;
            seeded_file(&d.join("empty.txt"), 0)?;
            fs::create_dir(d.join("empty-dir"))?;
            fs::create_dir_all(d.join("sub/deeper/empty-dir"))?;
            seeded_file(&d.join("sub/b.bin"), CHUNK + 1)?;
            seeded_file(&d.join("sub/empty.txt"), 0)?;
            seeded_file(&d.join("sub/deeper/c.txt"), 300)
        });
        let sorting = inputs.dir("sorting", |d| {
            for (i, name) in SORTING_NAMES.iter().enumerate() {
                seeded_file(&d.join(name), i as u64 * 7)?;
            }
            fs::create_dir(d.join("ab-dir"))?;
            seeded_file(&d.join("ab-dir/x"), 5)
        });
        let multi_block = inputs.dir("multi-block", |d| {
            for (i, len) in [CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5].into_iter().enumerate() {
                seeded_file(&d.join(format!("part-{i}")), len)?;
            }
            Ok(())
        });
        // Well over the 256 KiB threshold under every estimate (2100 links of 100-byte names), so the
        // flat/HAMT decision is not in question; some files span several blocks, and a subdirectory
        // and an empty directory sit among the shards.
        let hamt_files = |d: &Path| -> io::Result<()> {
            for i in 0..2100u64 {
                let name = format!("file-{i:04}-{}", "n".repeat(90));
                let len = if i % 150 == 7 { 2 * CHUNK + i } else { i % 50 };
                seeded_file(&d.join(name), len)?;
            }
            Ok(())
        };
        let hamt = inputs.dir("hamt-multi-block", |d| {
            hamt_files(d)?;
            fs::create_dir_all(d.join("sub/empty"))?;
            seeded_file(&d.join("sub/inner.txt"), 42)
        });
        let nested_hamt = inputs.dir("nested-hamt", |d| {
            seeded_file(&d.join("readme.txt"), 64)?;
            fs::create_dir(d.join("shards"))?;
            hamt_files(&d.join("shards"))
        });

        let kubo_dirs: Vec<(String, PathBuf, bool)> = fixtures::dir_vectors()
            .into_iter()
            .filter(|v| matches!(v.spec, DirSpec::KuboDeterministic { .. }))
            .enumerate()
            .map(|(i, v)| {
                let path = inputs.root.path().join("dirs").join(format!("kubo-{i}"));
                v.spec.write_to(&path).expect("write a kubo deterministic directory");
                let v1 = v.opts.profile == Some(Profile::UnixfsV1_2025);
                (v.id.to_owned(), path, v1)
            })
            .collect();

        for (name, path) in [
            ("empty", &empty),
            ("one-file", &one_file),
            ("nested", &nested),
            ("sorting", &sorting),
            ("multi-block", &multi_block),
            ("hamt-multi-block", &hamt),
            ("nested-hamt", &nested_hamt),
        ] {
            for (variant, o) in dir_variants() {
                self.case(format!("dir {name} {variant}"), path, o);
            }
        }
        for (name, path) in [("nested", &nested), ("sorting", &sorting), ("hamt-multi-block", &hamt)] {
            self.case(format!("dir {name} unixfs-v1-2025"), path, v1_2025());
        }
        for (id, path, v1) in &kubo_dirs {
            for (variant, o) in dir_variants() {
                self.case(format!("dir {id} {variant}"), path, o);
            }
            if *v1 {
                self.case(format!("dir {id} unixfs-v1-2025"), path, v1_2025());
            }
        }
        nested
    }
}

fn build_suite() -> Suite {
    let mut suite = Suite { inputs: Inputs::new(), cases: Vec::new() };
    let mut sizes_rng = KeyStream::new("oracle-random-sizes");
    suite.balanced_files(&mut sizes_rng);
    suite.trickle_files();
    suite.profile_files();
    let nested = suite.directories();
    suite.hash_files(&nested);
    suite.wrapped(&nested);
    suite
}

/// Compares the tested side's CID (`tested`) with the reference (`reference`) for every case and
/// panics with a table of all disagreements.
fn check(tested: &str, reference: &str, results: Vec<(String, Result<String, String>, String)>) {
    let total = results.len();
    let mismatches: Vec<[String; 3]> = results
        .into_iter()
        .filter(|(_, ours, reference)| ours.as_ref() != Ok(reference))
        .map(|(id, ours, reference)| [id, ours.unwrap_or_else(|e| format!("error: {e}")), reference])
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {total} cases: {tested} disagrees with {reference}:\n{}",
        mismatches.len(),
        table(["case", tested, reference], &mismatches)
    );
}

#[test]
fn oracle_agrees_with_btfs() {
    let suite = build_suite();
    assert!(suite.cases.len() >= 200, "only {} cases", suite.cases.len());
    let oracle = js_oracle(&suite.cases);
    let repo = TestRepo::init();
    let results = suite
        .cases
        .iter()
        .map(|c| {
            let ours = btfs_add_cid(&repo, &c.path, &c.opts);
            (c.id.clone(), ours, oracle[&c.id].clone())
        })
        .collect();
    check("btfs", "js oracle", results);
}

/// A published vector, its input written under `dir` on demand.
struct Vector {
    id: String,
    input: VectorInput,
    opts: AddOptions,
    cid: String,
}

enum VectorInput {
    File(Content),
    Dir(DirSpec),
}

impl Vector {
    fn len(&self) -> u64 {
        match &self.input {
            VectorInput::File(content) => content.len(),
            VectorInput::Dir(_) => 0,
        }
    }

    fn write(&self, path: &Path) -> PathBuf {
        match &self.input {
            VectorInput::File(content) => content.write_to(path),
            VectorInput::Dir(spec) => spec.write_to(path),
        }
        .unwrap_or_else(|e| panic!("write the input of {}: {e}", self.id));
        path.to_path_buf()
    }
}

fn published_vectors() -> Vec<Vector> {
    let files = fixtures::file_vectors().into_iter().chain(fixtures::kubo_profile_file_vectors()).map(|v| Vector {
        id: v.id,
        input: VectorInput::File(v.content),
        opts: v.opts,
        cid: v.cid,
    });
    let dirs = fixtures::dir_vectors().into_iter().map(|v| Vector {
        id: v.id.to_owned(),
        input: VectorInput::Dir(v.spec),
        opts: v.opts,
        cid: v.cid.to_owned(),
    });
    files.chain(dirs).collect()
}

/// Every published vector against our binary. Inputs are written one at a time and removed after
/// use, so the 1 GiB vectors need about 1 GiB of temporary disk and little memory.
#[test]
fn vectors() {
    let repo = TestRepo::init();
    let work = tempfile::tempdir().expect("create a tempdir");
    let results = published_vectors()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let path = v.write(&work.path().join(format!("vector-{i}")));
            let ours = btfs_add_cid(&repo, &path, &v.opts);
            if path.is_dir() {
                fs::remove_dir_all(&path).expect("remove a vector input");
            } else {
                fs::remove_file(&path).expect("remove a vector input");
            }
            (v.id, ours, v.cid)
        })
        .collect();
    check("btfs", "published", results);
}

/// Imports `vectors` with the oracle in one batch, their inputs written under `dir` and removed after.
fn oracle_batch(dir: &Path, vectors: &[Vector]) -> Vec<(String, Result<String, String>, String)> {
    let cases: Vec<OracleCase> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| OracleCase {
            id: v.id.clone(),
            path: v.write(&dir.join(format!("vector-{i}"))),
            opts: v.opts.clone(),
        })
        .collect();
    let oracle = js_oracle(&cases);
    for case in &cases {
        if case.path.is_dir() {
            fs::remove_dir_all(&case.path).expect("remove a vector input");
        } else {
            fs::remove_file(&case.path).expect("remove a vector input");
        }
    }
    vectors.iter().map(|v| (v.id.clone(), Ok(oracle[&v.id].clone()), v.cid.clone())).collect()
}

/// The oracle reproduces every published vector: files, flags, profiles, hashes and directories up
/// to the HAMT thresholds (which also checks our ChaCha20 content generator and kubo's name
/// generator). Vectors over 64 MiB run one at a time so the 1 GiB inputs are never on disk together.
#[test]
fn oracle_reproduces_published_vectors() {
    let work = tempfile::tempdir().expect("create a tempdir");
    let (small, large): (Vec<Vector>, Vec<Vector>) =
        published_vectors().into_iter().partition(|v| v.len() <= ORACLE_BATCH_LIMIT);
    let mut results = oracle_batch(work.path(), &small);
    for v in large {
        results.extend(oracle_batch(work.path(), std::slice::from_ref(&v)));
    }
    check("js oracle", "published", results);
}

/// Every CID in cid-dir-vectors.md is in the directory vector table, or listed as not reproducible
/// with a reason, so a vector added to the file cannot go unchecked.
#[test]
fn dir_vector_table_covers_markdown() {
    let table: Vec<&str> = fixtures::dir_vectors().into_iter().map(|v| v.cid).collect();
    let missing: Vec<String> = fixtures::dir_vector_cids_in_markdown()
        .into_iter()
        .filter(|cid| {
            !table.contains(&cid.as_str()) && !fixtures::DIR_VECTORS_NOT_REPRODUCIBLE.iter().any(|(c, _)| c == cid)
        })
        .collect();
    assert!(missing.is_empty(), "cid-dir-vectors.md has CIDs the tests do not check: {missing:?}");
    assert!(table.len() >= 8, "the markdown parse found too few vectors");
}
