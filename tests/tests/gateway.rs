//! The gateway inside real daemons: content fetched from another node over Bitswap when it is not local,
//! 504 when the network cannot produce a block in time, metrics on the API port, and `btfs gateway` serving
//! a repo on its own.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use btfs_tests::daemon::Daemon;
use btfs_tests::{TestRepo, chacha20_bytes};

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(120)))
            .build(),
    )
}

/// GET `url`: status and body.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("read body");
    (status, body)
}

#[test]
fn a_daemon_serves_what_only_its_peer_has_and_counts_it() {
    let provider = Daemon::start(&[]);
    let gateway = Daemon::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let data = chacha20_bytes("gateway over bitswap", 12 * 1024 * 1024 + 5);
    let file = work.path().join("payload");
    std::fs::write(&file, &data).expect("write");
    let cid = provider.run_ok(&["add", "-Q", file.to_str().expect("utf-8")]).trim().to_string();
    gateway.run_ok(&["swarm", "connect", provider.tcp_addr()]);
    // `swarm peers` names the peer as kubo does: its transport address, then /p2p/<id> once.
    let peers = gateway.run_ok(&["swarm", "peers"]);
    assert!(peers.lines().any(|l| l.trim() == provider.tcp_addr()), "{peers:?} lacks {}", provider.tcp_addr());

    let base = gateway.gateway_url();
    // Not local: only-if-cached refuses instead of fetching.
    let (status, _) = get(&format!("{base}/ipfs/{cid}"), &[("Cache-Control", "only-if-cached")]);
    assert_eq!(status, 412);
    let (status, body) = get(&format!("{base}/ipfs/{cid}"), &[]);
    assert_eq!(status, 200);
    assert!(body == data, "the gateway's bytes differ from the file ({} vs {} bytes)", body.len(), data.len());
    // Now it is local.
    let (status, _) = get(&format!("{base}/ipfs/{cid}?format=raw"), &[("Cache-Control", "only-if-cached")]);
    assert_eq!(status, 200);

    let (status, metrics) = get(&format!("{}/debug/metrics/prometheus", gateway.api_url()), &[]);
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).expect("utf-8");
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
    };
    assert_eq!(value("btfs_gateway_network_fetches_total"), 1, "{metrics}");
    assert_eq!(value("btfs_gateway_requests_total{method=\"GET\",code=\"200\"}"), 2, "{metrics}");
    assert_eq!(value("btfs_gateway_requests_total{method=\"GET\",code=\"412\"}"), 1, "{metrics}");
    assert!(value("btfs_gateway_response_bytes_total") >= data.len() as u64, "{metrics}");
}

#[test]
fn a_block_nobody_has_gets_504_after_the_retrieval_timeout() {
    let daemon = Daemon::start(&[("Gateway.RetrievalTimeout", "\"2s\"")]);
    let missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let started = Instant::now();
    let (status, body) = get(&format!("{}/ipfs/{missing}", daemon.gateway_url()), &[]);
    let took = started.elapsed();
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn btfs_gateway_serves_a_repo_on_its_own_and_stops_cleanly() {
    let repo = TestRepo::init();
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("hello.txt");
    std::fs::write(&file, "hello from a standalone gateway\n").expect("write");
    let cid = repo.run_ok(&["add", "-Q", file.to_str().expect("utf-8")]).trim().to_string();
    let mut child = repo.command().arg("gateway").stdout(Stdio::piped()).spawn().expect("start btfs gateway");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut first).expect("a line");
    // Keep reading, as a terminal would.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    assert!(first.starts_with("Gateway server listening on /ip4/127.0.0.1/tcp/"), "{first}");
    let url = std::fs::read_to_string(repo.path().join("gateway")).expect("gateway file");
    let (status, body) = get(&format!("{}/ipfs/{cid}", url.trim()), &[]);
    assert_eq!((status, body.as_slice()), (200, &b"hello from a standalone gateway\n"[..]));
    // No network behind it: a block that is not here is simply not found.
    let (status, _) =
        get(&format!("{}/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", url.trim()), &[]);
    assert_eq!(status, 404);
    // Read-only: nothing but GET, HEAD and OPTIONS.
    let resp = agent().post(&format!("{}/ipfs/{cid}", url.trim())).send_empty().expect("POST");
    assert_eq!(resp.status().as_u16(), 405);

    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "btfs gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!repo.path().join("gateway").exists(), "the gateway file is removed on exit");
}

#[test]
fn blocks_removed_by_gc_are_not_served_from_the_gateway_cache() {
    let daemon = Daemon::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("small.txt");
    std::fs::write(&file, "a small file the gateway keeps in memory\n").expect("write");
    let cid = daemon.run_ok(&["add", "-Q", "--pin=false", file.to_str().expect("utf-8")]).trim().to_string();
    let url = format!("{}/ipfs/{cid}", daemon.gateway_url());
    assert_eq!(get(&url, &[]).0, 200);
    assert_eq!(get(&url, &[("Cache-Control", "only-if-cached")]).0, 200, "served again from the hot cache");
    daemon.run_ok(&["repo", "gc"]);
    let (status, body) = get(&url, &[("Cache-Control", "only-if-cached")]);
    assert_eq!(status, 412, "a collected block must not be served: {}", String::from_utf8_lossy(&body));
}
