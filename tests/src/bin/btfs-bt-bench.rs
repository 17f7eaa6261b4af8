//! BitTorrent import benchmark: one libtorrent seeder of a generated file on 127.0.0.1, and three clients
//! fetching it in turn, in the same run: `lt.py download` (libtorrent), `aria2.py` (aria2c), and
//! `btfs bittorrent import` (librqbit, then UnixFS and the store: the time includes the CIDs). Each client
//! starts from nothing; runs alternate so that machine noise spreads over all three. Prints a Markdown table
//! for docs/performance.md.
//!
//! Usage: `cargo run --release -p btfs-tests --bin btfs-bt-bench -- [--size-mib 1024] [--piece-kib 1024]
//! [--runs 2]` (build `btfs` first: `cargo build --release --bins`).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use btfs_tests::bt::{self, Seeder, Tracker};
use btfs_tests::daemon::{cpu_secs, reaped_children_cpu_secs};
use btfs_tests::{TestRepo, table, write_chacha20_file};

fn arg(name: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("missing value")?.parse().with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

/// Peak RSS of a process so far, from /proc (bytes).
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// `btfs bittorrent import` of `torrent` into a fresh repo: (seconds, peak RSS, root CID).
fn btfs_import(torrent: &Path) -> Result<(f64, u64, String)> {
    let repo = TestRepo::init();
    let started = Instant::now();
    let mut child = repo
        .command()
        .args(["bittorrent", "import", torrent.to_str().context("utf-8")?, "--timeout", "120", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait()?.is_none() {
        peak = peak.max(vm_hwm(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("btfs import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Quiet unless RUST_LOG asks btfs for its phase timings.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok((secs, peak, String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// Idle and total time of all CPUs so far, in clock ticks (the `cpu` line of `/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are idle.
    Some((fields.get(3)? + fields.get(4)?, fields.iter().take(8).sum()))
}

/// What one client used while it ran.
struct Usage {
    /// CPU seconds of the client's processes, and of the seeder meanwhile.
    client: f64,
    seeder: f64,
    /// The share of the machine's CPU time that was idle.
    idle: f64,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s + {:.2} s, {:.0}% idle", self.client, self.seeder, self.idle * 100.0)
    }
}

/// Runs one client (a child process, waited for inside `f`) and returns what `f` returns with what the
/// client and the seeder used meanwhile.
fn with_cpu<T>(seeder: &Seeder, f: impl FnOnce() -> Result<T>) -> Result<(T, Usage)> {
    let seeder_cpu = || seeder.pid().and_then(cpu_secs).map(|(t, _)| t).unwrap_or(f64::NAN);
    let (client0, seeder0) = (reaped_children_cpu_secs().unwrap_or(f64::NAN), seeder_cpu());
    let machine0 = machine_ticks().unwrap_or_default();
    let out = f()?;
    let (client1, seeder1) = (reaped_children_cpu_secs().unwrap_or(f64::NAN), seeder_cpu());
    let machine1 = machine_ticks().unwrap_or_default();
    let idle = (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1).max(1) as f64;
    Ok((out, Usage { client: client1 - client0, seeder: seeder1 - seeder0, idle }))
}

fn main() -> Result<()> {
    let size = arg("--size-mib", 1024)? * 1024 * 1024;
    let piece_kib = arg("--piece-kib", 1024)? as u32;
    let runs = arg("--runs", 2)?;
    let work = tempfile::Builder::new().prefix("btfs-bt-bench-").tempdir_in("/var/tmp")?;
    let file = work.path().join("payload.bin");
    write_chacha20_file(&file, "bt-bench", size)?;
    let tracker = Tracker::start();
    let torrent = work.path().join("payload.torrent");
    let made = bt::lt_make(&file, &torrent, piece_kib, false, &[tracker.http_url()]);
    tracker.allow_made(&made);
    let seeder = Seeder::start(&torrent, work.path(), None);
    let reference = TestRepo::init();
    let expected = reference.run_ok(&["add", "-Q", "--only-hash", file.to_str().context("utf-8")?]).trim().to_string();
    let mib = size as f64 / (1024.0 * 1024.0);

    let mut rows = Vec::new();
    for run in 1..=runs {
        let dir = work.path().join(format!("lt-{run}"));
        let source = torrent.to_str().context("utf-8")?;
        let started = Instant::now();
        let (lt, lt_usage) = with_cpu(&seeder, || Ok(bt::lt_download(&dir, source, &[], Duration::from_secs(300))))?;
        let lt_wall = started.elapsed().as_secs_f64();
        let _ = fs::remove_dir_all(&dir);
        let lt_secs = lt["seconds"].as_f64().unwrap_or(f64::NAN);

        let dir = work.path().join(format!("aria2-{run}"));
        let aria = bt::aria2_download(&dir, source, Duration::from_secs(300));
        let _ = fs::remove_dir_all(&dir);
        let aria_secs = aria["seconds"].as_f64().unwrap_or(f64::NAN);

        let ((btfs_secs, peak, root), btfs_usage) = with_cpu(&seeder, || btfs_import(&torrent))?;
        if root != expected {
            bail!("the import's root {root} is not `btfs add`'s {expected}");
        }
        let ratio = lt_secs / btfs_secs;
        rows.push([
            run.to_string(),
            format!("{:.0} MiB/s ({lt_secs:.2} s)", mib / lt_secs),
            format!("{:.0} MiB/s ({aria_secs:.2} s)", mib / aria_secs),
            format!("{:.0} MiB/s ({btfs_secs:.2} s)", mib / btfs_secs),
            format!("{ratio:.2}x"),
            format!("{} MiB", peak / (1024 * 1024)),
            format!("{lt_wall:.2} s"),
            lt_usage.to_string(),
            btfs_usage.to_string(),
        ]);
        eprintln!(
            "run {run}: libtorrent {lt_secs:.2} s (process {lt_wall:.2} s), aria2 {aria_secs:.2} s, btfs import \
             {btfs_secs:.2} s"
        );
    }
    println!(
        "{} MiB file, {} KiB pieces, one libtorrent seeder over TCP on 127.0.0.1. libtorrent: from adding the \
         torrent to its last piece, as lt.py times it (its whole process, Python and session start and shutdown \
         included, under \"libtorrent process\"); aria2 and btfs: the process from start to exit. CPU: user + \
         system seconds of the client's processes and of the seeder during that client's run, and the share of \
         the two cores left idle meanwhile",
        size / (1024 * 1024),
        piece_kib
    );
    println!();
    print!(
        "{}",
        table(
            [
                "run",
                "libtorrent",
                "aria2",
                "btfs import (CIDs included)",
                "btfs / libtorrent",
                "btfs peak RSS",
                "libtorrent process",
                "CPU: libtorrent + seeder",
                "CPU: btfs + seeder"
            ],
            &rows
        )
    );
    Ok(())
}
