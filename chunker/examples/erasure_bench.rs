//! Erasure-coding throughput, measured in one run on one input: the raw `reed-solomon-erasure` encoder (the
//! reference), the shard hash (BLAKE3) over every piece alone, and our full `ShardEncoder` (parity, raw leaves,
//! the 30 shard trees, every block hashed) on one thread and on `--threads` threads (whole stripes per thread;
//! default: the available cores). Figures are MB/s of input (10^6 bytes per second). The reference and the
//! threaded encoder run back to back in each of `--rounds` rounds (default 3; input 1 GiB by default), and the
//! ratio is taken per round. The encoder's erasure part is the same `encode_sep` call as (a); what it adds is
//! (d), the hashing, and the piece buffers; since the GFNI kernel its parity is (f), the same bytes as (a)
//! computed faster where the CPU has GFNI and AVX-512, and (c) is the encoder on the codec's own parity.
//!
//! ```sh
//! cargo run --release -p btfs-chunker --example erasure_bench -- [--size-mib N] [--threads N] [--rounds N]
//! ```
//!
//! The input is pseudo-random bytes (xorshift) made in-process before timing: a 64 MiB pool fed in 1 MiB
//! writes, cycling, so generation never counts.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use btfs_chunker::Block;
use btfs_chunker::erasure::{ErasureParams, Kernel, ParityCoder, SHARD_FILE, ShardEncoder};
use reed_solomon_erasure::galois_8::ReedSolomon;

// The allocator of the `btfs` binary, whose renter runs this encoder: the encoder allocates a fresh buffer for
// every piece, and how soon freed ones come back matters as much as the codec.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WRITE: usize = 1 << 20;
const POOL: usize = 64 << 20;

fn pool() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(POOL);
    while out.len() < POOL {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The input as 1 MiB writes: `size` bytes, cycling through the pool.
fn writes(pool: &[u8], size: usize) -> impl Iterator<Item = &[u8]> {
    (0..size.div_ceil(WRITE)).map(move |i| {
        let at = (i * WRITE) % POOL;
        let len = WRITE.min(size - i * WRITE);
        &pool[at..at + len]
    })
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

/// (a) The reference: stripes of k pieces filled from the writes, `encode_sep` into m parity pieces.
fn raw_reed_solomon(p: ErasureParams, pool: &[u8], size: usize) -> anyhow::Result<Duration> {
    let rs = ReedSolomon::new(p.data_shards, p.parity_shards)?;
    let mut data: Vec<Vec<u8>> = (0..p.data_shards).map(|_| Vec::with_capacity(p.piece_size)).collect();
    let mut parity = vec![vec![0u8; p.piece_size]; p.parity_shards];
    let mut filling = 0;
    let start = Instant::now();
    for mut w in writes(pool, size) {
        while !w.is_empty() {
            let buf = &mut data[filling];
            let take = (p.piece_size - buf.len()).min(w.len());
            buf.extend_from_slice(&w[..take]);
            w = &w[take..];
            if buf.len() == p.piece_size {
                filling += 1;
                if filling == p.data_shards {
                    rs.encode_sep(&data, &mut parity)?;
                    data.iter_mut().for_each(Vec::clear);
                    filling = 0;
                }
            }
        }
    }
    if filling > 0 || !data[0].is_empty() {
        data.iter_mut().for_each(|d| d.resize(p.piece_size, 0));
        rs.encode_sep(&data, &mut parity)?;
    }
    std::hint::black_box(&parity);
    Ok(start.elapsed())
}

/// (f) Our parity kernel alone, on the same stripes as (a): what replaces `encode_sep` inside the encoder.
fn parity_only(p: ErasureParams, pool: &[u8], size: usize) -> anyhow::Result<Duration> {
    let coder = ParityCoder::new(p)?;
    let mut parity = vec![vec![0u8; p.piece_size]; p.parity_shards];
    let stripes = size.div_ceil(p.stripe_size());
    let start = Instant::now();
    for i in 0..stripes {
        let data: Vec<&[u8]> = (0..p.data_shards)
            .map(|j| {
                let at = ((i * p.data_shards + j) * p.piece_size) % (POOL - p.piece_size);
                &pool[at..at + p.piece_size]
            })
            .collect();
        coder.encode(&data, &mut parity)?;
    }
    std::hint::black_box(&parity);
    Ok(start.elapsed())
}

/// The shard hash (BLAKE3) of `k + m` pieces per stripe, the hashing our encoder must do for the leaves alone.
fn hash_only(p: ErasureParams, pool: &[u8], size: usize) -> Duration {
    let pieces = size.div_ceil(p.stripe_size()) * p.total_shards();
    let start = Instant::now();
    for i in 0..pieces {
        let at = (i * p.piece_size) % (POOL - p.piece_size);
        std::hint::black_box(SHARD_FILE.cids.hash.digest(&pool[at..at + p.piece_size]));
    }
    start.elapsed()
}

/// (b) Our encoder, every block built and hashed, then dropped.
fn shard_encoder(
    p: ErasureParams,
    pool: &[u8],
    size: usize,
    threads: NonZeroUsize,
    kernel: Kernel,
) -> anyhow::Result<(Duration, u64, usize)> {
    let mut bytes = 0u64;
    let mut blocks = 0usize;
    let mut emit = |b: Block| {
        bytes += b.data.len() as u64;
        blocks += 1;
    };
    let start = Instant::now();
    let mut enc = ShardEncoder::with_kernel(p, kernel)?.with_threads(threads);
    for w in writes(pool, size) {
        enc.push(w, &mut emit)?;
    }
    let shards = enc.finish(&mut emit)?;
    let t = start.elapsed();
    std::hint::black_box(shards);
    Ok((t, bytes, blocks))
}

/// The number after `--name`.
fn value<T: std::str::FromStr>(arg: Option<String>, name: &str) -> anyhow::Result<T> {
    arg.and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("{name} N"))
}

fn main() -> anyhow::Result<()> {
    let mut size_mib = 1024usize;
    let mut threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let mut rounds = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size-mib" => size_mib = value(args.next(), "--size-mib")?,
            "--threads" => threads = value(args.next(), "--threads")?,
            "--rounds" => rounds = value(args.next(), "--rounds")?,
            other => anyhow::bail!("unknown argument {other:?} (expected --size-mib N, --threads N, --rounds N)"),
        }
    }
    anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
    let size = size_mib << 20;
    let p = ErasureParams::default();
    eprintln!(
        "generating a {} MiB pool; input {size_mib} MiB in 1 MiB writes; {}+{} shards, {} KiB pieces",
        POOL >> 20,
        p.data_shards,
        p.parity_shards,
        p.piece_size >> 10
    );
    let pool = pool();
    let line = |name: &str, t: Duration| {
        println!("{name:<46}: {:8.1} MB/s of input ({:.2} s)", mbps(size, t), t.as_secs_f64());
    };
    println!(
        "input: {size_mib} MiB, {}+{} shards of {} KiB pieces",
        p.data_shards,
        p.parity_shards,
        p.piece_size >> 10
    );
    let kernel = Kernel::detect();
    println!("parity kernel: {}", kernel.name());
    let sha = hash_only(p, &pool, size);
    line(&format!("(d) {} of the {} pieces alone", SHARD_FILE.cids.hash.name(), p.total_shards()), sha);
    line(&format!("(f) parity alone, {}", kernel.name()), parity_only(p, &pool, size)?);
    let (ours, out_bytes, blocks) = shard_encoder(p, &pool, size, NonZeroUsize::MIN, kernel)?;
    line("(b) ShardEncoder, full, 1 thread", ours);
    println!("    ({blocks} blocks, {:.1} MB out per encoder run)", out_bytes as f64 / 1e6);
    // The reference and our encoder on all threads, back to back in each round: this machine's speed drifts
    // over minutes, so a ratio is only fair between neighbours. (c) is the same encoder with the codec's own
    // parity, as it was before the GFNI kernel: the kernel's share of (e).
    let mut ratios = Vec::with_capacity(rounds);
    let mut codec_ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let raw = raw_reed_solomon(p, &pool, size)?;
        let (par, _, _) = shard_encoder(p, &pool, size, threads, kernel)?;
        let (codec, _, _) = shard_encoder(p, &pool, size, threads, Kernel::Codec)?;
        line(&format!("round {round}: (a) reed-solomon-erasure encode_sep alone"), raw);
        line(&format!("round {round}: (e) ShardEncoder, full, {threads} threads"), par);
        line(&format!("round {round}: (c) (e) with the codec's parity"), codec);
        let ratio = raw.as_secs_f64() / par.as_secs_f64();
        let codec_ratio = raw.as_secs_f64() / codec.as_secs_f64();
        println!(
            "round {round}: (e)/(a) = {ratio:.2}; (c)/(a) = {codec_ratio:.2}; (b)/(a) = {:.2}",
            raw.as_secs_f64() / ours.as_secs_f64()
        );
        ratios.push(ratio);
        codec_ratios.push(codec_ratio);
    }
    for (name, ratios) in [("(e)/(a)", &mut ratios), ("(c)/(a)", &mut codec_ratios)] {
        ratios.sort_by(f64::total_cmp);
        println!(
            "{name} over {rounds} rounds: min {:.2}, median {:.2}, max {:.2}",
            ratios[0],
            ratios[rounds / 2],
            ratios[rounds - 1]
        );
    }
    Ok(())
}
