//! End-to-end benchmark driver: `btfs add` and `btfs cat` against the IPFS project's JavaScript importer on
//! the same file, in the same run, on this machine. Prints a Markdown table for docs/performance.md.
//!
//! Usage: `cargo run --release -p btfs-tests --bin btfs-bench -- [--size-mib N] [--mem-size-mib N]`
//! (build `btfs` first: `cargo build --release -p btfs-node`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use btfs_tests::{js_dir, write_chacha20_file};

struct Bench {
    bin: PathBuf,
    work: tempfile::TempDir,
}

impl Bench {
    fn repo(&self, name: &str) -> Result<PathBuf> {
        let path = self.work.path().join(name);
        let _ = fs::remove_dir_all(&path);
        let out = Command::new(&self.bin).env("BTFS_PATH", &path).args(["init", "--profile", "test"]).output()?;
        if !out.status.success() {
            bail!("btfs init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(path)
    }

    /// Runs btfs, returning (stdout, seconds, peak RSS in bytes as sampled from /proc).
    fn run(&self, repo: &Path, args: &[&str], stdout_to_null: bool) -> Result<(String, f64, u64)> {
        let mut cmd = Command::new(&self.bin);
        cmd.env("BTFS_PATH", repo).args(args).stderr(Stdio::piped());
        cmd.stdout(if stdout_to_null { Stdio::null() } else { Stdio::piped() });
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let mut out = String::new();
        let mut peak = 0u64;
        let reader = child.stdout.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                buf
            })
        });
        loop {
            peak = peak.max(vm_hwm(pid).unwrap_or(0));
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("btfs {args:?} failed: {err}");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = start.elapsed().as_secs_f64();
        if let Some(r) = reader {
            out = r.join().unwrap_or_default();
        }
        Ok((out, secs, peak))
    }

    /// `btfs cat` into a pipe that this process drains (a real consumer), returning seconds and bytes.
    fn cat_piped(&self, repo: &Path, cid: &str) -> Result<(f64, u64)> {
        let start = Instant::now();
        let mut child =
            Command::new(&self.bin).env("BTFS_PATH", repo).args(["cat", cid]).stdout(Stdio::piped()).spawn()?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        child.wait()?;
        Ok((start.elapsed().as_secs_f64(), total))
    }
}

/// Peak resident set size of a live process, from /proc (Linux).
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn js_import(file: &Path, profile: &str) -> Result<(String, f64)> {
    let out = Command::new("node").arg(js_dir().join("bench-import.mjs")).arg(file).arg(profile).output()?;
    if !out.status.success() {
        bail!("JS importer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["cid"].as_str().unwrap_or_default().to_string(), v["seconds"].as_f64().unwrap_or(f64::NAN)))
}

/// Writes `size` bytes to a file in `dir` and fsyncs it: how fast this disk makes data durable.
fn disk_write_speed(dir: &Path, size: u64) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("disk-probe");
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut f = fs::File::create(&path)?;
    for _ in 0..size / block.len() as u64 {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok(mbps(size, secs))
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let size = arg("--size-mib", 1024) * 1024 * 1024;
    let mem_size = arg("--mem-size-mib", 4096) * 1024 * 1024;
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("btfs");
    if !bin.exists() {
        bail!("{} not found: run `cargo build --release -p btfs-node` first", bin.display());
    }
    let work = tempfile::Builder::new().prefix("btfs-bench-").tempdir_in(std::env::temp_dir())?;
    let bench = Bench { bin, work };
    let file = bench.work.path().join("input.bin");
    write_chacha20_file(&file, "bench", size)?;
    let file_s = file.to_str().context("utf-8 path")?;
    println!("| measurement | result |");
    println!("| --- | --- |");
    let disk = disk_write_speed(bench.work.path(), size)?;
    println!(
        "| this disk: writing {} MiB and fsyncing it (the bound on any durable add) | {disk:.0} MB/s |",
        size >> 20
    );
    for (profile, flag) in [("unixfs-v0-2015", None), ("unixfs-v1-2025", Some("--cid-profile=unixfs-v1-2025"))] {
        // Warm the page cache so both sides read the file from memory.
        let _ = fs::read(&file).map(|b| b.len());
        let (js_cid, js_secs) = js_import(&file, profile)?;
        let repo = bench.repo(&format!("repo-{profile}"))?;
        let mut add_args = vec!["add", "-Q"];
        add_args.extend(flag);
        add_args.push(file_s);
        let (cid, add_secs, add_rss) = bench.run(&repo, &add_args, false)?;
        let cid = cid.trim().to_string();
        if cid != js_cid {
            bail!("CID mismatch under {profile}: btfs {cid}, JS {js_cid}");
        }
        let mut hash_args = vec!["add", "-Q", "--only-hash"];
        hash_args.extend(flag);
        hash_args.push(file_s);
        let (_, hash_secs, _) = bench.run(&repo, &hash_args, false)?;
        // The add wrote its blocks past the page cache (direct I/O), so the first cat reads them from the
        // disk; the second finds them in the page cache.
        let (_, cold_secs, _) = bench.run(&repo, &["cat", &cid], true)?;
        let (_, cat_secs, cat_rss) = bench.run(&repo, &["cat", &cid], true)?;
        let (pipe_secs, piped) = bench.cat_piped(&repo, &cid)?;
        if piped != size {
            bail!("cat returned {piped} bytes, expected {size}");
        }
        let mib = size / (1024 * 1024);
        println!(
            "| {profile}, {mib} MiB: JavaScript importer (in-memory blockstore) | {:.0} MB/s ({js_secs:.2} s) |",
            mbps(size, js_secs)
        );
        println!(
            "| {profile}, {mib} MiB: `btfs add` into the repo | {:.0} MB/s ({add_secs:.2} s), **{:.1}×** the JS importer, peak RSS {} MiB |",
            mbps(size, add_secs),
            js_secs / add_secs,
            add_rss >> 20
        );
        println!(
            "| {profile}, {mib} MiB: `btfs add --only-hash` | {:.0} MB/s ({hash_secs:.2} s) |",
            mbps(size, hash_secs)
        );
        println!(
            "| {profile}, {mib} MiB: `btfs cat > /dev/null`, first read after the add (from the disk) | {:.0} MB/s ({cold_secs:.2} s) |",
            mbps(size, cold_secs)
        );
        println!(
            "| {profile}, {mib} MiB: `btfs cat > /dev/null`, again (from the page cache) | {:.0} MB/s ({cat_secs:.2} s), peak RSS {} MiB |",
            mbps(size, cat_secs),
            cat_rss >> 20
        );
        println!(
            "| {profile}, {mib} MiB: `btfs cat` into a pipe read by another process | {:.0} MB/s ({pipe_secs:.2} s) |",
            mbps(size, pipe_secs)
        );
        println!("| {profile}: CIDs agree | `{cid}` |");
    }
    fs::remove_file(&file)?;
    if mem_size > 0 {
        let big = bench.work.path().join("big.bin");
        write_chacha20_file(&big, "bench-memory", mem_size)?;
        let repo = bench.repo("repo-mem")?;
        let (_, secs, rss) = bench.run(&repo, &["add", "-Q", big.to_str().context("utf-8")?], false)?;
        println!(
            "| `btfs add` of a {} MiB file: peak RSS | {} MiB ({:.0} MB/s) |",
            mem_size >> 20,
            rss >> 20,
            mbps(mem_size, secs)
        );
    }
    Ok(())
}
