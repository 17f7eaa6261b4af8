//! Real BitTorrent peers for the interop tests and the import benchmark: opentracker, libtorrent (through
//! `tests/bt/lt.py`, run with Debian's `/usr/bin/python3`), mktorrent and aria2 (`tests/bt/aria2.py`). All
//! of them listen on and talk to 127.0.0.1 only; `tests/bt/README.md` has the details behind each flag.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Debian's Python, the only one that imports `libtorrent`.
pub const PYTHON: &str = "/usr/bin/python3";

/// `tests/bt/`.
pub fn bt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bt")
}

fn lt_py() -> PathBuf {
    bt_dir().join("lt.py")
}

/// Runs a harness script to completion and parses the JSON line it prints last.
fn run_json(mut cmd: Command, what: &str) -> Value {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    report(&out, what)
}

/// The JSON line a harness script printed last; panics with its stderr if it failed.
fn report(out: &std::process::Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    let value: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "{what} failed ({}): {last}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    value
}

/// What `lt.py make` reports: `info_hash`, `info_hash_v2`, `whitelist`, `magnet`, `files`, ...
pub fn lt_make(path: &Path, out: &Path, piece_kib: u32, hybrid: bool, trackers: &[String]) -> Value {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(lt_py()).args(["make", "--out"]).arg(out).args(["--piece-kib", &piece_kib.to_string()]);
    if hybrid {
        cmd.arg("--hybrid");
    }
    for t in trackers {
        cmd.args(["--tracker", t]);
    }
    cmd.arg(path);
    run_json(cmd, "lt.py make")
}

/// `mktorrent` with pieces of 2^`log2_piece` bytes and one tracker.
pub fn mktorrent(path: &Path, out: &Path, log2_piece: u32, tracker: &str) {
    let status = Command::new("mktorrent")
        .args(["-l", &log2_piece.to_string(), "-a", tracker, "-o"])
        .arg(out)
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mktorrent is installed (scripts/setup.sh)");
    assert!(status.success(), "mktorrent failed: {status}");
}

/// A child process killed (and reaped) on drop.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a harness script that writes `{"port": ...}` to `port_file` once it is ready; waits for that.
fn start_with_port_file(cmd: Command, port_file: &Path, what: &str, wait: Duration) -> (Process, Value) {
    try_start_with_port_file(cmd, port_file, what, wait).unwrap_or_else(|e| panic!("{e}"))
}

/// What made a harness script fail to start.
enum StartError {
    /// Killed by a signal before it was ready (libtorrent 2.0.8 crashes now and then; see `lt_download`).
    Signal(String),
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Signal(m) | Self::Other(m) => f.write_str(m),
        }
    }
}

fn try_start_with_port_file(
    mut cmd: Command,
    port_file: &Path,
    what: &str,
    wait: Duration,
) -> Result<(Process, Value), StartError> {
    use std::os::unix::process::ExitStatusExt;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| StartError::Other(format!("cannot start {what}: {e}")))?;
    let mut process = Process { child };
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(text) = fs::read_to_string(port_file)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return Ok((process, v));
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            let message = format!("{what} exited before it was ready: {status}");
            return Err(if status.signal().is_some() {
                StartError::Signal(message)
            } else {
                StartError::Other(message)
            });
        }
        if Instant::now() >= deadline {
            return Err(StartError::Other(format!("{what} was not ready within {wait:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A libtorrent seeder (`lt.py seed`) of `torrent`, whose content is under `dir`.
///
/// libtorrent 2.0.8 itself crashes now and then (SIGSEGV, seen in CI, at start and while serving): a seeder
/// that dies by a signal is started again on the same port by a watcher thread, and says so on stderr. A
/// client that reconnects then finds it where it was. An exit without a signal is left alone.
pub struct Seeder {
    /// The TCP port peers connect to.
    pub port: u16,
    state: Arc<Mutex<SeederState>>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

struct SeederState {
    process: Option<Process>,
    stopped: bool,
}

impl Seeder {
    pub fn start(torrent: &Path, dir: &Path, dht_bootstrap: Option<&str>) -> Self {
        Self::start_with(torrent, dir, dht_bootstrap, false)
    }

    /// A seeder that skips its hash check (libtorrent's seed mode): it offers every piece and refuses to
    /// send those that fail their hash when read, so a copy with damaged pieces serves only the good ones.
    pub fn start_partial(torrent: &Path, dir: &Path) -> Self {
        Self::start_with(torrent, dir, None, true)
    }

    fn start_with(torrent: &Path, dir: &Path, dht_bootstrap: Option<&str>, seed_mode: bool) -> Self {
        let port_file = dir.with_extension(format!("seed-{}.port", std::process::id()));
        let (torrent, dir, dht) = (torrent.to_path_buf(), dir.to_path_buf(), dht_bootstrap.map(str::to_string));
        let seed_command = move |port: u16| {
            let mut cmd = Command::new(PYTHON);
            cmd.arg(lt_py()).args(["seed", "--torrent"]).arg(&torrent).arg("--dir").arg(&dir);
            cmd.arg("--port-file").arg(&port_file).args(["--tracker-interval", "2", "--lifetime", "900"]);
            cmd.args(["--port", &port.to_string()]);
            match &dht {
                Some(b) => cmd.args(["--dht-bootstrap", b]),
                None => cmd.arg("--no-dht"),
            };
            if seed_mode {
                cmd.arg("--seed-mode");
            }
            (cmd, port_file.clone())
        };
        let start = move |port: u16| -> Result<(Process, u16), StartError> {
            let (cmd, port_file) = seed_command(port);
            let _ = fs::remove_file(&port_file);
            let (process, v) = try_start_with_port_file(cmd, &port_file, "lt.py seed", Duration::from_secs(120))?;
            let _ = fs::remove_file(&port_file);
            Ok((process, v["port"].as_u64().expect("seed port") as u16))
        };
        let mut started = start(0);
        if let Err(StartError::Signal(e)) = &started {
            eprintln!("{e}; starting it once more");
            started = start(0);
        }
        let (process, port) = started.unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(Mutex::new(SeederState { process: Some(process), stopped: false }));
        let watched = state.clone();
        let watcher = std::thread::spawn(move || {
            use std::os::unix::process::ExitStatusExt;
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let mut s = watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if s.stopped {
                    return;
                }
                let crashed = match s.process.as_mut().map(|p| p.child.try_wait()) {
                    Some(Ok(Some(status))) if status.signal().is_some() => status,
                    Some(Ok(Some(_)) | Err(_)) | None => return,
                    Some(Ok(None)) => continue,
                };
                eprintln!("lt.py seed on port {port} died ({crashed}); starting it again on the same port");
                s.process = match start(port) {
                    Ok((p, _)) => Some(p),
                    Err(e) => {
                        eprintln!("cannot restart lt.py seed: {e}");
                        None
                    }
                };
            }
        });
        Self { port, state, watcher: Some(watcher) }
    }

    /// Stops the seeder for good (no restart).
    pub fn kill(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.stopped = true;
        if let Some(mut p) = s.process.take() {
            p.kill();
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The seeder process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).process.as_ref().map(Process::pid)
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.kill();
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// A hostile peer (`tests/bt/liar.py`): announced to the tracker as a seed, it claims every piece and answers
/// every request with bytes that are not the torrent's.
pub struct Liar {
    pub process: Process,
    stats: PathBuf,
}

impl Liar {
    pub fn start(info_hash: &str, pieces: u64, tracker: &str, dir: &Path) -> Self {
        let port_file = dir.join(format!("liar-{}.port", std::process::id()));
        let stats = dir.join(format!("liar-{}.stats", std::process::id()));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(bt_dir().join("liar.py")).args(["--info-hash", info_hash, "--tracker", tracker]);
        cmd.args(["--pieces", &pieces.to_string()]).arg("--port-file").arg(&port_file).arg("--stats").arg(&stats);
        let (process, _) = start_with_port_file(cmd, &port_file, "liar.py", Duration::from_secs(30));
        Self { process, stats }
    }

    /// Blocks of false bytes sent so far.
    pub fn blocks_sent(&self) -> u64 {
        let text = fs::read_to_string(&self.stats).unwrap_or_default();
        serde_json::from_str::<Value>(&text).ok().and_then(|v| v["pieces_sent"].as_u64()).unwrap_or(0)
    }
}

/// A bare libtorrent DHT node on 127.0.0.1 that the others bootstrap from.
pub struct DhtNode {
    pub process: Process,
    pub port: u16,
    _dir: TempDir,
}

impl DhtNode {
    pub fn start() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let port_file = dir.path().join("dht.port");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(lt_py()).args(["dht-node", "--lifetime", "900", "--port-file"]).arg(&port_file);
        let (process, v) = start_with_port_file(cmd, &port_file, "lt.py dht-node", Duration::from_secs(30));
        let port = v["port"].as_u64().expect("dht port") as u16;
        Self { process, port, _dir: dir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `lt.py download`: a libtorrent client fetching a torrent or magnet into `dir`. Returns its report.
///
/// Debian's libtorrent 2.0.8 has crashed with SIGSEGV at the end of a download on this machine (once in
/// CI). A crash of the reference client says nothing about btfs, so that case alone is run once more;
/// any other failure fails the test.
pub fn lt_download(dir: &Path, source: &str, peers: &[String], timeout: Duration) -> Value {
    use std::os::unix::process::ExitStatusExt;
    let what = "lt.py download";
    let out = lt_download_command(dir, source, peers, timeout)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if out.status.signal().is_none() {
        return report(&out, what);
    }
    eprintln!("{what} died of signal {:?}; running it once more", out.status.signal());
    let _ = fs::remove_dir_all(dir);
    run_json(lt_download_command(dir, source, peers, timeout), what)
}

fn lt_download_command(dir: &Path, source: &str, peers: &[String], timeout: Duration) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(lt_py()).args(["download", "--dir"]).arg(dir);
    if source.starts_with("magnet:") {
        cmd.args(["--magnet", source]);
    } else {
        cmd.args(["--torrent", source]);
    }
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.args(["--timeout", &timeout.as_secs().to_string()]);
    cmd
}

/// `aria2.py`: aria2c fetching a .torrent or magnet into `dir` (it needs a tracker to find peers).
pub fn aria2_download(dir: &Path, source: &str, timeout: Duration) -> Value {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(bt_dir().join("aria2.py")).arg("--dir").arg(dir);
    if source.starts_with("magnet:") {
        cmd.args(["--magnet", source]);
    } else {
        cmd.args(["--torrent", source]);
    }
    cmd.args(["--timeout", &timeout.as_secs().to_string()]);
    run_json(cmd, "aria2.py")
}

/// opentracker in whitelist mode on 127.0.0.1 (HTTP and UDP on one port number).
pub struct Tracker {
    process: Process,
    pub port: u16,
    dir: TempDir,
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Tracker {
    pub fn start() -> Self {
        let dir = TempDir::new().expect("temp dir");
        // opentracker drops to `nobody` inside `dir` when run as root: it must be able to read the whitelist.
        set_mode(dir.path(), 0o755);
        let list = dir.path().join("whitelist");
        fs::write(&list, b"").expect("write the whitelist");
        set_mode(&list, 0o644);
        for _ in 0..10 {
            let port = free_port();
            let child = Command::new("opentracker")
                .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-P", &port.to_string(), "-d"])
                .arg(dir.path())
                .args(["-w", "whitelist"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("opentracker is installed (scripts/setup.sh)");
            let mut process = Process { child };
            // A taken port makes it exit at once; otherwise it is listening within milliseconds.
            std::thread::sleep(Duration::from_millis(200));
            if matches!(process.child.try_wait(), Ok(None)) {
                return Self { process, port, dir };
            }
            process.kill();
        }
        panic!("opentracker did not start on any free port");
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    pub fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}", self.port)
    }

    /// Allows these infohashes (40 hex each) and reloads the list.
    pub fn allow(&self, hashes: &[&str]) {
        let mut f = fs::OpenOptions::new().append(true).open(self.dir.path().join("whitelist")).expect("whitelist");
        for h in hashes {
            writeln!(f, "{h}").expect("append to the whitelist");
        }
        drop(f);
        let status = Command::new("kill").args(["-HUP", &self.process.pid().to_string()]).status().expect("kill -HUP");
        assert!(status.success(), "cannot signal opentracker");
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The lines `lt.py make` says the whitelist needs.
    pub fn allow_made(&self, made: &Value) {
        let hashes: Vec<&str> =
            made["whitelist"].as_array().expect("whitelist").iter().filter_map(Value::as_str).collect();
        self.allow(&hashes);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether two directory trees hold the same files with the same bytes (`diff -r`).
pub fn same_tree(a: &Path, b: &Path) -> bool {
    Command::new("diff").arg("-r").arg(a).arg(b).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}
