//! The `btfs` binary: parses arguments and hands them to the library's CLI runner.

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc returns freed multi-megabyte buffers (Bitswap messages, blocks) to the kernel and faults
// fresh zeroed pages in for the next one; mimalloc reuses them. Measured: in-process Bitswap throughput
// went from about 75 to about 200 MB/s (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    tune_memcpy();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = btfs_node::cli::Cli::parse();
    match btfs_node::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The glibc tunable that keeps `memcpy` off `rep movsb` below this many bytes.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const REP_MOVSB_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold=16777216";

/// Re-executes the commands that move block bytes in bulk (`daemon` and `gateway` serve them; `cat`, `get`
/// and `dag export` read them) with glibc's `rep movsb` threshold raised, once.
///
/// RocksDB copies every blob it reads out of its file buffer at an offset set by the record header, so
/// source and destination are misaligned; glibc copies anything over 2 KiB with `rep movsb`, which runs at a
/// fraction of its speed when misaligned on the CPUs measured here. Serving a 1 GiB file of 256 KiB blocks
/// went from about 0.9 to about 1.5 GB/s with the threshold raised, and an offline `cat` of the same file from
/// about 1.0 to about 2.2 GB/s (docs/performance.md). The tunable is only read at process start, hence the
/// re-exec. That costs about 7.5 ms (a `btfs version` took 16 ms instead of 8.5), which is why short commands
/// are left alone. `BTFS_NO_RETUNE=1` turns it off.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn tune_memcpy() {
    use std::os::unix::process::CommandExt;
    const BULK: [&str; 5] = ["daemon", "gateway", "cat", "get", "dag"];
    let bulk = std::env::args_os().skip(1).any(|a| BULK.iter().any(|c| a == *c));
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if !bulk || current.contains("x86_rep_movsb_threshold") || std::env::var_os("BTFS_NO_RETUNE").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let tunables =
        if current.is_empty() { REP_MOVSB_TUNABLE.to_string() } else { format!("{current}:{REP_MOVSB_TUNABLE}") };
    // `exec` only returns on failure, and then the process simply runs untuned.
    let _ = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("GLIBC_TUNABLES", tunables).exec();
}
