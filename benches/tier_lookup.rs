//! `tier_lookup`: what a cache hit and a cache store cost in each tier, against the floor the
//! machine sets.
//!
//! - Memory hit: `MemoryTier::get` of a present entry on a current-thread runtime, 1000 gets per
//!   iteration (the figure per get is the iteration time / 1000).
//! - Disk hit: `get_record` plus reading the logs, for a small result (1 KiB stdout, three 4 KiB
//!   outputs) and for a result with one 100 MiB output (the record read; and, separately, a full
//!   `restore_outputs` of the 100 MiB file). Page cache warm.
//! - Store: a small result (three fresh blobs and a record), and one 100 MiB output (`put_file`
//!   plus the record), with `fsync` off and on; the baseline is `std::fs::copy` of the same file
//!   into the same directory (and the copy plus `sync_all`, for the fsync case).
//! - Store many: `store_outputs` of 500 small output files with `fsync` on (how a task that
//!   writes a directory of small files is stored), against `put_file` of each, one after the
//!   other. Between iterations the store's blobs are moved aside, not deleted (see
//!   `scripts/trash` for why).
//!
//! Run: `cargo bench --bench tier_lookup`. Targets on a 2-core machine: memory hit <= 2 us, small
//! disk hit <= 150 us, storing a 100 MiB output <= 2x `std::fs::copy`.

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use cuenv_actors::Digest;
use cuenv_actors::disk::{CapturedOutputs, DiskSettings, DiskStore, EvictionPolicy, RecordLookup};
use cuenv_actors::key_gen::{InputPart, KEY_FORMAT_VERSION, KeyManifest, hash_pool};
use cuenv_actors::memory::{MemoryEntry, MemoryHandle, MemoryTier};
use cuenv_actors::result::{ActionResult, LogRef, OutputFile};

const LARGE: usize = 100 << 20;
const GETS_PER_ITERATION: u64 = 1000;

fn open(cache_dir: &Path, fsync: bool) -> DiskStore {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = DiskSettings {
        cache_dir: cache_dir.to_owned(),
        max_size: u64::MAX,
        policy: EvictionPolicy::Lru,
        fsync,
        // The configuration's default: a 1 KiB stdout stays inline.
        inline_threshold: 4096,
    };
    DiskStore::open(settings, hash_pool(threads).unwrap()).unwrap()
}

fn manifest(task: &str) -> KeyManifest {
    KeyManifest {
        format: KEY_FORMAT_VERSION,
        task: task.to_owned(),
        command: "bench".to_owned(),
        args: Vec::new(),
        working_dir: String::new(),
        env: BTreeMap::new(),
        inputs: InputPart::CacheKey(task.to_owned()),
        outputs: vec!["out".to_owned()],
        custom: BTreeMap::new(),
        dependencies: BTreeMap::new(),
        cuenv_version: "bench".to_owned(),
        platform: "bench".to_owned(),
    }
}

fn result(task: &str, stdout: LogRef, output_files: Vec<OutputFile>) -> ActionResult {
    ActionResult {
        exit_code: 0,
        stdout,
        stderr: LogRef::EMPTY,
        output_files,
        output_dirs: Vec::new(),
        output_symlinks: Vec::new(),
        executed_at_ms: 0,
        duration_ms: 1000,
        manifest: manifest(task),
        metadata: BTreeMap::new(),
    }
}

/// Stores a small result named `task`: 1 KiB stdout and three 4 KiB outputs whose bytes depend
/// on `task`, so each new name stores new blobs.
fn store_small(store: &DiskStore, task: &str) -> (Digest, ActionResult) {
    let seed = Digest::of(task.as_bytes()).0;
    let outputs = (0..3u8)
        .map(|index| {
            let mut bytes = vec![index; 4096];
            bytes[..32].copy_from_slice(&seed);
            OutputFile {
                path: format!("out/file{index}.bin"),
                digest: store.put_bytes(&bytes).unwrap(),
                size: 4096,
                mode: 0o644,
            }
        })
        .collect();
    let stdout = store.log_ref(vec![b'.'; 1024]).unwrap();
    let result = result(task, stdout, outputs);
    let digest = result.manifest.digest();
    store.put_record(&digest, &result).unwrap();
    (digest, result)
}

fn hit(store: &DiskStore, digest: &Digest) -> ActionResult {
    match store.get_record(digest) {
        RecordLookup::Hit(result) => *result,
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// A disk hit as the runner sees it: the record, then its logs.
fn disk_hit(store: &DiskStore, digest: &Digest) -> usize {
    let result = hit(store, digest);
    let stdout = store.read_log(&result.stdout).unwrap();
    let stderr = store.read_log(&result.stderr).unwrap();
    stdout.len() + stderr.len()
}

fn bench_memory(c: &mut Criterion, small: &ActionResult) {
    let mut group = c.benchmark_group("tier_lookup");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let tier = MemoryTier::new(64 << 20);
    let digest = small.manifest.digest();
    let entry = Arc::new(MemoryEntry::new(Arc::new(small.clone())));
    runtime.block_on(tier.insert(digest, entry));
    assert!(runtime.block_on(tier.get(&digest)).is_some());
    group.throughput(Throughput::Elements(GETS_PER_ITERATION));
    group.bench_function("memory_hit_x1000", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..GETS_PER_ITERATION {
                    black_box(tier.get(black_box(&digest)).await);
                }
            })
        })
    });
    // The same hit through the MemoryTier actor (mailbox + oneshot) on the same runtime: the
    // target is at most 3x the direct get above.
    let (handle, join) = {
        let _entered = runtime.enter();
        MemoryHandle::spawn(64 << 20, 256)
    };
    let entry = Arc::new(MemoryEntry::new(Arc::new(small.clone())));
    runtime.block_on(handle.insert(digest, entry)).unwrap();
    group.bench_function("memory_hit_via_actor_x1000", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..GETS_PER_ITERATION {
                    black_box(handle.get(black_box(digest)).await.unwrap());
                }
            })
        })
    });
    runtime.block_on(handle.shutdown()).unwrap();
    runtime.block_on(join).unwrap();
    group.finish();
}

fn bench_disk_hits(c: &mut Criterion, store: &DiskStore, small: &Digest, large: &ActionResult) {
    let mut group = c.benchmark_group("tier_lookup");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    group.bench_function("disk_hit_small", |b| b.iter(|| disk_hit(store, small)));
    let large_digest = large.manifest.digest();
    group.bench_function("disk_hit_large_record", |b| b.iter(|| disk_hit(store, &large_digest)));
    store.flush().unwrap();

    let project = tempfile::tempdir().unwrap();
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.bench_function("restore_large_100MiB", |b| {
        b.iter(|| store.restore_outputs(large, project.path()).unwrap())
    });
    group.finish();
}

fn bench_store_small(c: &mut Criterion, store: &DiskStore) {
    let mut group = c.benchmark_group("tier_store");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let mut count = 0u64;
    group.bench_function("small", |b| {
        b.iter(|| {
            count += 1;
            store_small(store, &format!("store{count}"))
        })
    });
    store.flush().unwrap();
    group.finish();
}

/// Times `work` `iterations` times, running `reset` (untimed) before each.
fn timed(iterations: u64, mut reset: impl FnMut(), mut work: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        reset();
        let started = Instant::now();
        work();
        total += started.elapsed();
    }
    total
}

fn bench_store_large(c: &mut Criterion, source: &Path, scratch: &Path) {
    let mut group = c.benchmark_group("tier_store");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(LARGE as u64));
    for fsync in [false, true] {
        let store = open(&scratch.join(format!("cache-fsync-{fsync}")), fsync);
        let blob = store.layout().blob(&Digest::of(&fs::read(source).unwrap()));
        group.bench_function(format!("large_100MiB_fsync_{fsync}"), |b| {
            b.iter_custom(|iterations| {
                let reset = || {
                    let _ = fs::remove_file(&blob);
                };
                timed(iterations, reset, || {
                    let (digest, size) = store.put_file(source).unwrap();
                    let file = OutputFile { path: "out/big.bin".into(), digest, size, mode: 0o644 };
                    let result = result("large", LogRef::EMPTY, vec![file]);
                    store.put_record(&result.manifest.digest(), &result).unwrap();
                })
            })
        });
        store.flush().unwrap();
    }
    let target = scratch.join("copy.bin");
    for fsync in [false, true] {
        group.bench_function(format!("baseline_fs_copy_100MiB_fsync_{fsync}"), |b| {
            b.iter_custom(|iterations| {
                let reset = || {
                    let _ = fs::remove_file(&target);
                };
                timed(iterations, reset, || {
                    fs::copy(source, &target).unwrap();
                    if fsync {
                        File::open(&target).unwrap().sync_all().unwrap();
                    }
                })
            })
        });
    }
    group.finish();
}

const MANY: usize = 500;

fn bench_store_many(c: &mut Criterion, scratch: &Path) {
    let mut captured = CapturedOutputs::default();
    for i in 0..MANY {
        let path = format!("out/f{i:03}.txt");
        let absolute = scratch.join("many").join(&path);
        fs::create_dir_all(absolute.parent().unwrap()).unwrap();
        fs::write(&absolute, format!("output file {i}\n")).unwrap();
        captured.files.push((path, absolute, 0o644));
    }
    let mut group = c.benchmark_group("tier_store");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(MANY as u64));
    let store = open(&scratch.join("cache-many"), true);
    let trash = scratch.join("trash");
    fs::create_dir_all(&trash).unwrap();
    let mut moved = 0u64;
    let mut reset = || {
        moved += 1;
        let _ = fs::rename(store.layout().cas(), trash.join(moved.to_string()));
    };
    group.bench_function("many_500_small_fsync_true", |b| {
        b.iter_custom(|iterations| {
            timed(iterations, &mut reset, || {
                black_box(store.store_outputs(&captured).unwrap());
            })
        })
    });
    group.bench_function("baseline_one_by_one_500_small_fsync_true", |b| {
        b.iter_custom(|iterations| {
            timed(iterations, &mut reset, || {
                for (_, absolute, _) in &captured.files {
                    black_box(store.put_file(absolute).unwrap());
                }
            })
        })
    });
    group.finish();
}

/// 100 MiB of incompressible-looking bytes, written once.
fn large_source(dir: &Path) -> PathBuf {
    let mut bytes = vec![0u8; LARGE];
    let mut reader = blake3::Hasher::new().update(b"tier_lookup").finalize_xof();
    reader.fill(&mut bytes);
    let path = dir.join("big.bin");
    fs::write(&path, &bytes).unwrap();
    path
}

fn tier_lookup(c: &mut Criterion) {
    let scratch = tempfile::tempdir().unwrap();
    let store = open(&scratch.path().join("cache"), false);
    let (small_digest, small) = store_small(&store, "small");
    let source = large_source(scratch.path());
    let (digest, size) = store.put_file(&source).unwrap();
    let file = OutputFile { path: "out/big.bin".into(), digest, size, mode: 0o644 };
    let large = result("large", LogRef::EMPTY, vec![file]);
    store.put_record(&large.manifest.digest(), &large).unwrap();
    // Page cache warm: every file read once.
    disk_hit(&store, &small_digest);
    let _ = store.read_blob(&digest);

    bench_memory(c, &small);
    bench_disk_hits(c, &store, &small_digest, &large);
    bench_store_small(c, &store);
    bench_store_large(c, &source, scratch.path());
    bench_store_many(c, scratch.path());
}

criterion_group!(benches, tier_lookup);
criterion_main!(benches);
