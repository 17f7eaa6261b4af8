//! Gateway benchmark: the same two files (1 GiB of ChaCha20 keystream and 4 KiB) served by nginx and by
//! `btfs daemon`'s HTTP gateway, in one run on this machine. For each server: the 1 GiB download with curl (best
//! of 3, with its time to first byte), requests per second for the 4 KiB file with wrk, and the server's peak
//! RSS. btfs runs once per import profile: the repo default and, when `btfs add --help` offers it,
//! `--cid-profile unixfs-v1-2025`, each in its own repo and daemon so its peak RSS is its own. Prints a markdown
//! table for docs/performance.md. Exits non-zero on errors (a server that will not start, a wrong byte), never
//! on speed.
//!
//! Usage: `btfs-gateway-bench [--size-mib N] [--duration SECS] [--btfs PATH]` (defaults 1024, 10, and the
//! release `btfs` next to this executable), after `cargo build --release -p btfs-node -p btfs-tests --bins`.
//! Needs nginx, wrk and curl (`scripts/setup.sh`). Only 127.0.0.1 is used.
//!
//! nginx runs from a private config in the temp dir (`nginx -c <conf> -p <dir>`, `daemon off`, one worker,
//! `sendfile on`, `access_log off`); the system's nginx config is never read. Each server is read once in full
//! and checked byte for byte (SHA-256 of the 1 GiB file, the 4 KiB file exactly) before anything is timed;
//! that read also warms the page cache for both alike.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use btfs_tests::daemon::{Daemon, peak_rss_kib};
use btfs_tests::{TestRepo, btfs_bin, chacha20_bytes, write_chacha20_file};
use sha2::{Digest, Sha256};

/// wrk's shape, from the brief and NOTES.md's reference figure: one thread, 32 connections.
const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 32;
/// Timed 1 GiB downloads per server; the best one is reported.
const DOWNLOAD_RUNS: usize = 3;
const SMALL_LEN: usize = 4096;

struct Args {
    size_mib: u64,
    duration_secs: u64,
    btfs: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut size_mib = 1024;
    let mut duration_secs = 10;
    let mut btfs = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => size_mib = value()?.parse().context("--size-mib takes a whole number")?,
            "--duration" => duration_secs = value()?.parse().context("--duration takes whole seconds")?,
            "--btfs" => btfs = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("usage: btfs-gateway-bench [--size-mib N] [--duration SECS] [--btfs PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(size_mib > 0 && duration_secs > 0, "--size-mib and --duration must be positive");
    let btfs = match btfs {
        Some(path) => {
            ensure!(path.is_file(), "--btfs {}: no such file", path.display());
            path
        }
        None => btfs_bin(),
    };
    Ok(Args { size_mib, duration_secs, btfs })
}

/// A free port on 127.0.0.1 for nginx, which cannot report a port 0 it was given. Another process could take
/// it before nginx binds; nginx then fails to start and says so.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// nginx with a private config over `root`; stopped (SIGTERM to the master, which stops its workers) on drop.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(root: &Path, dir: &Path) -> Result<Self> {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("nginx"));
        fs::create_dir_all(dir.join("tmp"))?;
        let port = free_port()?;
        let d = dir.display();
        // `user root` lets the worker read files in a 0700 temp dir when we run as root (nginx would switch to
        // an unprivileged user); run as another user, nginx ignores it with a warning in the error log.
        let conf = format!(
            "daemon off;\n\
             user root;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20 sendfile on;\n\
             \x20 access_log off;\n\
             \x20 default_type application/octet-stream;\n\
             \x20 client_body_temp_path {d}/tmp;\n\
             \x20 proxy_temp_path {d}/tmp;\n\
             \x20 fastcgi_temp_path {d}/tmp;\n\
             \x20 uwsgi_temp_path {d}/tmp;\n\
             \x20 scgi_temp_path {d}/tmp;\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   root {root};\n\
             \x20 }}\n\
             }}\n",
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let child = Command::new(&bin)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {} (run scripts/setup.sh)", bin.display()))?;
        let mut nginx = Self { child, url: format!("http://127.0.0.1:{port}") };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}) before listening:\n{log}");
            }
            ensure!(start.elapsed() < Duration::from_secs(10), "nginx did not listen on port {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// Peak RSS of the master and its workers, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let workers = children.split_whitespace().filter_map(|p| p.parse().ok());
        std::iter::once(pid).chain(workers).filter_map(peak_rss_kib).sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a server must send back: the big file by length and SHA-256, the small one byte for byte.
struct Expected {
    big_len: u64,
    big_sha256: [u8; 32],
    small: Vec<u8>,
}

/// GETs `url` with curl into this process and returns its length and SHA-256 (curl --fail: an HTTP error is
/// an error).
fn fetch_digest(url: &str) -> Result<(u64, [u8; 32], Vec<u8>)> {
    let mut child = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "600", "-o", "-", url])
        .stdout(Stdio::piped())
        .spawn()
        .context("run curl (run scripts/setup.sh)")?;
    let mut stdout = child.stdout.take().context("curl's stdout")?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if head.len() < SMALL_LEN * 2 {
            head.extend_from_slice(&buf[..n.min(SMALL_LEN * 2 - head.len())]);
        }
        len += n as u64;
    }
    let status = child.wait()?;
    ensure!(status.success(), "curl {url} failed ({status})");
    Ok((len, hasher.finalize().into(), head))
}

fn verify(name: &str, big_url: &str, small_url: &str, expected: &Expected) -> Result<()> {
    let (len, digest, _) = fetch_digest(big_url)?;
    ensure!(
        len == expected.big_len && digest == expected.big_sha256,
        "{name} sent different bytes for the big file ({len} bytes, expected {})",
        expected.big_len
    );
    let (_, _, small) = fetch_digest(small_url)?;
    ensure!(small == expected.small, "{name} sent different bytes for the 4 KiB file ({} bytes)", small.len());
    Ok(())
}

/// One timed download to /dev/null: (bytes per second, seconds to the first byte).
fn curl_download(url: &str, expected_len: u64) -> Result<(f64, f64)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "600", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{size_download} %{speed_download} %{time_starttransfer}", url])
        .output()
        .context("run curl (run scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "curl {url} failed ({}): {text}", out.status);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [code, size, speed, ttfb] = fields[..] else { bail!("unexpected curl -w output {text:?}") };
    ensure!(code == "200", "{url} answered {code}");
    let size: u64 = size.parse().context("size_download")?;
    ensure!(size == expected_len, "{url}: {size} bytes, expected {expected_len}");
    Ok((speed.parse().context("speed_download")?, ttfb.parse().context("time_starttransfer")?))
}

/// `wrk` figures for one URL.
struct WrkResult {
    requests_per_sec: f64,
    /// wrk's "Socket errors" line, if it printed one.
    socket_errors: Option<String>,
}

fn wrk(url: &str, duration_secs: u64) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{duration_secs}s"))
        .arg(url)
        .output()
        .context("run wrk (run scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk {url} failed ({}): {text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text).with_context(|| format!("wrk {url} printed:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<WrkResult> {
    let field = |prefix: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    if let Some(bad) = field("Non-2xx or 3xx responses:") {
        bail!("{bad} responses were errors");
    }
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .context("no \"N requests in\" line")?;
    ensure!(requests > 0, "no request completed");
    let requests_per_sec = field("Requests/sec:").context("no Requests/sec line")?.parse()?;
    Ok(WrkResult { requests_per_sec, socket_errors: field("Socket errors:").map(String::from) })
}

/// One column of the table.
struct Figures {
    server: String,
    /// Best of [`DOWNLOAD_RUNS`], bytes per second.
    download: f64,
    /// Shortest time to first byte over the same runs, seconds.
    ttfb: f64,
    wrk: WrkResult,
    peak_rss_kib: u64,
}

fn measure(name: &str, big_url: &str, small_url: &str, expected: &Expected, args: &Args) -> Result<Figures> {
    verify(name, big_url, small_url, expected)?;
    let (mut download, mut ttfb) = (0f64, f64::INFINITY);
    for run in 1..=DOWNLOAD_RUNS {
        let (speed, first) = curl_download(big_url, expected.big_len)?;
        eprintln!("{name}: download {run}: {:.0} MB/s, first byte after {:.2} ms", speed / 1e6, first * 1e3);
        download = download.max(speed);
        ttfb = ttfb.min(first);
    }
    let wrk = wrk(small_url, args.duration_secs)?;
    eprintln!("{name}: 4 KiB: {:.0} requests/s", wrk.requests_per_sec);
    Ok(Figures { server: name.to_string(), download, ttfb, wrk, peak_rss_kib: 0 })
}

/// `btfs add -Q` with `extra` flags; returns the CID.
fn btfs_add(repo: &TestRepo, extra: &[&str], path: &Path) -> Result<String> {
    let out = repo.command().args(["add", "-Q"]).args(extra).arg(path).output()?;
    ensure!(out.status.success(), "btfs add {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// One btfs column: a fresh repo, both files added with `flags`, a daemon, the measurements, its peak RSS.
fn measure_btfs(
    label: &str,
    flags: &[&str],
    files: (&Path, &Path),
    expected: &Expected,
    args: &Args,
    cids: &mut String,
) -> Result<Figures> {
    let repo = TestRepo::init_with(args.btfs.clone());
    let big = btfs_add(&repo, flags, files.0)?;
    let small = btfs_add(&repo, flags, files.1)?;
    writeln!(cids, "- {label}: {} MiB file `{big}`, 4 KiB file `{small}`", args.size_mib)?;
    let daemon = Daemon::start_on(repo);
    // As Daemon::gateway_url reads it, but an error rather than a panic, so the table of what was measured
    // still prints.
    let gateway_file = daemon.repo.path().join("gateway");
    let gateway = fs::read_to_string(&gateway_file)
        .with_context(|| format!("the daemon did not write {}", gateway_file.display()))?
        .trim()
        .trim_end_matches('/')
        .to_string();
    ensure!(gateway.starts_with("http://127.0.0.1:"), "{} names {gateway:?}", gateway_file.display());
    let name = format!("btfs ({label})");
    let mut figures =
        measure(&name, &format!("{gateway}/ipfs/{big}"), &format!("{gateway}/ipfs/{small}"), expected, args)?;
    figures.peak_rss_kib = peak_rss_kib(daemon.pid()).context("read the daemon's VmHWM")?;
    Ok(figures)
}

fn ratio(btfs: f64, nginx: f64) -> String {
    if nginx > 0.0 { format!("{:.2}×", btfs / nginx) } else { "–".into() }
}

fn table(columns: &[Figures], args: &Args) -> String {
    let mut header = format!("| {} MiB and 4 KiB files over loopback |", args.size_mib);
    let mut rule = String::from("| --- |");
    for (i, c) in columns.iter().enumerate() {
        header += &format!(" {} |", c.server);
        rule += " --- |";
        if i > 0 {
            header += " btfs/nginx |";
            rule += " --- |";
        }
    }
    let labels = [
        format!("{} MiB download, best of {DOWNLOAD_RUNS} (curl)", args.size_mib),
        format!("time to first byte, best of {DOWNLOAD_RUNS}"),
        format!("4 KiB file, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s", args.duration_secs),
        "peak RSS of the server (VmHWM)".to_string(),
    ];
    // Per column, per row: the value the ratio divides and its text.
    let cells: Vec<[(f64, String); 4]> = columns
        .iter()
        .map(|f| {
            let rss_mib = f.peak_rss_kib as f64 / 1024.0;
            [
                (f.download, format!("{:.0} MB/s", f.download / 1e6)),
                (f.ttfb, format!("{:.2} ms", f.ttfb * 1e3)),
                (f.wrk.requests_per_sec, format!("{:.0} req/s", f.wrk.requests_per_sec)),
                (rss_mib, format!("{rss_mib:.1} MiB")),
            ]
        })
        .collect();
    let mut out = format!("{header}\n{rule}\n");
    for (row, label) in labels.iter().enumerate() {
        out += &format!("| {label} |");
        for (i, column) in cells.iter().enumerate() {
            let (value, text) = &column[row];
            out += &format!(" {text} |");
            if i > 0 {
                out += &format!(" {} |", ratio(*value, cells[0][row].0));
            }
        }
        out.push('\n');
    }
    out
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let size = args.size_mib * 1024 * 1024;
    let work = tempfile::Builder::new().prefix("btfs-gateway-bench-").tempdir()?;
    let www = work.path().join("www");
    fs::create_dir(&www)?;
    let big = www.join("big.bin");
    let small = www.join("small.bin");
    write_chacha20_file(&big, "gateway bench", size)?;
    let small_bytes = chacha20_bytes("gateway bench 4 KiB", SMALL_LEN);
    fs::write(&small, &small_bytes)?;
    let big_sha256 = {
        let mut hasher = Sha256::new();
        std::io::copy(&mut fs::File::open(&big)?, &mut hasher)?;
        hasher.finalize().into()
    };
    let expected = Expected { big_len: size, big_sha256, small: small_bytes };

    let mut columns = Vec::new();
    {
        let nginx = Nginx::start(&www, &work.path().join("nginx"))?;
        let mut figures =
            measure("nginx", &format!("{}/big.bin", nginx.url), &format!("{}/small.bin", nginx.url), &expected, &args)?;
        figures.peak_rss_kib = nginx.peak_rss_kib();
        columns.push(figures);
    }

    // The repo default first; unixfs-v1-2025 too when this btfs offers the flag.
    let mut profiles: Vec<(&str, Vec<&str>)> = vec![("repo default", vec![])];
    let help = Command::new(&args.btfs).args(["add", "--help"]).output().context("run btfs add --help")?;
    if String::from_utf8_lossy(&help.stdout).contains("--cid-profile") {
        profiles.push(("unixfs-v1-2025", vec!["--cid-profile", "unixfs-v1-2025"]));
    }
    let mut cids = String::new();
    let mut failure = None;
    for (label, flags) in &profiles {
        match measure_btfs(label, flags, (&big, &small), &expected, &args, &mut cids) {
            Ok(figures) => columns.push(figures),
            Err(e) => {
                failure = Some(e.context(format!("btfs ({label})")));
                break;
            }
        }
    }

    print!("{}", table(&columns, &args));
    println!();
    print!("{cids}");
    for c in &columns {
        if let Some(errors) = &c.wrk.socket_errors {
            println!("- {}: wrk socket errors: {errors}", c.server);
        }
    }
    println!(
        "- nginx: private config, worker_processes 1, sendfile on, access_log off; downloads with curl to \
         /dev/null (MB = 10^6 bytes), after one verified full read of each file"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/small.bin\n  1 threads and 32 connections\n  \
                    285000 requests in 10.00s, 1.20GB read\n  Socket errors: connect 0, read 0, write 0, timeout 3\n\
                    Requests/sec:  28500.50\nTransfer/sec:      122.00MB\n";
        let r = parse_wrk(text).expect("parses");
        assert!((r.requests_per_sec - 28500.5).abs() < 1e-9);
        assert_eq!(r.socket_errors.as_deref(), Some("connect 0, read 0, write 0, timeout 3"));
        let bad = text.replace("Requests/sec", "  Non-2xx or 3xx responses: 7\nRequests/sec");
        assert!(parse_wrk(&bad).is_err());
        assert!(parse_wrk(&text.replace("285000 requests", "0 requests")).is_err());
    }

    #[test]
    fn table_has_a_ratio_after_each_btfs_column() {
        let figures = |server: &str, scale: f64| Figures {
            server: server.into(),
            download: 1.4e9 * scale,
            ttfb: 0.0005 / scale,
            wrk: WrkResult { requests_per_sec: 28_000.0 * scale, socket_errors: None },
            peak_rss_kib: 10 * 1024,
        };
        let args = Args { size_mib: 1024, duration_secs: 10, btfs: PathBuf::new() };
        let text = table(&[figures("nginx", 1.0), figures("btfs (a)", 0.5), figures("btfs (b)", 0.25)], &args);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines.iter().all(|l| l.matches('|').count() == 7), "{text}");
        assert_eq!(
            lines[2],
            "| 1024 MiB download, best of 3 (curl) | 1400 MB/s | 700 MB/s | 0.50× | 350 MB/s | 0.25× |"
        );
        assert_eq!(lines[5], "| peak RSS of the server (VmHWM) | 10.0 MiB | 10.0 MiB | 1.00× | 10.0 MiB | 1.00× |");
    }
}
