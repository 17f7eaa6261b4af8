//! Throughput of the pure content model: chunk + encode + hash + lay out, for both IPIP-499 profiles, over
//! the edge-case sizes around chunk and link boundaries. `cargo bench -p btfs-chunker`.

use btfs_chunker::chunk::import_bytes;
use btfs_chunker::import::{Options, Profile};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CHUNK: usize = 256 * 1024;
const SIZES: &[usize] = &[CHUNK - 1, CHUNK + 1, CHUNK * 174, CHUNK * 174 + 1, 64 << 20];

fn bench_import(c: &mut Criterion) {
    let data: Vec<u8> = (0..(64usize << 20) + CHUNK * 2).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut group = c.benchmark_group("import_bytes");
    group.sample_size(10);
    for (name, profile) in [("v0-2015", Profile::UnixfsV0_2015), ("v1-2025", Profile::UnixfsV1_2025)] {
        let params = Options { profile: Some(profile), ..Default::default() }.resolve().expect("valid profile");
        for &size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| import_bytes(&params, &data[..size]).0)
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_import);
criterion_main!(benches);
