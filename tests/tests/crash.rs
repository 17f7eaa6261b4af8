//! Crash safety: `kill -9` in the middle of adding a large file leaves a repo that opens, verifies, and
//! completes the same add with the right CID.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use btfs_tests::{TestRepo, write_chacha20_file};

/// Bytes of the files under `p`, subdirectories (the block packs) included.
fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(p) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn kill_9_mid_add_then_verify_and_re_add() {
    let repo = TestRepo::init();
    let input = repo.path().join("big.bin");
    let size: u64 = 768 * 1024 * 1024;
    write_chacha20_file(&input, "crash-test", size).expect("write input");
    let path = input.to_str().expect("utf-8 path");
    let expected = repo.run_ok(&["add", "-Q", "--only-hash", path]).trim().to_string();

    for round in 0..3 {
        let mut child = repo
            .command()
            .args(["add", "-Q", path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Wait until the add has written a good part of its data, then kill it without warning.
        let datastore = repo.path().join("datastore");
        let threshold = (round + 1) * 64 * 1024 * 1024;
        let start = Instant::now();
        while dir_size(&datastore) < threshold && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().expect("poll").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished_first = child.try_wait().expect("poll").is_some();
        child.kill().ok();
        child.wait().expect("reap");
        assert!(!finished_first, "round {round}: the add finished before it could be killed; use a bigger file");

        let verify = repo.run(&["repo", "verify"]);
        assert!(verify.status.success(), "round {round}: {}", String::from_utf8_lossy(&verify.stderr));
        assert!(
            !repo.run_ok(&["pin", "ls"]).contains(&expected),
            "round {round}: an interrupted add must not leave a pin"
        );
    }
    let cid = repo.run_ok(&["add", "-Q", path]).trim().to_string();
    assert_eq!(cid, expected);
    assert!(repo.run_ok(&["repo", "verify"]).contains("all blocks validated"));
    let out = repo.command().args(["cat", &cid]).output().expect("cat");
    assert_eq!(out.stdout.len() as u64, size);
}
