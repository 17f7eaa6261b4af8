//! Network benchmark: 1 GiB from one `btfs daemon` to another over loopback Bitswap, the same from three
//! providers at once, and Helia→Helia on the same file and machine, all in one run. Prints a markdown
//! table for docs/performance.md.
//!
//! Usage: `btfs-net-bench [--size-mib N] [--runs R]` (defaults 1024 and 1), after `cargo build --release`.
//! With several runs, the one- and three-provider transfers alternate, each into a fresh receiver and with
//! the providers' files dropped from the page cache first, and the medians follow the table.

use std::fs::File;
use std::path::Path;
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

/// Drops every file under `dir` from the page cache (`dd iflag=nocache count=0` asks the kernel through
/// `posix_fadvise`), so that each run's providers read cold, as a node reads data it has not served lately.
fn drop_cached(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            drop_cached(&path)?;
            continue;
        }
        let status = Command::new("dd")
            .arg(format!("if={}", path.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .context("run dd")?;
        if !status.success() {
            bail!("dd could not drop {} from the page cache", path.display());
        }
    }
    Ok(())
}

/// A fresh receiver connected to `providers` pins `cid`; returns its speed in MB/s, after printing the
/// table row and the CPU line. The receiver is returned for questions about the transfer.
fn transfer(label: &str, providers: &[&Daemon], cid: &str, mb: f64) -> Result<(f64, String, Daemon)> {
    for p in providers {
        drop_cached(p.repo.path())?;
    }
    // A Kademlia protocol of its own: otherwise the DHT leads the receiver to every provider (they meet
    // through the three-provider receivers), and a "one provider" run after the first would use three.
    let receiver = Daemon::start(&[("Routing.KadProtocol", "\"/btfs-net-bench/kad/1.0.0\"")]);
    for p in providers {
        receiver.run_ok(&["swarm", "connect", p.tcp_addr()]);
    }
    let (secs, cpu) = cpu_during(&receiver, providers, || timed_cat(&receiver, cid));
    let secs = secs?;
    let peers = receiver.run_ok(&["swarm", "peers"]).lines().count();
    if peers > providers.len() {
        bail!("the {label} receiver was connected to {peers} peers, not {}", providers.len());
    }
    let rss = peak_rss_kib(receiver.pid()).unwrap_or(0) / 1024;
    let speed = mb / secs;
    println!("| btfs → btfs, {label} | {secs:.2} s | {speed:.0} MB/s | {rss} MiB |");
    Ok((speed, cpu, receiver))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let size = arg("--size-mib", 1024) * 1024 * 1024;
    let runs = arg("--runs", 1).max(1);
    let work = tempfile::Builder::new().prefix("btfs-net-bench-").tempdir()?;
    let file = work.path().join("input.bin");
    write_chacha20_file(&file, "net bench", size)?;
    let file_s = file.to_str().context("utf-8 path")?;
    let mb = size as f64 / 1e6;
    println!("| {} MiB over loopback | time | throughput | peak RSS of the receiving node |", size >> 20);
    println!("| --- | --- | --- | --- |");

    // Three providers with the file; the first also serves the one-provider runs.
    let providers: Vec<Daemon> = (0..3).map(|_| Daemon::start(&[])).collect();
    let mut cid = String::new();
    for p in &providers {
        cid = p.run_ok(&["add", "-Q", file_s]).trim().to_string();
    }
    let all: Vec<&Daemon> = providers.iter().collect();

    let (mut ones, mut ratios) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let tag = if runs > 1 { format!(" (run {run})") } else { String::new() };
        // Each receiver is stopped once done: it holds the file and could serve as another provider.
        let (one_speed, cpu_one, one) = transfer(&format!("1 provider{tag}"), &all[..1], &cid, mb)?;
        drop(one);
        let (three_speed, cpu_three, three) = transfer(&format!("3 providers at once{tag}"), &all, &cid, mb)?;
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
        ones.push(one_speed);
        ratios.push(three_speed / one_speed);
    }
    drop(providers);

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
    let (one, ratio) = (median(&ones), median(&ratios));
    println!("btfs/Helia: {:.1}×; three providers / one: {ratio:.2}×", one / helia_speed);
    if runs > 1 {
        let list = |v: &[f64], digits: usize| v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ");
        println!(
            "{runs} runs: one provider median {one:.0} MB/s, 400 or more in {} ({} MB/s); three / one median \
             {ratio:.2}, 1.0 or more in {} ({})",
            ones.iter().filter(|&&x| x >= 400.0).count(),
            list(&ones, 0),
            ratios.iter().filter(|&&x| x >= 1.0).count(),
            list(&ratios, 2),
        );
    }
    Ok(())
}
