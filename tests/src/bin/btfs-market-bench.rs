//! Storage-market benchmark: one renter and N hosts (`btfs daemon` processes on 127.0.0.1, `none` settlement),
//! an upload of a file of `--size-mib` at k data + m parity shards (10 + 20 by default, go-btfs's) until every
//! shard is held by a host, then a download from shards. Reports the encode-and-place time, the download time,
//! and the renter's peak RSS (VmHWM) over the whole upload. Prints a markdown table for docs/performance.md.
//! Exits non-zero on errors (an upload that fails, a download with wrong bytes), never on speed.
//!
//! Usage: `btfs-market-bench [--size-mib N] [--hosts N] [--data K] [--parity M] [--no-download]` after
//! `cargo build --release -p btfs-node -p btfs-tests --bins`. Only 127.0.0.1 is used. Disk: the renter stores
//! (k+m)/k times the file while placing; the hosts store the same again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use btfs_tests::daemon::{Daemon, peak_rss_kib};
use btfs_tests::write_chacha20_file;
use serde_json::Value;

struct Args {
    size_mib: u64,
    hosts: usize,
    data: u32,
    parity: u32,
    download: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { size_mib: 1024, hosts: 30, data: 10, parity: 20, download: true };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => a.size_mib = value()?.parse().context("--size-mib takes a whole number")?,
            "--hosts" => a.hosts = value()?.parse().context("--hosts takes a whole number")?,
            "--data" => a.data = value()?.parse().context("--data takes a whole number")?,
            "--parity" => a.parity = value()?.parse().context("--parity takes a whole number")?,
            "--no-download" => a.download = false,
            "-h" | "--help" => {
                println!("usage: btfs-market-bench [--size-mib N] [--hosts N] [--data K] [--parity M] [--no-download]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(a.hosts >= (a.data + a.parity) as usize, "{} shards need at least as many hosts", a.data + a.parity);
    Ok(a)
}

fn status(renter: &Daemon, id: &str) -> Result<Value> {
    let out = renter.run_ok(&["storage", "upload", "status", id]);
    serde_json::from_str(&out).with_context(|| format!("status is not JSON: {out}"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let work = tempfile::tempdir()?;
    let boot = Daemon::start(&[]);
    let bootstrap = format!("[\"{}\"]", boot.tcp_addr());
    let host_config: Vec<(&str, &str)> = vec![
        ("Bootstrap", &bootstrap),
        ("Storage.Host.Enabled", "true"),
        ("Storage.Host.MaxShardSize", "\"64GB\""),
        ("Storage.Host.MaxStorage", "\"64GB\""),
    ];
    eprintln!("starting {} hosts", args.hosts);
    let hosts: Vec<Daemon> = (0..args.hosts).map(|_| Daemon::start(&host_config)).collect();
    let renter = Daemon::start(&[("Bootstrap", &bootstrap)]);
    let src = work.path().join("file");
    write_chacha20_file(&src, "market bench", args.size_mib * 1024 * 1024)?;
    let cid = renter.run_ok(&["add", "-Q", "--cid-version=1", src.to_str().context("utf-8 path")?]).trim().to_string();
    let rss_after_add = peak_rss_kib(renter.pid()).unwrap_or(0);

    let started = Instant::now();
    let (k, m) = (args.data.to_string(), args.parity.to_string());
    let id = renter
        .run_ok(&["storage", "upload", &cid, "--data-shards", &k, "--parity-shards", &m, "--storage-length", "30d"])
        .trim()
        .to_string();
    let mut encoded_at = None;
    loop {
        let s = status(&renter, &id)?;
        if encoded_at.is_none() && s["State"] != "encoding" {
            encoded_at = Some(started.elapsed());
        }
        match s["State"].as_str() {
            Some("active") => break,
            Some("failed") => bail!("upload failed: {}", s["Error"]),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    let upload_time = started.elapsed();
    let rss = peak_rss_kib(renter.pid()).unwrap_or(0);

    let mut download_time = None;
    if args.download {
        // Only the manifest stays on the renter: the download fetches k shards from the hosts.
        renter.run_ok(&["pin", "rm", &cid]);
        renter.run_ok(&["repo", "gc"]);
        let out = work.path().join("rebuilt");
        let started = Instant::now();
        renter.run_ok(&["storage", "download", &cid, "-o", out.to_str().context("utf-8 path")?]);
        download_time = Some(started.elapsed());
        ensure!(std::fs::read(&out)? == std::fs::read(&src)?, "the rebuilt file differs");
    }
    drop(hosts);

    let mib = args.size_mib as f64;
    let rate = |d: Duration| mib * 1.048_576 / d.as_secs_f64();
    println!("| file | shards | hosts | encode | encode + place (all held) | download (k shards) | renter peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} MiB | {}+{} | {} | {:.1} s | {:.1} s ({:.0} MB/s of file) | {} | {} MiB (after add: {} MiB) |",
        args.size_mib,
        args.data,
        args.parity,
        args.hosts,
        encoded_at.unwrap_or_default().as_secs_f64(),
        upload_time.as_secs_f64(),
        rate(upload_time),
        download_time.map_or("-".into(), |d| format!("{:.1} s ({:.0} MB/s)", d.as_secs_f64(), rate(d))),
        rss / 1024,
        rss_after_add / 1024,
    );
    Ok(())
}
