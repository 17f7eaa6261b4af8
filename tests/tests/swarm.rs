//! Several `btfs daemon` processes on 127.0.0.1: content found through the DHT alone, and a transfer that
//! survives its provider being killed.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use btfs_tests::daemon::Daemon;
use btfs_tests::write_chacha20_file;

fn stat_number(daemon: &Daemon, key: &str) -> u64 {
    let stat = daemon.run_ok(&["bitswap", "stat"]);
    let line = stat.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no {key} in {stat}"));
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a number")
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read") == std::fs::read(b).expect("read")
}

#[test]
fn five_daemons_find_content_through_the_dht_and_survive_a_provider_dying() {
    let work = tempfile::tempdir().expect("tempdir");
    let boot = Daemon::start(&[]);
    let bootstrap = format!("[\"{}\"]", boot.tcp_addr());
    let mut nodes: Vec<Daemon> = (0..5).map(|_| Daemon::start(&[("Bootstrap", bootstrap.as_str())])).collect();

    // nodes[0] adds (and so announces the root); nodes[4] has never been told about nodes[0].
    let src = work.path().join("content");
    write_chacha20_file(&src, "dht content", 256 * 1024 * 1024).expect("write input");
    let cid = nodes[0].run_ok(&["add", "-Q", src.to_str().expect("utf-8")]).trim().to_string();
    let provider = nodes[0].peer_id.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = nodes[4].run_ok(&["routing", "findprovs", &cid]);
        if found.lines().any(|l| l.trim() == provider) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes[4] never found the provider in the DHT: {found:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let peers = nodes[4].run_ok(&["swarm", "peers"]);
    assert!(!peers.contains(&provider) || peers.lines().count() > 1, "sanity: {peers}");
    let out = work.path().join("via-dht");
    let status = nodes[4].repo.command().args(["cat", &cid]).stdout(File::create(&out).expect("create")).status();
    assert!(status.expect("run cat").success(), "cat through the DHT failed");
    assert!(same_file(&src, &out), "nodes[4] fetched different bytes");

    // nodes[1] pins the file too: now two providers. nodes[3] fetches while nodes[0] is killed.
    nodes[1].run_ok(&["pin", "add", &cid]);
    let before = stat_number(&nodes[3], "blocks received:");
    let out = work.path().join("survivor");
    let mut cat = nodes[3]
        .repo
        .command()
        .args(["cat", &cid])
        .stdout(File::create(&out).expect("create"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cat");
    while stat_number(&nodes[3], "blocks received:") < before + 20 {
        assert!(cat.try_wait().expect("poll cat").is_none(), "the transfer finished before a provider could die");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cat.try_wait().expect("poll cat").is_none(), "the provider must die while the transfer is under way");
    nodes[0].kill();
    let status = cat.wait().expect("wait for cat");
    assert!(status.success(), "cat failed after its first provider died");
    assert!(same_file(&src, &out), "the surviving provider's bytes differ");
    assert!(stat_number(&nodes[3], "blocks received:") > before, "nodes[3] fetched over Bitswap");
}
