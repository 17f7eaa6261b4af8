//! End-to-end tests of the offline CLI: round trips, kubo-shaped output, and hostile input. Each runs the real
//! `btfs` binary against a fresh repo in a temporary directory.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use btfs_tests::{TestRepo, chacha20_bytes};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run_stdin(repo: &TestRepo, args: &[&str], input: &[u8]) -> Output {
    let mut cmd: Command = repo.command();
    let mut child =
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn btfs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait btfs")
}

fn cat_bytes(repo: &TestRepo, args: &[&str]) -> Vec<u8> {
    let o = repo.run(args);
    assert!(o.status.success(), "btfs {args:?}: {}", stderr(&o));
    o.stdout
}

/// Sizes around the 256 KiB chunk and the 174-link boundaries (with a 1000-byte chunker for the latter).
const SIZES: &[(usize, &str)] = &[
    (0, "default"),
    (1, "default"),
    (262_143, "default"),
    (262_144, "default"),
    (262_145, "default"),
    (3_000_000, "default"),
    (174 * 1000, "size-1000"),
    (174 * 1000 + 1, "size-1000"),
    (174 * 174 * 1000 + 1, "size-1000"),
];

#[test]
fn add_then_cat_returns_the_same_bytes() {
    let repo = TestRepo::init();
    for &(size, chunker) in SIZES {
        let data = chacha20_bytes(&format!("roundtrip-{size}"), size);
        let file = repo.path().join(format!("in-{size}"));
        fs::write(&file, &data).expect("write input");
        for extra in [&[][..], &["--raw-leaves"], &["--trickle"], &["--cid-version=1"]] {
            let mut args = vec!["add", "-Q", "--chunker", chunker];
            args.extend_from_slice(extra);
            let file_arg = file.to_str().expect("utf-8 path");
            args.push(file_arg);
            let cid = repo.run_ok(&args).trim().to_string();
            assert_eq!(cat_bytes(&repo, &["cat", &cid]), data, "size {size} {extra:?}");
            // Ranged reads cut the same bytes as slicing.
            if size > 10 {
                let (off, len) = (size / 3, size / 2);
                let got = cat_bytes(&repo, &["cat", &cid, "--offset", &off.to_string(), "--length", &len.to_string()]);
                assert_eq!(got, &data[off..off + len], "range of size {size} {extra:?}");
            }
        }
    }
}

#[test]
fn stdin_add_matches_file_add() {
    let repo = TestRepo::init();
    let data = chacha20_bytes("stdin", 1_000_000);
    let file = repo.path().join("f");
    fs::write(&file, &data).expect("write");
    let from_file = repo.run_ok(&["add", "-Q", file.to_str().expect("utf-8")]);
    let o = run_stdin(&repo, &["add"], &data);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(o.stdout).expect("utf-8");
    let cid = from_file.trim();
    assert_eq!(line.trim(), format!("added {cid} {cid}"), "kubo prints the CID as the name for stdin");
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    fs::create_dir_all(root.join("empty")).expect("mkdir");
    fs::write(root.join("a/one.txt"), b"one\n").expect("write");
    fs::write(root.join("a/b/two.bin"), chacha20_bytes("two", 700_000)).expect("write");
    fs::write(root.join("a/b/c/empty-file"), b"").expect("write");
    fs::write(root.join("top.txt"), b"top").expect("write");
    fs::write(root.join(".hidden"), b"secret").expect("write");
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = fs::read_dir(a).expect("read a").map(|e| e.expect("entry").file_name()).collect();
    let mut names_b: Vec<_> = fs::read_dir(b).expect("read b").map(|e| e.expect("entry").file_name()).collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "entries of {} vs {}", a.display(), b.display());
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        if pa.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(fs::read(&pa).expect("read"), fs::read(&pb).expect("read"), "{}", pa.display());
        }
    }
}

#[test]
fn directory_add_get_rebuilds_the_tree_and_skips_hidden() {
    let repo = TestRepo::init();
    let src = repo.path().join("src-tree");
    make_tree(&src);
    let out = repo.run_ok(&["add", "-r", src.to_str().expect("utf-8")]);
    let lines: Vec<&str> = out.lines().collect();
    // kubo order: files in walk order, then directories depth first, the root last.
    assert!(lines.iter().all(|l| l.starts_with("added ")), "{out}");
    assert!(lines.last().expect("root line").ends_with(" src-tree"), "{out}");
    assert!(lines.iter().any(|l| l.ends_with(" src-tree/a/b/two.bin")), "{out}");
    assert!(!out.contains(".hidden"), "hidden files are skipped without -H:\n{out}");
    let root = lines.last().and_then(|l| l.split(' ').nth(1)).expect("root cid");

    let dest = repo.path().join("got");
    let o = repo.run(&["get", root, "-o", dest.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::remove_file(src.join(".hidden")).expect("rm hidden");
    assert_same_tree(&src, &dest);

    let ls = repo.run_ok(&["ls", root]);
    assert!(ls.contains(" - a/") && ls.contains(" 3 top.txt"), "{ls}");
    let cat = repo.run_ok(&["cat", &format!("/ipfs/{root}/a/one.txt")]);
    assert_eq!(cat, "one\n");
}

#[test]
fn dag_export_import_round_trip_into_a_fresh_repo() {
    let a = TestRepo::init();
    let src = a.path().join("tree");
    make_tree(&src);
    let root = a.run_ok(&["add", "-r", "-Q", src.to_str().expect("utf-8")]).trim().to_string();
    let car = a.run(&["dag", "export", &root]);
    assert!(car.status.success(), "{}", stderr(&car));
    let car_path = a.path().join("tree.car");
    fs::write(&car_path, &car.stdout).expect("write car");

    let b = TestRepo::init();
    let out = b.run_ok(&["dag", "import", car_path.to_str().expect("utf-8")]);
    assert_eq!(out.trim(), format!("Pinned root\t{root}\tsuccess"));
    // Same blocks: exporting again from the new repo gives the same CAR byte for byte.
    let again = b.run(&["dag", "export", &root]);
    assert_eq!(again.stdout, car.stdout);
    assert_eq!(b.run_ok(&["cat", &format!("{root}/a/one.txt")]), "one\n");
    assert!(b.run_ok(&["pin", "ls", "--type=recursive"]).contains(&root));
}

#[test]
fn pins_protect_from_gc_and_gc_removes_the_rest() {
    let repo = TestRepo::init();
    let f1 = repo.path().join("keep");
    let f2 = repo.path().join("drop");
    fs::write(&f1, chacha20_bytes("keep", 600_000)).expect("write");
    fs::write(&f2, chacha20_bytes("drop", 600_000)).expect("write");
    let keep = repo.run_ok(&["add", "-Q", f1.to_str().expect("utf-8")]).trim().to_string();
    let drop = repo.run_ok(&["add", "-Q", "--pin=false", f2.to_str().expect("utf-8")]).trim().to_string();
    let gc = repo.run_ok(&["repo", "gc"]);
    assert_eq!(gc.lines().count(), 4, "3 leaves and a root of the unpinned file:\n{gc}");
    assert_eq!(cat_bytes(&repo, &["cat", &keep]).len(), 600_000);
    let o = repo.run(&["cat", &drop]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let removed = repo.run(&["block", "rm", &keep]);
    assert!(!removed.status.success() && stderr(&removed).contains("pinned"), "{}", stderr(&removed));
    repo.run_ok(&["pin", "rm", &keep]);
    assert_eq!(repo.run_ok(&["repo", "gc", "-q"]).lines().count(), 4);
    assert!(repo.run_ok(&["repo", "stat"]).contains("NumObjects: 0"));
}

#[test]
fn block_put_get_stat() {
    let repo = TestRepo::init();
    let o = run_stdin(&repo, &["block", "put"], b"hello world");
    assert!(o.status.success(), "{}", stderr(&o));
    let cid = String::from_utf8(o.stdout).expect("utf-8").trim().to_string();
    // A raw sha2-256 CIDv1 of "hello world", as kubo's `block put` prints (cid-vectors.tsv, --cid-version=1).
    assert_eq!(cid, "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    assert_eq!(repo.run_ok(&["block", "get", &cid]), "hello world");
    assert_eq!(repo.run_ok(&["block", "stat", &cid]), format!("Key: {cid}\nSize: 11\n"));
}

fn expect_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure containing {needle:?}");
    let err = stderr(o);
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
}

#[test]
fn bad_input_gets_one_line_errors_and_leaves_the_repo_usable() {
    let repo = TestRepo::init();
    let missing = repo.path().join("does-not-exist");
    expect_error(&repo.run(&["add", missing.to_str().expect("utf-8")]), "no such file");
    let dir = repo.path().join("d");
    fs::create_dir(&dir).expect("mkdir");
    expect_error(&repo.run(&["add", dir.to_str().expect("utf-8")]), "use -r");
    for chunker in ["size-0", "size-99999999", "rabin", "size-x"] {
        expect_error(&repo.run(&["add", "--chunker", chunker, "-Q", "-"]), chunker);
    }
    expect_error(&repo.run(&["add", "--hash", "md5", "-"]), "md5");
    expect_error(&repo.run(&["add", "--cid-version=7", "-"]), "CID version");
    expect_error(&repo.run(&["cat", ""]), "invalid");
    expect_error(&repo.run(&["cat", "not-a-cid"]), "not-a-cid");
    expect_error(&repo.run(&["cat", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"]), "not found");
    expect_error(&repo.run(&["block", "get", "bafkqaaa1"]), "invalid CID");

    // Malformed CARs: nothing is imported, and a valid import still works afterwards.
    let good_src = repo.path().join("g");
    fs::write(&good_src, chacha20_bytes("car", 300_000)).expect("write");
    let root = repo.run_ok(&["add", "-Q", "--pin=false", good_src.to_str().expect("utf-8")]).trim().to_string();
    let car = repo.run(&["dag", "export", &root]).stdout;
    repo.run_ok(&["repo", "gc"]);
    let objects = |r: &TestRepo| r.run_ok(&["repo", "stat"]).lines().next().map(str::to_string);
    let before = objects(&repo);
    let mut corrupt = car.clone();
    let last = corrupt.len() - 10;
    corrupt[last] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", car[..car.len() - 100].to_vec(), "truncated"),
        ("wrong header", b"\x05hello".to_vec(), "header"),
        ("block bytes do not match the CID", corrupt, "does not match"),
        ("empty", Vec::new(), "truncated"),
    ];
    for (name, bytes, needle) in cases {
        let path = repo.path().join("bad.car");
        fs::write(&path, &bytes).expect("write car");
        let o = repo.run(&["dag", "import", path.to_str().expect("utf-8")]);
        assert!(!o.status.success(), "{name}: should fail");
        assert!(stderr(&o).to_lowercase().contains(needle), "{name}: {}", stderr(&o));
        assert_eq!(objects(&repo), before, "{name}: nothing half-written");
    }
    let path = repo.path().join("good.car");
    fs::write(&path, &car).expect("write");
    repo.run_ok(&["dag", "import", path.to_str().expect("utf-8")]);
    assert!(repo.run_ok(&["repo", "verify"]).contains("all blocks validated"));
}

#[test]
fn locked_and_missing_repos_are_named() {
    let repo = TestRepo::init();
    // A second `init` is refused.
    expect_error(&repo.run(&["init"]), "already exists");
    let nowhere = repo.path().join("nowhere");
    let o = Command::new(btfs_tests::btfs_bin()).env("BTFS_PATH", &nowhere).args(["cat", "x"]).output().expect("run");
    expect_error(&o, "btfs init");
}

#[test]
fn corrupted_block_on_disk_is_reported() {
    let repo = TestRepo::init();
    let f = repo.path().join("c");
    let data = chacha20_bytes("corrupt-me", 200_000);
    fs::write(&f, &data).expect("write");
    let cid = repo.run_ok(&["add", "-Q", f.to_str().expect("utf-8")]).trim().to_string();
    // Flip bytes inside the stored copy of the data wherever the store put it (a pack, or an SST or blob file).
    let mut flipped = 0;
    let probe = &data[1000..1032];
    let datastore = repo.path().join("datastore");
    let files =
        fs::read_dir(&datastore).expect("datastore").chain(fs::read_dir(datastore.join("packs")).expect("packs"));
    for entry in files {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            continue;
        }
        let mut bytes = fs::read(&p).expect("read store file");
        if let Some(pos) = bytes.windows(probe.len()).position(|w| w == probe) {
            bytes[pos + 5] ^= 0x55;
            fs::write(&p, &bytes).expect("corrupt file");
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1, "the block's bytes were found in one store file");
    let o = repo.run(&["cat", &cid]);
    assert!(!o.status.success(), "a corrupt block is never served");
    let v = repo.run(&["repo", "verify"]);
    assert!(!v.status.success(), "verify reports corruption");
}

#[test]
fn a_repo_in_use_is_reported_as_locked() {
    let repo = TestRepo::init();
    // An `add` reading a stdin that stays open holds the repo until we close it. The probe races the
    // holder for the lock at start-up, so if the probe wins (and the holder exits), try again.
    for attempt in 0..50 {
        let mut holder = repo
            .command()
            .args(["add", "-Q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut stdin = holder.stdin.take().expect("stdin");
        stdin.write_all(b"partial").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20 * (attempt + 1)));
        let probe = repo.run(&["repo", "stat"]);
        let holder_alive = holder.try_wait().expect("poll holder").is_none();
        if probe.status.success() || !holder_alive {
            drop(stdin);
            let _ = holder.wait_with_output();
            continue;
        }
        expect_error(&probe, "locked by another process");
        drop(stdin);
        let out = holder.wait_with_output().expect("holder finishes");
        assert!(out.status.success(), "{}", stderr(&out));
        repo.run_ok(&["repo", "stat"]);
        return;
    }
    panic!("never observed the repo held by another process");
}
