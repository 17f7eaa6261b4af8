//! The `btfs` binary: parses arguments and hands them to the library's CLI runner.

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc returns freed multi-megabyte buffers (Bitswap messages, blocks) to the kernel and faults
// fresh zeroed pages in for the next one; mimalloc reuses them. Measured: in-process Bitswap throughput
// went from about 75 to about 200 MB/s (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
