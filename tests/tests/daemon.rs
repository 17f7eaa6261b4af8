//! The daemon's RPC API as clients see it: kubo's own JavaScript client, kubo-shaped errors, the origin
//! check, and clean shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use btfs_tests::daemon::Daemon;
use btfs_tests::{js_dir, write_chacha20_file};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One raw HTTP/1.1 request to the API; returns the status code and body.
fn http(daemon: &Daemon, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let url = daemon.api_url();
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to the API");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The JSON error object in a (possibly chunked) body.
fn error_json(body: &str) -> Value {
    let start = body.find('{').unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').expect("JSON end");
    serde_json::from_str(&body[start..=end]).expect("error JSON")
}

#[test]
fn kubo_rpc_client_adds_cats_and_lists_pins() {
    let daemon = Daemon::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("input");
    write_chacha20_file(&file, "kubo-rpc-client", 3 * 1024 * 1024 + 17).expect("write");
    let output = Command::new("node")
        .arg(js_dir().join("rpc-client.mjs"))
        .arg(daemon.api.trim())
        .arg(&file)
        .output()
        .expect("run node rpc-client.mjs");
    assert!(output.status.success(), "kubo-rpc-client failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("rpc-client prints JSON");
    assert_eq!(report["id"].as_str(), Some(daemon.peer_id.as_str()), "{report}");
    let expected = daemon.run_ok(&["add", "-Q", "--only-hash", file.to_str().expect("utf-8")]);
    assert_eq!(report["cid"].as_str(), Some(expected.trim()), "{report}");
    let digest = format!("{:x}", Sha256::digest(std::fs::read(&file).expect("read")));
    assert_eq!(report["catSha256"].as_str(), Some(digest.as_str()));
    let pins = report["pins"].as_array().expect("pins");
    assert!(
        pins.iter().any(|p| p["cid"] == report["cid"] && p["type"] == "recursive"),
        "the added file is pinned recursively: {report}"
    );
}

#[test]
fn api_errors_look_like_kubos() {
    let daemon = Daemon::start(&[]);
    let (status, body) = http(&daemon, "POST", "/api/v0/no/such/command", &[]);
    assert_eq!((status, body.trim()), (404, "404 page not found"));

    let (status, body) = http(&daemon, "POST", "/api/v0/cat", &[]);
    assert_eq!(status, 400);
    let err = error_json(&body);
    assert_eq!((err["Code"].as_u64(), err["Type"].as_str()), (Some(1), Some("error")), "{err}");
    assert!(err["Message"].as_str().is_some_and(|m| m.contains("required")), "{err}");

    let (status, body) = http(&daemon, "POST", "/api/v0/cat?arg=not-a-cid", &[]);
    assert!(status == 400 || status == 500, "bad CID: {status}");
    assert_eq!(error_json(&body)["Type"], "error");

    let (status, _) = http(&daemon, "POST", "/api/v0/swarm/connect?arg=/ip4/127.0.0.1/tcp/1", &[]);
    assert_eq!(status, 400, "an address without /p2p/ is a bad argument");

    let (status, _) = http(&daemon, "GET", "/api/v0/id", &[]);
    assert_eq!(status, 405);

    let (status, body) = http(&daemon, "POST", "/api/v0/id", &[("Origin", "http://evil.example")]);
    assert_eq!((status, body.trim()), (403, "403 - Forbidden"), "a cross-origin browser request is refused");

    let (status, body) = http(&daemon, "POST", "/api/v1/id", &[]);
    assert_eq!(status, 200, "/api/v1 is an alias: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(body.trim()).ok().and_then(|v| v["ID"].as_str().map(String::from)),
        Some(daemon.peer_id.clone())
    );
}

#[test]
fn shutdown_and_sigterm_stop_the_daemon_cleanly() {
    let mut daemon = Daemon::start(&[]);
    let id: Value = serde_json::from_str(&daemon.run_ok(&["id"])).expect("id JSON");
    assert!(
        id["Addresses"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.contains("/tcp/")))),
        "a running daemon reports its listen addresses: {id}"
    );
    daemon.run_ok(&["shutdown"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(daemon.terminate(), "the daemon exits with success after `btfs shutdown`");
    assert!(!daemon.repo.path().join("api").exists(), "the api file is removed on shutdown");
    // The repo is free again: a local command works, and a second daemon starts on it.
    daemon.repo.run_ok(&["repo", "stat"]);

    let mut again = Daemon::start_on(btfs_tests::TestRepo::init());
    assert!(again.terminate(), "SIGTERM stops the daemon with success");
}
