//! `btfs daemon` processes and the Helia peer (`tests/js/helia-peer.mjs`) for network tests.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::{TestRepo, js_dir};

/// A running `btfs daemon` over its own test repo; killed on drop.
pub struct Daemon {
    pub repo: TestRepo,
    child: Child,
    /// The peer id.
    pub peer_id: String,
    /// Swarm addresses with `/p2p/<id>`.
    pub addrs: Vec<String>,
    /// The RPC API, as `$BTFS_PATH/api` names it (a multiaddr).
    pub api: String,
}

/// Reads lines from a child's stdout on a thread, so waits can time out.
fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Daemon {
    /// Inits a test repo, applies `config` (`btfs config --json KEY VALUE`) and starts the daemon.
    pub fn start(config: &[(&str, &str)]) -> Self {
        let repo = TestRepo::init();
        for (key, value) in config {
            repo.run_ok(&["config", "--json", key, value]);
        }
        Self::start_on(repo)
    }

    /// Starts a daemon on an existing repo and waits for "Daemon is ready".
    pub fn start_on(repo: TestRepo) -> Self {
        Self::start_on_with(repo, &[])
    }

    /// Starts `btfs daemon <args>` (for example `--offline`) on an existing repo and waits for "Daemon is ready".
    pub fn start_on_with(repo: TestRepo, args: &[&str]) -> Self {
        let id: Value = serde_json::from_str(&repo.run_ok(&["id"])).expect("id prints JSON");
        let peer_id = id["ID"].as_str().expect("ID").to_string();
        let (child, addrs, api) = spawn(&repo, &peer_id, args);
        Self { repo, child, peer_id, addrs, api }
    }

    /// Stops the daemon with SIGTERM and starts it again on the same repo (new ports under the test profile);
    /// returns whether the first one exited cleanly.
    pub fn restart(&mut self) -> bool {
        let clean = self.terminate();
        let (child, addrs, api) = spawn(&self.repo, &self.peer_id, &[]);
        self.child = child;
        self.addrs = addrs;
        self.api = api;
        clean
    }

    /// The gateway's base URL as the daemon wrote it to `$BTFS_PATH/gateway` (`http://127.0.0.1:<port>`,
    /// without a trailing slash); panics when the file is missing or names another host.
    pub fn gateway_url(&self) -> String {
        let path = self.repo.path().join("gateway");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the daemon writes {} once ready: {e}", path.display()));
        let url = text.trim().trim_end_matches('/').to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{} names {url:?}, not http://127.0.0.1:<port>", path.display());
        url
    }

    /// The TCP swarm address with `/p2p/<id>`.
    pub fn tcp_addr(&self) -> &str {
        self.addrs.iter().find(|a| a.contains("/tcp/")).expect("a TCP listener")
    }

    /// `http://127.0.0.1:<port>` of the RPC API.
    pub fn api_url(&self) -> String {
        let parts: Vec<&str> = self.api.trim().split('/').collect();
        format!("http://{}:{}", parts[2], parts[4])
    }

    /// Runs `btfs <args>` against this daemon and returns stdout; panics with stderr on failure.
    pub fn run_ok(&self, args: &[&str]) -> String {
        self.repo.run_ok(args)
    }

    /// The process id (for memory sampling).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the daemon at once (SIGKILL): a peer vanishing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon with SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }
}

/// Starts `btfs daemon <args>` on `repo` and waits for "Daemon is ready"; returns the child, its swarm addresses
/// and the API multiaddr.
fn spawn(repo: &TestRepo, peer_id: &str, args: &[&str]) -> (Child, Vec<String>, String) {
    let mut child = repo
        .command()
        .arg("daemon")
        .args(args)
        .env("RUST_LOG", std::env::var("BTFS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start btfs daemon");
    let lines = line_reader(child.stdout.take().expect("stdout"));
    let mut addrs = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "Daemon is ready" => break,
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("Swarm listening on ") {
                    addrs.push(format!("{addr}/p2p/{peer_id}"));
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("btfs daemon did not become ready within 30 s");
            }
        }
    }
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    let api = std::fs::read_to_string(repo.path().join("api")).expect("the daemon writes $BTFS_PATH/api");
    (child, addrs, api)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of a process so far, in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system, seconds) of this process's children that have exited and been waited for, and
/// of theirs (`cutime` and `cstime` in `/proc/self/stat`).
pub fn reaped_children_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut rest = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let cutime: f64 = rest.nth(13)?.parse().ok()?;
    let cstime: f64 = rest.next()?.parse().ok()?;
    Some((cutime + cstime) / 100.0)
}

/// CPU time (user + system, seconds) of process `pid` so far, and of each of its threads by name (threads
/// of one name summed). Linux `/proc`, in clock ticks of 1/100 s.
pub fn cpu_secs(pid: u32) -> Option<(f64, Vec<(String, f64)>)> {
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are the
    // 12th and 13th.
    fn ticks(stat: &str) -> Option<(String, f64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat.get(open + 1..close)?.to_string();
        let mut rest = stat.get(close + 2..)?.split_whitespace();
        let utime: f64 = rest.nth(11)?.parse().ok()?;
        let stime: f64 = rest.next()?.parse().ok()?;
        Some((name, (utime + stime) / 100.0))
    }
    let (_, total) = ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads: Vec<(String, f64)> = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some((name, secs)) = std::fs::read_to_string(task.path().join("stat")).ok().as_deref().and_then(ticks)
        else {
            continue;
        };
        match threads.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += secs,
            None => threads.push((name, secs)),
        }
    }
    Some((total, threads))
}

/// A Helia node on 127.0.0.1 (`tests/js/helia-peer.mjs`), driven over stdin/stdout; stopped on drop.
pub struct HeliaPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pub peer_id: String,
    pub addrs: Vec<String>,
}

impl HeliaPeer {
    pub fn start() -> Self {
        let mut child = Command::new("node")
            .arg(js_dir().join("helia-peer.mjs"))
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node tests/js/helia-peer.mjs (run scripts/setup.sh first)");
        let stdin = child.stdin.take().expect("stdin");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let first = lines.recv_timeout(Duration::from_secs(60)).expect("Helia prints its addresses on start");
        let hello: Value = serde_json::from_str(&first).expect("Helia's first line is JSON");
        let peer_id = hello["peerId"].as_str().expect("peerId").to_string();
        let addrs =
            hello["addrs"].as_array().expect("addrs").iter().filter_map(|a| a.as_str().map(String::from)).collect();
        Self { child, stdin, lines, peer_id, addrs }
    }

    /// Sends one command and returns its answer; panics when Helia reports an error.
    pub fn call(&mut self, cmd: Value, timeout: Duration) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to Helia");
        self.stdin.flush().expect("flush to Helia");
        let line = self.lines.recv_timeout(timeout).unwrap_or_else(|_| panic!("Helia did not answer {cmd} in time"));
        let answer: Value = serde_json::from_str(&line).expect("Helia answers JSON");
        assert_eq!(answer["ok"], Value::Bool(true), "Helia failed {cmd}: {answer}");
        answer
    }

    pub fn add(&mut self, path: &Path, profile: &str) -> String {
        let answer =
            self.call(serde_json::json!({"cmd": "add", "path": path, "profile": profile}), Duration::from_secs(600));
        answer["cid"].as_str().expect("cid").to_string()
    }

    pub fn connect(&mut self, addr: &str) {
        self.call(serde_json::json!({"cmd": "connect", "addr": addr}), Duration::from_secs(60));
    }

    /// Fetches `cid` into `out` over Bitswap; returns the milliseconds it took.
    pub fn cat(&mut self, cid: &str, out: &Path) -> u64 {
        let answer = self.call(
            serde_json::json!({"cmd": "cat", "cid": cid, "out": out, "timeoutMs": 600_000}),
            Duration::from_secs(610),
        );
        answer["ms"].as_u64().unwrap_or(0)
    }
}

impl Drop for HeliaPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", serde_json::json!({"cmd": "stop"}));
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
