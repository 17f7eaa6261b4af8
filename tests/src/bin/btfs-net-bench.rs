//! Network benchmark: 1 GiB from one `btfs daemon` to another over loopback Bitswap, the same from three
//! providers at once, and Helia→Helia on the same file and machine, all in one run. Prints a markdown
//! table for docs/performance.md.
//!
//! Usage: `btfs-net-bench [--size-mib N]` (default 1024), after `cargo build --release`.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use btfs_tests::daemon::{Daemon, cpu_secs, peak_rss_kib};
use btfs_tests::{js_dir, write_chacha20_file};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `btfs pin add` on `fetcher` (the whole DAG fetched into its store, flushed, pinned); returns seconds.
fn timed_cat(fetcher: &Daemon, cid: &str) -> Result<f64> {
    let start = Instant::now();
    let status = fetcher.repo.command().args(["pin", "add", cid]).stdout(File::create("/dev/null")?).status()?;
    if !status.success() {
        bail!("btfs pin add {cid} failed");
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Per-thread CPU seconds (threads of one name summed) of `pids` together.
fn threads_of(pids: &[u32]) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = Vec::new();
    for (name, secs) in pids.iter().filter_map(|&pid| cpu_secs(pid)).flat_map(|(_, threads)| threads) {
        match all.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += secs,
            None => all.push((name, secs)),
        }
    }
    all
}

/// The busiest threads' CPU seconds between two snapshots, as "name seconds, ...".
fn split(before: &[(String, f64)], after: Vec<(String, f64)>) -> String {
    let mut threads: Vec<(String, f64)> = after
        .into_iter()
        .map(|(name, secs)| {
            let was = before.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s);
            (name, secs - was)
        })
        .filter(|(_, secs)| *secs >= 0.05)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads.iter().take(5).map(|(n, s)| format!("{n} {s:.2}")).collect::<Vec<_>>().join(", ")
}

/// CPU seconds of `receiver` and of `providers` together, each with its per-thread split, over `f`.
fn cpu_during<T>(receiver: &Daemon, providers: &[&Daemon], f: impl FnOnce() -> T) -> (T, String) {
    let provider_pids: Vec<u32> = providers.iter().map(|d| d.pid()).collect();
    let snapshot = || {
        let r = cpu_secs(receiver.pid()).map_or(0.0, |(t, _)| t);
        let p: f64 = provider_pids.iter().filter_map(|&pid| cpu_secs(pid)).map(|(t, _)| t).sum();
        (r, p, threads_of(&[receiver.pid()]), threads_of(&provider_pids))
    };
    let (r0, p0, rt0, pt0) = snapshot();
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed().as_secs_f64();
    let (r1, p1, rt1, pt1) = snapshot();
    let line = format!(
        "CPU over {wall:.2} s: receiver {:.2} s ({}), providers {:.2} s ({}); {:.0}% of the 2 cores",
        r1 - r0,
        split(&rt0, rt1),
        p1 - p0,
        split(&pt0, pt1),
        (r1 - r0 + p1 - p0) / wall / 2.0 * 100.0
    );
    (out, line)
}

fn main() -> Result<()> {
    let size = arg("--size-mib", 1024) * 1024 * 1024;
    let work = tempfile::Builder::new().prefix("btfs-net-bench-").tempdir()?;
    let file = work.path().join("input.bin");
    write_chacha20_file(&file, "net bench", size)?;
    let file_s = file.to_str().context("utf-8 path")?;
    let mb = size as f64 / 1e6;
    println!("| {} MiB over loopback | time | throughput | peak RSS of the receiving node |", size >> 20);
    println!("| --- | --- | --- | --- |");

    // Three providers with the file; the first also serves the one-provider run.
    let providers: Vec<Daemon> = (0..3).map(|_| Daemon::start(&[])).collect();
    let mut cid = String::new();
    for p in &providers {
        cid = p.run_ok(&["add", "-Q", file_s]).trim().to_string();
    }

    let one = Daemon::start(&[]);
    one.run_ok(&["swarm", "connect", providers[0].tcp_addr()]);
    let (secs, cpu_one) = cpu_during(&one, &[&providers[0]], || timed_cat(&one, &cid));
    let secs = secs?;
    let rss = peak_rss_kib(one.pid()).unwrap_or(0) / 1024;
    let one_speed = mb / secs;
    println!("| btfs → btfs, 1 provider | {secs:.2} s | {one_speed:.0} MB/s | {rss} MiB |");

    // The first receiver now holds the file too: stopped, so that it cannot become a fourth provider.
    drop(one);
    let three = Daemon::start(&[]);
    for p in &providers {
        three.run_ok(&["swarm", "connect", p.tcp_addr()]);
    }
    let all: Vec<&Daemon> = providers.iter().collect();
    let (secs, cpu_three) = cpu_during(&three, &all, || timed_cat(&three, &cid));
    let secs = secs?;
    let rss = peak_rss_kib(three.pid()).unwrap_or(0) / 1024;
    let three_speed = mb / secs;
    println!("| btfs → btfs, 3 providers at once | {secs:.2} s | {three_speed:.0} MB/s | {rss} MiB |");
    println!("(1 provider: {cpu_one})");
    println!("(3 providers: {cpu_three})");
    // What the receiver got twice: wants sent to more than one provider cost both ends CPU for nothing.
    let stat: serde_json::Value = serde_json::from_str(&three.run_ok(&["bitswap", "stat", "--enc", "json"]))?;
    let count = |k: &str| stat[k].as_u64().unwrap_or(0);
    println!(
        "(3 providers: {} blocks received, {} of them duplicates, {:.1} MB of duplicate data)",
        count("BlocksReceived"),
        count("DupBlksReceived"),
        count("DupDataReceived") as f64 / 1e6
    );
    // How the three providers shared the work: the receiver's ledger with each.
    let shares: Vec<String> = providers
        .iter()
        .map(|p| {
            let peer = p.tcp_addr().rsplit('/').next().unwrap_or_default();
            let url = format!("{}/api/v0/bitswap/ledger?arg={peer}", three.api_url());
            let ledger: serde_json::Value = ureq::post(&url).send_empty().ok()?.body_mut().read_json().ok()?;
            Some(format!("{:.0} MB", ledger["Recv"].as_f64()? / 1e6))
        })
        .map(|share| share.unwrap_or_else(|| "?".into()))
        .collect();
    println!("(3 providers: received from each: {})", shares.join(", "));
    drop((three, providers));

    let out = Command::new("node")
        .arg(js_dir().join("helia-pair-bench.mjs"))
        .arg(&file)
        .arg("unixfs-v0-2015")
        .stderr(Stdio::inherit())
        .output()
        .context("run node tests/js/helia-pair-bench.mjs")?;
    if !out.status.success() {
        bail!("helia-pair-bench failed");
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let helia_ms = report["ms"].as_f64().context("ms")?;
    let helia_speed = mb / (helia_ms / 1000.0);
    println!(
        "| Helia → Helia (memory blockstore), 1 provider | {:.2} s | {helia_speed:.0} MB/s | |",
        helia_ms / 1000.0
    );
    println!();
    println!("btfs/Helia: {:.1}×; three providers / one: {:.2}×", one_speed / helia_speed, three_speed / one_speed);
    Ok(())
}
