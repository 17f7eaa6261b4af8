//! BitTorrent import and seeding against real, independent software on 127.0.0.1: opentracker (whitelist
//! mode), libtorrent 2.0 (`tests/bt/lt.py`), mktorrent and aria2. Each test checks what a user sees: the
//! root CID equals `btfs add -r -H` of the same files, the bytes read back are the bytes seeded, and the
//! other client's download is byte-identical.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use btfs_chunker::Cid;
use btfs_tests::bt::{self, DhtNode, Liar, Seeder, Tracker};
use btfs_tests::daemon::Daemon;
use btfs_tests::{TestRepo, write_chacha20_file};
use serde_json::Value;
use tempfile::TempDir;

/// A directory with a multi-piece file, a nested file, a hidden file and a 0-byte file.
fn sample_dir(parent: &Path, name: &str, big: u64) -> std::path::PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    write_chacha20_file(&dir.join("big.bin"), name, big).expect("write");
    fs::write(dir.join("sub").join("note.txt"), b"a small file in a subdirectory\n").expect("write");
    fs::write(dir.join(".hidden"), b"hidden files are part of a torrent\n").expect("write");
    fs::write(dir.join("empty"), b"").expect("write");
    dir
}

/// What `btfs add` gives for the same content (the reference the import must match).
fn add_cid(repo: &TestRepo, path: &Path) -> String {
    let p = path.to_str().expect("utf-8 path");
    repo.run_ok(&["add", "-r", "-H", "-Q", "--only-hash", p]).trim().to_string()
}

fn records(repo: &TestRepo) -> Vec<Value> {
    repo.run_ok(&["bittorrent", "ls", "--enc", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The `torrent-info` CID a v1 infohash must be stored under: CIDv1, codec 0x7b, sha1 multihash.
fn info_cid(info_hash: &str) -> String {
    let bytes: Vec<u8> = (0..20).map(|i| u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).expect("hex")).collect();
    let mh = btfs_chunker::hash::Multihash::wrap(0x11, &bytes).expect("sha1 multihash");
    Cid::new_v1(0x7b, mh).to_string()
}

fn get_tree(repo: &TestRepo, cid: &str, out: &Path) {
    repo.run_ok(&["get", cid, "-o", out.to_str().expect("utf-8")]);
}

#[test]
fn torrent_file_from_mktorrent_over_http_tracker_imports_with_add_cids_and_twice_fetches_nothing() {
    let work = TempDir::new().expect("tmp");
    let tracker = Tracker::start();
    let data = sample_dir(work.path(), "collection", 3 * 1024 * 1024 + 12_345);
    let torrent = work.path().join("collection.torrent");
    bt::mktorrent(&data, &torrent, 15, &tracker.http_url());
    let repo = TestRepo::init();
    let meta: Value =
        serde_json::from_str(&repo.run_ok(&["bittorrent", "metainfo", torrent.to_str().expect("utf-8 path")]))
            .expect("json");
    let ih = meta["info_hash"].as_str().expect("info_hash").to_string();
    assert_eq!(meta["files"].as_array().map(Vec::len), Some(4), "{meta}");
    tracker.allow(&[&ih]);
    let mut seeder = Seeder::start(&torrent, work.path(), None);

    let root = repo.run_ok(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60", "-q"]);
    assert_eq!(root.trim(), add_cid(&repo, &data), "the import's root is what `add -r -H` gives");
    let out = work.path().join("out");
    get_tree(&repo, root.trim(), &out);
    assert!(bt::same_tree(&data, &out), "the imported bytes differ from the seeded ones");

    let recs = records(&repo);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["info_hash"], ih.as_str());
    assert_eq!(recs[0]["info_cid"], info_cid(&ih).as_str(), "the info dict's block is CIDv1 torrent-info/sha1");
    let files = recs[0]["files"].as_array().expect("files");
    let empty = files.iter().find(|f| f["path"] == "empty").expect("the 0-byte file is recorded");
    assert_eq!(empty["length"], 0);
    // The stored info dict is the torrent's, byte for byte: its block verifies against the infohash.
    let verify = repo.run(&["repo", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(!repo.path().join("bittorrent").exists(), "the import wrote no copy outside the block store");

    // No seeder any more: a second import must be answered from the store.
    seeder.kill();
    let started = Instant::now();
    let again = repo.run_ok(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "5", "-q"]);
    assert_eq!(again, root);
    assert!(started.elapsed() < Duration::from_secs(5), "the second import waited for peers");
}

#[test]
fn hybrid_magnet_over_tracker_imports_through_the_daemon_and_reseeds_under_its_infohash() {
    let work = TempDir::new().expect("tmp");
    let tracker = Tracker::start();
    let file = work.path().join("movie.bin");
    write_chacha20_file(&file, "hybrid single file", 5 * 1024 * 1024 + 7).expect("write");
    let torrent = work.path().join("movie.torrent");
    let made = bt::lt_make(&file, &torrent, 64, true, &[tracker.http_url()]);
    assert!(made["info_hash_v2"].is_string(), "lt.py made a hybrid: {made}");
    tracker.allow_made(&made);
    let mut seeder = Seeder::start(&torrent, work.path(), None);
    let ih = made["info_hash"].as_str().expect("ih").to_string();
    let magnet = format!("magnet:?xt=urn:btih:{ih}&dn=movie.bin&tr={}", tracker.http_url());

    // `--seed` without a daemon is refused before anything is fetched.
    let offline = TestRepo::init();
    let refused = offline.run(&["bittorrent", "import", &magnet, "--seed", "-q"]);
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(refusal.contains("--seed needs a running daemon"), "{refusal}");
    assert!(records(&offline).is_empty());

    // Two imports of the same magnet at once through the daemon: the second waits for the first and is
    // answered from its record. The first also asks the daemon to seed what it imported.
    let daemon = Daemon::start(&[]);
    let import = |seed: bool| {
        let mut args = vec!["bittorrent", "import", &magnet, "--timeout", "60", "-q"];
        if seed {
            args.push("--seed");
        }
        daemon
            .repo
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start an import")
    };
    let (first, second) = (import(true), import(false));
    let outputs: Vec<String> = [first, second]
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("the import runs");
            assert!(out.status.success(), "a concurrent import failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .collect();
    let lines: Vec<&str> = outputs[0].lines().collect();
    assert_eq!(lines.len(), 2, "the seeding import prints its root, then its magnet: {outputs:?}");
    let (root, seeded_magnet) = (format!("{}\n", lines[0]), lines[1].to_string());
    assert_eq!(outputs[1], root, "both imports give the same root");
    assert!(seeded_magnet.contains(&format!("urn:btih:{ih}")), "{seeded_magnet}");
    assert_eq!(records(&daemon.repo)[0]["seeding"], true, "the record says it is seeding");
    assert_eq!(root.trim(), add_cid(&daemon.repo, &file));
    assert_eq!(records(&daemon.repo).len(), 1, "one record for the torrent");
    let bytes = daemon.repo.run(&["cat", root.trim()]).stdout;
    assert_eq!(bytes, fs::read(&file).expect("read"), "cat of the imported file");
    let recs = records(&daemon.repo);
    assert_eq!(recs[0]["info_hash_v2"], made["info_hash_v2"], "the hybrid's v2 hash is recorded");

    // The import's seed reuses the stored info dict: same infohash, served from the block store. Seeding the
    // root again is answered with the same magnet.
    seeder.kill();
    let magnet_out = daemon.run_ok(&["bittorrent", "seed", root.trim()]);
    assert_eq!(magnet_out.trim(), seeded_magnet);
    let peer = magnet_out.split("x.pe=").nth(1).expect("the magnet names this node").trim().to_string();
    let dl = work.path().join("dl");
    let report = bt::lt_download(
        &dl,
        &magnet_out.trim().replace(&format!("&x.pe={peer}"), ""),
        &[peer],
        Duration::from_secs(60),
    );
    assert_eq!(report["info_hash"], ih.as_str());
    assert_eq!(
        fs::read(dl.join("movie.bin")).expect("libtorrent wrote the file"),
        fs::read(&file).expect("test setup")
    );
}

#[test]
fn hybrid_multi_file_torrent_over_udp_tracker_leaves_padding_out() {
    let work = TempDir::new().expect("tmp");
    let tracker = Tracker::start();
    let data = sample_dir(work.path(), "padded", 1024 * 1024 + 3);
    let torrent = work.path().join("padded.torrent");
    let made = bt::lt_make(&data, &torrent, 16, true, &[tracker.udp_url()]);
    let pads = made["files"].as_array().expect("files").iter().filter(|f| f["pad"] == true).count();
    assert!(pads > 0, "libtorrent's hybrid has padding files: {made}");
    tracker.allow_made(&made);
    let _seeder = Seeder::start(&torrent, work.path(), None);

    let repo = TestRepo::init();
    let root = repo.run_ok(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60", "-q"]);
    assert_eq!(root.trim(), add_cid(&repo, &data), "padding files are not part of the stored directory");
    let out = work.path().join("out");
    get_tree(&repo, root.trim(), &out);
    assert!(bt::same_tree(&data, &out));
    let recs = records(&repo);
    let padding = recs[0]["files"].as_array().expect("files").iter().filter(|f| f["padding"] == true).count();
    assert_eq!(padding, pads, "the record keeps the torrent's file list, padding marked");

    // `--only` takes files by their index in `metainfo`: the directory then holds just those.
    let meta: Value =
        serde_json::from_str(&repo.run_ok(&["bittorrent", "metainfo", torrent.to_str().expect("utf-8 path")]))
            .expect("json");
    let files = meta["files"].as_array().expect("files");
    let index = files.iter().position(|f| f["path"] == "padded/sub/note.txt").expect("note.txt is listed");
    let only_dir = work.path().join("only").join("padded");
    fs::create_dir_all(only_dir.join("sub")).expect("test setup");
    fs::copy(data.join("sub/note.txt"), only_dir.join("sub/note.txt")).expect("test setup");
    let other = TestRepo::init();
    let root = other.run_ok(&[
        "bittorrent",
        "import",
        torrent.to_str().expect("utf-8 path"),
        "--only",
        &index.to_string(),
        "--timeout",
        "60",
        "-q",
    ]);
    assert_eq!(root.trim(), add_cid(&other, &only_dir), "--only imports the chosen file alone");
}

#[test]
fn magnet_over_a_loopback_dht_with_no_tracker() {
    let work = TempDir::new().expect("tmp");
    let dht = DhtNode::start();
    let data = sample_dir(work.path(), "dht-only", 2 * 1024 * 1024);
    let torrent = work.path().join("dht.torrent");
    let made = bt::lt_make(&data, &torrent, 32, false, &[]);
    let _seeder = Seeder::start(&torrent, work.path(), Some(&dht.addr()));
    let ih = made["info_hash"].as_str().expect("ih");

    let repo = TestRepo::init();
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let root = repo.run_ok(&["bittorrent", "import", &magnet, "--dht-bootstrap", &dht.addr(), "--timeout", "90", "-q"]);
    assert_eq!(root.trim(), add_cid(&repo, &data));
    let out = work.path().join("out");
    get_tree(&repo, root.trim(), &out);
    assert!(bt::same_tree(&data, &out));
}

#[test]
fn a_seeded_cid_downloads_in_libtorrent_and_aria2() {
    let work = TempDir::new().expect("tmp");
    let tracker = Tracker::start();
    let data = sample_dir(work.path(), "published", 4 * 1024 * 1024 + 99);
    let mut daemon = Daemon::start(&[]);
    let root = daemon.run_ok(&["add", "-r", "-H", "-Q", data.to_str().expect("utf-8 path")]);
    let seed = |extra: &[&str]| {
        let mut args = vec!["bittorrent", "seed", root.trim(), "--name", "published", "--tracker"];
        let url = tracker.http_url();
        args.push(&url);
        args.extend_from_slice(extra);
        let out = daemon.run_ok(&args);
        out.trim().to_string()
    };
    let magnet = seed(&[]);
    let ih = magnet.split("urn:btih:").nth(1).and_then(|s| s.get(..40)).expect("infohash").to_string();
    // The tracker refused the first announce (not yet whitelisted): allow it and announce again.
    tracker.allow(&[&ih]);
    daemon.run_ok(&["bittorrent", "unseed", &ih]);
    assert_eq!(seed(&[]), magnet, "a CID seeds under the same torrent every time");

    let lt_dir = work.path().join("lt");
    bt::lt_download(&lt_dir, &magnet, &[], Duration::from_secs(60));
    assert!(bt::same_tree(&data, &lt_dir.join("published")), "libtorrent's copy differs");

    let aria_dir = work.path().join("aria2");
    let plain_magnet = magnet.split("&x.pe=").next().unwrap_or(&magnet).to_string();
    bt::aria2_download(&aria_dir, &plain_magnet, Duration::from_secs(60));
    assert!(bt::same_tree(&data, &aria_dir.join("published")), "aria2's copy differs");
    let recs = records(&daemon.repo);
    assert_eq!(recs[0]["seeding"], true);

    // A restarted daemon seeds again by itself (on a new port, announced to the tracker).
    assert!(daemon.restart(), "the daemon stopped cleanly");
    let again = work.path().join("after-restart");
    bt::lt_download(&again, &plain_magnet, &[], Duration::from_secs(90));
    assert!(bt::same_tree(&data, &again.join("published")), "the copy after the restart differs");
}

/// The bytes an import said it already held (`resuming: N of M bytes ...` on stderr); panics if it did not say.
fn resumed_bytes(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("resuming: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the import does not say it resumes from stored leaves: {stderr}"))
}

/// A one-file v1 torrent (256 KiB pieces, made by libtorrent) of `size` bytes of ChaCha20 content, in
/// `<work>/<dir>/<name>`, announced through a fresh opentracker that allows it.
struct OneFile {
    tracker: Tracker,
    data: std::path::PathBuf,
    file: std::path::PathBuf,
    torrent: std::path::PathBuf,
    info_hash: String,
}

impl OneFile {
    fn make(work: &Path, dir: &str, name: &str, seed: &str, size: u64) -> Self {
        let tracker = Tracker::start();
        let data = work.join(dir);
        fs::create_dir_all(&data).expect("test setup");
        let file = data.join(name);
        write_chacha20_file(&file, seed, size).expect("write");
        let torrent = work.join(format!("{seed}.torrent"));
        let made = bt::lt_make(&file, &torrent, 256, false, &[tracker.http_url()]);
        tracker.allow_made(&made);
        let info_hash = made["info_hash"].as_str().expect("ih").to_string();
        Self { tracker, data, file, torrent, info_hash }
    }
}

#[test]
fn an_import_cut_short_records_nothing_and_a_second_run_completes() {
    let work = TempDir::new().expect("tmp");
    let OneFile { tracker: _tracker, data, file, torrent, info_hash } =
        OneFile::make(work.path(), "full", "big.bin", "resume", 8 * 1024 * 1024);
    let ih = info_hash.as_str();

    // A seeder whose copy has its second half zeroed: it can serve only the first half.
    let half = work.path().join("half");
    fs::create_dir_all(&half).expect("test setup");
    let mut bytes = fs::read(&file).expect("test setup");
    let len = bytes.len();
    bytes[len / 2..].fill(0);
    fs::write(half.join("big.bin"), &bytes).expect("test setup");
    let mut partial = bt::Seeder::start_partial(&torrent, &half);

    let repo = TestRepo::init();
    let out = repo.run(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "4", "-q"]);
    assert!(!out.status.success(), "an import that cannot finish must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stalled"), "the error says what happened: {err}");
    assert!(records(&repo).is_empty(), "nothing is recorded for an unfinished import");
    partial.kill();

    // The second run starts from the leaves the first one stored: at least a quarter of the file (the
    // seeder had half of it), never all of it.
    let _full = Seeder::start(&torrent, &data, None);
    let out = repo.run(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the resumed import fails: {err}");
    let held = resumed_bytes(&err);
    assert!(held >= len as u64 / 4 && held < len as u64, "resumed with {held} of {len} bytes held");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), add_cid(&repo, &file));
    assert_eq!(records(&repo).len(), 1);
    assert_eq!(records(&repo)[0]["info_hash"].as_str(), Some(ih));
}

#[test]
fn a_peer_sending_wrong_pieces_costs_nothing_and_an_honest_seeder_completes_the_import() {
    let work = TempDir::new().expect("tmp");
    let size = 6 * 1024 * 1024 + 777u64;
    let OneFile { tracker, data, file, torrent, info_hash } =
        OneFile::make(work.path(), "data", "payload.bin", "liar", size);
    let liar = Liar::start(&info_hash, size.div_ceil(256 * 1024), &tracker.http_url(), work.path());

    // The liar is the only peer at first: the import takes its blocks, and every piece fails its hash.
    let repo = TestRepo::init();
    let import = repo
        .command()
        .args(["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60", "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the import");
    let deadline = Instant::now() + Duration::from_secs(30);
    while liar.blocks_sent() < 16 {
        assert!(Instant::now() < deadline, "the import never asked the liar for a whole piece");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then an honest seeder joins (it finds the import through the tracker).
    let _seeder = Seeder::start(&torrent, &data, None);
    let out = import.wait_with_output().expect("the import runs");
    assert!(out.status.success(), "the import failed: {}", String::from_utf8_lossy(&out.stderr));
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(root, add_cid(&repo, &file), "the imported file is the torrent's, not the liar's bytes");
    let back = work.path().join("back.bin");
    repo.run_ok(&["get", &root, "-o", back.to_str().expect("utf-8 path")]);
    assert!(fs::read(&back).expect("read back") == fs::read(&file).expect("read"), "bytes differ");
    assert!(liar.blocks_sent() >= 16, "the liar's bytes were received and refused");
    // No block of the liar's pattern was kept: a 256 KiB leaf of 0xAA is not in the store.
    let liar_leaf = work.path().join("aa.bin");
    fs::write(&liar_leaf, vec![0xaa; 256 * 1024]).expect("test setup");
    let aa = repo.run_ok(&["add", "-q", "--only-hash", liar_leaf.to_str().expect("utf-8 path")]);
    let has = repo.run(&["block", "stat", aa.trim()]);
    assert!(!has.status.success(), "a leaf of the liar's bytes is in the store");
}

/// A tmpfs mounted for one test (root only, as in CI), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Self {
        fs::create_dir_all(at).expect("test setup");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs at {} (this test needs root, as CI has)", at.display());
        Self(at.to_path_buf())
    }

    fn resize(&self, mib: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_import_with_a_clear_error_and_a_run_with_room_completes() {
    let work = TempDir::new().expect("tmp");
    let OneFile { tracker: _tracker, data, file, torrent, .. } =
        OneFile::make(work.path(), "data", "big.bin", "disk-full", 160 * 1024 * 1024);
    let _seeder = Seeder::start(&torrent, &data, None);

    // The repo lives on a 112 MiB filesystem: the 160 MiB file cannot fit.
    let disk = Tmpfs::mount(&work.path().join("repo"), 112);
    let btfs = |args: &[&str]| {
        std::process::Command::new(btfs_tests::btfs_bin())
            .env("BTFS_PATH", &disk.0)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run btfs")
    };
    assert!(btfs(&["init", "--profile", "test"]).status.success());
    let import = ["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60", "-q"];
    let out = btfs(&import);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an import into a full disk must fail");
    assert!(err.contains("No space left on device"), "the error names the cause: {err}");
    let ls = btfs(&["bittorrent", "ls", "--enc", "json"]);
    assert!(
        ls.status.success() && ls.stdout.is_empty(),
        "nothing is recorded: {}",
        String::from_utf8_lossy(&ls.stdout)
    );

    // With room, the same import completes, from what the first run stored, and the store checks out.
    disk.resize(512);
    let out = btfs(&["bittorrent", "import", torrent.to_str().expect("utf-8 path"), "--timeout", "60"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the import with room fails: {err}");
    let held = resumed_bytes(&err);
    assert!(held >= 64 * 1024 * 1024, "only {held} bytes survived the full disk");
    let reference = TestRepo::init();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), add_cid(&reference, &file));
    let verify = btfs(&["repo", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn hostile_torrents_and_magnets_get_clear_errors_and_record_nothing() {
    let work = TempDir::new().expect("tmp");
    let repo = TestRepo::init();
    let check = |bytes: &[u8], expect: &str| {
        let path = work.path().join("bad.torrent");
        fs::write(&path, bytes).expect("test setup");
        let path = path.to_str().expect("utf-8 path");
        for args in [vec!["bittorrent", "import", path, "--timeout", "2"], vec!["bittorrent", "metainfo", path]] {
            let cmd = args[1];
            let out = repo.run(&args);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!out.status.success(), "{cmd} accepted {expect:?}");
            assert!(err.contains(expect), "{cmd}: expected {expect:?} in: {err}");
        }
    };
    let pieces = [0u8; 20];
    let torrent = |info: &[u8]| [b"d4:info".as_slice(), info, b"e"].concat();
    let v1 = |name: &str, files: &str| {
        let mut info =
            format!("d5:files{files}4:name{}:{name}12:piece lengthi16384e6:pieces20:", name.len()).into_bytes();
        info.extend_from_slice(&pieces);
        info.push(b'e');
        info
    };
    check(&torrent(&v1("x", "ld6:lengthi10e4:pathl2:..6:passwdeee")), "..");
    check(&torrent(&v1("x", "ld6:lengthi10e4:pathl1:a1:beed6:lengthi10e4:pathl1:aeee")), "is also the directory");
    check(b"d4:infod4:name1:x", "bencode");
    check(&[torrent(&v1("x", "ld6:lengthi10e4:pathl1:aeee")), b"trailing".to_vec()].concat(), "after the value");
    check(b"d4:infod4:name1:x12:piece lengthi16384e6:pieces99999999999:", "99999999999");
    check(&[b"d4:info".as_slice(), "l".repeat(100_000).as_bytes()].concat(), "nesting");
    // Twice as many bytes as one piece holds, with hashes for one piece only.
    check(&torrent(&v1("x", "ld6:lengthi40000e4:pathl1:aeee")), "pieces");

    let v2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chunker/tests/data/torrents/libtorrent-v2-multi.torrent");
    let out = repo.run(&["bittorrent", "import", v2.to_str().expect("utf-8 path"), "--timeout", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("v2-only"), "{err}");

    let out = repo.run(&[
        "bittorrent",
        "import",
        "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
        "--timeout",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no known way to resolve peers"), "no tracker, no DHT: {err}");
    // A tracker that nobody answers on: the metadata never comes, and the import says so after --timeout.
    let dead =
        format!("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&tr=http://127.0.0.1:{}/announce", {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
            l.local_addr().expect("test setup").port()
        });
    let out = repo.run(&["bittorrent", "import", &dead, "--timeout", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metadata within 3s"), "a magnet nobody serves times out: {err}");
    let out = repo.run(&["bittorrent", "import", "magnet:?xt=urn:btih:nothex", "--timeout", "3"]);
    assert!(!out.status.success(), "a bad magnet is refused");

    assert!(records(&repo).is_empty(), "no hostile input left a record");
}
