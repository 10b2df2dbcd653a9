//! `key_gen`: how long an action key takes for 0 to 10,000 input files, cold (empty stat cache,
//! page cache warm) and warm (stat cache full), against a naive one-thread walk + read + blake3
//! of the same files; and hashing one 1 GiB input against blake3's `update_rayon` over the same
//! bytes already in memory.
//!
//! Run: `cargo bench --bench key_gen`. Ratios to report: cold/naive and warm/naive at 10,000
//! files, and update_rayon/file at 1 GiB.

#![allow(missing_docs, clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cuenv_actors::key_gen::{KeyEngine, KeyGenSettings, KeyRequest, hash_open_file};

const COUNTS: [usize; 5] = [0, 10, 100, 1_000, 10_000];
const FILE_SIZE: usize = 4096;

/// `count` files of 4 KiB, 100 per directory.
fn make_tree(root: &Path, count: usize) {
    for index in 0..count {
        let dir = root.join(format!("d{:03}", index / 100));
        fs::create_dir_all(&dir).unwrap();
        let byte = (index % 251) as u8;
        let mut content = vec![byte; FILE_SIZE];
        content[..8].copy_from_slice(&(index as u64).to_le_bytes());
        fs::write(dir.join(format!("f{index:05}.txt")), content).unwrap();
    }
}

/// The baseline: one thread, walk, read, blake3 each file, sorted by path.
fn naive(root: &Path) -> Vec<(PathBuf, blake3::Hash)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                out.push((entry.path(), blake3::hash(&bytes)));
            }
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

fn request(root: &Path) -> KeyRequest {
    let mut request = KeyRequest::new(root, "build", "make");
    request.inputs = vec!["**/*.txt".into()];
    request
}

fn bench_inputs(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_gen");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let engine = KeyEngine::new(KeyGenSettings::default()).unwrap();
    for count in COUNTS {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path(), count);
        let request = request(dir.path());
        naive(dir.path()); // Page cache warm.
        group.throughput(Throughput::Elements(count.max(1) as u64));
        group.bench_with_input(BenchmarkId::new("naive", count), &count, |b, _| {
            b.iter(|| naive(dir.path()))
        });
        group.bench_with_input(BenchmarkId::new("cold", count), &count, |b, _| {
            b.iter(|| {
                engine.forget_stat_caches();
                engine.compute(&request).unwrap()
            })
        });
        // Let the files settle past the racy window, then fill the stat cache once.
        std::thread::sleep(Duration::from_millis(1100));
        engine.forget_stat_caches();
        let primed = engine.compute(&request).unwrap();
        assert_eq!(primed.counts.hashed as usize, count);
        let warm = engine.compute(&request).unwrap();
        assert_eq!(warm.counts.reused as usize, count, "stat cache not used");
        group.bench_with_input(BenchmarkId::new("warm", count), &count, |b, _| {
            b.iter(|| engine.compute(&request).unwrap())
        });
    }
    group.finish();
}

fn bench_large_file(c: &mut Criterion) {
    const SIZE: usize = 1 << 30;
    let mut group = c.benchmark_group("key_gen_1gib");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(SIZE as u64));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let buffer: Vec<u8> = (0..SIZE).map(|i| (i % 249) as u8).collect();
    fs::write(&path, &buffer).unwrap();
    let engine = KeyEngine::new(KeyGenSettings::default()).unwrap();
    let expected = blake3::hash(&buffer);
    let file = fs::File::open(&path).unwrap();
    assert_eq!(
        engine.install(|| hash_open_file(&file, SIZE as u64)).unwrap().0,
        *expected.as_bytes()
    );
    group.bench_function("update_rayon_in_memory", |b| {
        b.iter(|| engine.install(|| blake3::Hasher::new().update_rayon(&buffer).finalize()))
    });
    group.bench_function("file_tree_hash", |b| {
        b.iter(|| engine.install(|| hash_open_file(&file, SIZE as u64).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_inputs, bench_large_file);
criterion_main!(benches);
