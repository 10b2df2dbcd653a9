//! Disk tier tests: round trips, restores, corruption, and eviction by each policy.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::index::Event;
use super::*;
use crate::key_gen::{FileStamp, KeyManifest, StatCache, hash_pool};
use crate::result::{LogRef, OutputFile, OutputSymlink};

/// A task whose outputs are everything in the project (but `.git`), so the records of these
/// tests may name any path.
pub(crate) fn manifest(task: &str) -> KeyManifest {
    KeyManifest {
        cuenv_version: "test".to_owned(),
        platform: "test".to_owned(),
        outputs: vec!["**".to_owned()],
        ..KeyManifest::for_command(task, "true")
    }
}

fn store_in(dir: &Path, max_size: u64, policy: EvictionPolicy) -> DiskStore {
    let settings = DiskSettings {
        cache_dir: dir.to_owned(),
        max_size,
        policy,
        fsync: false,
        inline_threshold: 64,
    };
    DiskStore::open(settings, hash_pool(2).unwrap()).unwrap()
}

fn store(dir: &Path) -> DiskStore {
    store_in(dir, u64::MAX, EvictionPolicy::Lru)
}

/// A cache directory the store creates is private (results hold logs and outputs); one that
/// exists keeps its mode.
#[test]
fn a_cache_directory_the_store_creates_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let created = dir.path().join("new/cache");
    store(&created);
    assert_eq!(mode(&created), 0o700);
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o775)).unwrap();
    store(&shared);
    assert_eq!(mode(&shared), 0o775);
}

/// Stores a result with one output file per `(path, content)` and returns its digest.
fn put(store: &DiskStore, task: &str, outputs: &[(&str, &[u8])]) -> (Digest, ActionResult) {
    let output_files = outputs
        .iter()
        .map(|(path, content)| OutputFile {
            path: (*path).to_owned(),
            digest: store.put_bytes(content).unwrap(),
            size: content.len() as u64,
            mode: 0o644,
        })
        .collect();
    let result = ActionResult {
        exit_code: 0,
        stdout: store.log_ref(format!("{task} says hi").into_bytes()).unwrap(),
        stderr: LogRef::EMPTY,
        output_files,
        output_dirs: Vec::new(),
        output_symlinks: Vec::new(),
        executed_at_ms: now_ms(),
        duration_ms: 1234,
        manifest: manifest(task),
        metadata: BTreeMap::new(),
    };
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

fn age_files(store: &DiskStore, by: Duration) {
    let when = SystemTime::now() - by;
    for dir in [store.layout().ac(), store.layout().cas()] {
        for shard in fs::read_dir(dir).unwrap() {
            for entry in fs::read_dir(shard.unwrap().path()).unwrap() {
                File::open(entry.unwrap().path()).unwrap().set_modified(when).unwrap();
            }
        }
    }
}

#[test]
fn results_round_trip_and_survive_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, result) = put(&store(dir.path()), "build", &[("dist/a.txt", b"alpha")]);
    let reopened = store(dir.path());
    assert_eq!(hit(&reopened, &digest), result);
    assert!(matches!(reopened.get_record(&Digest::of(b"other")), RecordLookup::Miss));
    assert_eq!(reopened.read_log(&result.stdout).unwrap(), b"build says hi");
}

#[test]
fn logs_at_or_over_the_threshold_become_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert!(matches!(store.log_ref(vec![b'x'; 63]).unwrap(), LogRef::Inline(_)));
    let big = store.log_ref(vec![b'x'; 64]).unwrap();
    assert!(matches!(big, LogRef::Blob { size: 64, .. }));
    assert_eq!(store.read_log(&big).unwrap(), vec![b'x'; 64]);
}

#[test]
fn captured_outputs_restore_byte_identical_with_modes_links_and_dirs() {
    let (project, copy, cache) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = project.path();
    fs::create_dir_all(root.join("pkg/dist/empty")).unwrap();
    fs::write(root.join("pkg/dist/app.js"), "console.log(1)").unwrap();
    fs::write(root.join("pkg/dist/run"), "#!/bin/sh").unwrap();
    fs::set_permissions(root.join("pkg/dist/run"), fs::Permissions::from_mode(0o755)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    fs::write(root.join("pkg/dist/big.bin"), &big).unwrap();
    symlink("app.js", root.join("pkg/dist/latest.js")).unwrap();
    fs::write(root.join("pkg/report.txt"), "r").unwrap();
    fs::write(root.join("pkg/unrelated.txt"), "u").unwrap();

    let store = store(cache.path());
    let patterns = vec!["dist".to_owned(), "*.txt".to_owned(), "missing.log".to_owned()];
    let mut captured = CapturedOutputs::collect(root, "build", "pkg", &patterns, &[]).unwrap();
    captured.files.retain(|(path, _, _)| path != "pkg/unrelated.txt");
    let output_files = store.store_outputs(&captured).unwrap();
    let paths: Vec<&str> = output_files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(paths, ["pkg/dist/app.js", "pkg/dist/big.bin", "pkg/dist/run", "pkg/report.txt"]);
    assert_eq!(captured.dirs, ["pkg/dist", "pkg/dist/empty"]);
    assert_eq!(
        captured.symlinks,
        [OutputSymlink { path: "pkg/dist/latest.js".into(), target: "app.js".into() }]
    );

    let mut result = ActionResult {
        exit_code: 0,
        stdout: LogRef::EMPTY,
        stderr: LogRef::EMPTY,
        output_files,
        output_dirs: captured.dirs.clone(),
        output_symlinks: captured.symlinks.clone(),
        executed_at_ms: 0,
        duration_ms: 0,
        manifest: manifest("build"),
        metadata: BTreeMap::new(),
    };
    result.output_files.sort_by(|a, b| a.path.cmp(&b.path));
    // A stale file where a directory goes, and a stale directory where a file goes.
    fs::write(copy.path().join("pkg"), "stale").ok();
    let report = store.restore_outputs(&result, copy.path()).unwrap();
    assert_eq!((report.files, report.symlinks, report.dirs), (4, 1, 2));
    for path in ["pkg/dist/app.js", "pkg/dist/big.bin", "pkg/dist/run", "pkg/report.txt"] {
        assert_eq!(
            fs::read(copy.path().join(path)).unwrap(),
            fs::read(root.join(path)).unwrap(),
            "{path}"
        );
    }
    let mode =
        |path: &str| fs::metadata(copy.path().join(path)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("pkg/dist/run"), mode("pkg/dist/app.js")), (0o755, 0o644));
    assert_eq!(fs::read_link(copy.path().join("pkg/dist/latest.js")).unwrap(), Path::new("app.js"));
    assert!(copy.path().join("pkg/dist/empty").is_dir());
    // Restoring twice replaces what is there.
    fs::write(copy.path().join("pkg/dist/app.js"), "edited in place").unwrap();
    store.restore_outputs(&result, copy.path()).unwrap();
    assert_eq!(fs::read(copy.path().join("pkg/dist/app.js")).unwrap(), b"console.log(1)");
    // The restored file is a copy: editing it leaves the store intact.
    assert_eq!(
        store.read_blob(&result.output_files[0].digest),
        BlobRead::Found(b"console.log(1)".to_vec())
    );
}

#[test]
fn unsafe_paths_in_a_record_are_refused_before_anything_is_written() {
    let (cache, project, outside) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store(cache.path());
    let (_, mut result) = put(&store, "t", &[("ok.txt", b"ok")]);
    for bad in ["../escape.txt", "/etc/cuenv-test", "a/./b", "a//b", ""] {
        result.output_files[0].path = bad.to_owned();
        let error = store.restore_outputs(&result, project.path()).unwrap_err();
        assert!(
            matches!(error, RestoreError::Unsafe { .. }) && error.is_cache_fault(),
            "{bad}: {error}"
        );
    }
    // A record whose file lies below one of its own symlinks would write through it.
    result.output_files[0].path = "out/file.txt".to_owned();
    let link = OutputSymlink { path: "out".into(), target: outside.path().display().to_string() };
    result.output_symlinks = vec![link];
    let error = store.restore_outputs(&result, project.path()).unwrap_err();
    assert!(matches!(error, RestoreError::Unsafe { .. }) && error.is_cache_fault(), "{error}");
    result.output_symlinks.clear();
    // A symlink already in the workspace must not lead a restore outside the root either; the
    // entry is sound, so the project is named, not the cache.
    symlink(outside.path(), project.path().join("link")).unwrap();
    result.output_files[0].path = "link/file.txt".to_owned();
    let error = store.restore_outputs(&result, project.path()).unwrap_err();
    assert!(
        matches!(&error, RestoreError::SymlinkInTheWay { path } if path.ends_with("link"))
            && error.is_workspace_obstacle()
            && !error.is_cache_fault(),
        "{error}"
    );
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
    assert_eq!(fs::read_dir(project.path()).unwrap().count(), 1);
}

#[test]
fn damaged_blobs_records_and_truncations_read_as_misses_and_are_removed() {
    let (cache, project) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store(cache.path());
    let (digest, result) = put(&store, "t", &[("out.txt", b"precious output")]);
    let blob = store.layout().blob(&result.output_files[0].digest);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[3] ^= 1;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, &bytes).unwrap();
    let error = store.restore_outputs(&result, project.path()).unwrap_err();
    assert!(matches!(error, RestoreError::BlobGone { .. }) && error.is_cache_fault(), "{error}");
    assert!(!blob.exists(), "damaged blob must be removed");
    assert!(!project.path().join("out.txt").exists(), "nothing half-restored");
    // With its blob gone the record is a miss; a new write repairs it.
    assert!(matches!(store.get_record(&digest), RecordLookup::Miss));
    let (digest, _) = put(&store, "t", &[("out.txt", b"precious output")]);
    store.restore_outputs(&hit(&store, &digest), project.path()).unwrap();

    let record = store.layout().record(&digest);
    let sealed = fs::read(&record).unwrap();
    for damage in [
        Damage::Flip(sealed.len() - 5),
        Damage::Flip(2),
        Damage::Truncate(sealed.len() / 2),
        Damage::Truncate(3),
    ] {
        fs::write(&record, damage.apply(&sealed)).unwrap();
        assert!(matches!(store.get_record(&digest), RecordLookup::Corrupt { .. }), "{damage:?}");
        assert!(!record.exists());
        put(&store, "t", &[("out.txt", b"precious output")]);
        hit(&store, &digest);
    }
}

#[derive(Debug)]
enum Damage {
    Flip(usize),
    Truncate(usize),
}

impl Damage {
    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        match *self {
            Damage::Flip(at) => {
                let mut out = bytes.to_vec();
                out[at] ^= 0x40;
                out
            }
            Damage::Truncate(len) => bytes[..len].to_vec(),
        }
    }
}

/// A record of an older format is garbage once keys changed with it: a miss, removed without
/// a word or a corrupt count. A newer format's belongs to a newer cuenv sharing the directory:
/// a miss, left alone, by lookups and by gc alike.
#[test]
fn records_of_other_format_versions_are_misses_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (digest, _) = put(&store, "t", &[("out.txt", b"x")]);
    let record = store.layout().record(&digest);
    let sealed = fs::read(&record).unwrap();
    let version = u16::from_le_bytes([sealed[4], sealed[5]]);
    let in_version = |other: u16| {
        let mut bytes = sealed.clone();
        bytes[4..6].copy_from_slice(&other.to_le_bytes());
        bytes
    };
    fs::write(&record, in_version(version + 1)).unwrap();
    assert!(matches!(store.get_record(&digest), RecordLookup::Miss));
    assert!(record.exists(), "a newer cuenv's record is left alone");
    fs::write(&record, in_version(version - 1)).unwrap();
    assert!(matches!(store.get_record(&digest), RecordLookup::Miss));
    assert!(!record.exists(), "an older format's record is removed");

    // Records gc finds outside its index, which it reads to index them.
    let (older, newer) = (Digest::of(b"older"), Digest::of(b"newer"));
    for (digest, bytes) in [(older, in_version(version - 1)), (newer, in_version(version + 1))] {
        let path = store.layout().record(&digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    let report = store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap();
    assert_eq!(report.corrupt_removed, 0, "{report:?}");
    assert!(!store.layout().record(&older).exists(), "gc removes an older format's record");
    assert!(store.layout().record(&newer).exists(), "gc leaves a newer cuenv's record alone");
}

#[test]
fn a_record_stored_under_the_wrong_digest_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (digest, _) = put(&store, "a", &[]);
    let other = Digest::of(b"elsewhere");
    fs::create_dir_all(store.layout().record(&other).parent().unwrap()).unwrap();
    fs::copy(store.layout().record(&digest), store.layout().record(&other)).unwrap();
    assert!(matches!(store.get_record(&other), RecordLookup::Corrupt { .. }));
}

/// Five records of 10 KiB each; returns them oldest first.
fn five_records(store: &DiskStore) -> Vec<Digest> {
    (0..5u8)
        .map(|index| {
            let content = vec![index; 10 * 1024 + usize::from(index) * 1024];
            put(store, &format!("task{index}"), &[("out.bin", &content)]).0
        })
        .collect()
}

fn evicted_by(
    policy: EvictionPolicy,
    reads: &[(usize, u64)],
    keep_bytes: u64,
) -> (Vec<usize>, GcReport) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), u64::MAX, policy);
    let digests = five_records(&store);
    // Written one minute apart, then read at chosen times (ms offsets), oldest first.
    let base = now_ms() - 3_600_000;
    store.journal.pending.lock().unwrap().iter_mut().for_each(|event: &mut Event| {
        if let Event::Wrote { digest, at_ms, .. } = event {
            *at_ms = base + 60_000 * digests.iter().position(|d| d == digest).unwrap() as u64;
        }
    });
    for (index, at) in reads {
        store.journal.note(Event::Read { digest: digests[*index], at_ms: base + at });
    }
    age_files(&store, Duration::from_secs(600));
    let total: u64 = store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap().size_after;
    let report = store.gc(GcTarget { max_size: total - keep_bytes, max_age: None }).unwrap();
    let order =
        report.evicted.iter().map(|d| digests.iter().position(|x| x == d).unwrap()).collect();
    assert!(report.size_after <= total - keep_bytes, "{report:?}");
    for (index, digest) in digests.iter().enumerate() {
        let evicted = report.evicted.contains(digest);
        assert_eq!(
            matches!(store.get_record(digest), RecordLookup::Hit(_)),
            !evicted,
            "record {index}"
        );
    }
    (order, report)
}

#[test]
fn each_policy_evicts_what_it_should_until_the_store_fits() {
    // Need ~25 KiB freed: two or three records depending on their sizes.
    let need = 25 * 1024;
    // lru: 0 and 1 read recently, so 2, 3, 4 (never read, written in that order) go first.
    let (order, _) = evicted_by(EvictionPolicy::Lru, &[(0, 900_000), (1, 950_000)], need);
    assert_eq!(order, [2, 3]);
    // lfu: 3 read three times, 4 twice, 0 once; 1 and 2 never, so they go first.
    let reads =
        [(3, 500_000), (3, 510_000), (3, 520_000), (4, 530_000), (4, 540_000), (0, 550_000)];
    let (order, _) = evicted_by(EvictionPolicy::Lfu, &reads, need);
    assert_eq!(order, [1, 2, 0]);
    // fifo: oldest written first, reads do not matter.
    let (order, _) = evicted_by(EvictionPolicy::Fifo, &[(0, 900_000)], need);
    assert_eq!(order, [0, 1, 2]);
    // size-based: largest first.
    let (order, report) = evicted_by(EvictionPolicy::SizeBased, &[], need);
    assert_eq!(order, [4, 3]);
    assert_eq!(report.blobs_removed, 2);
}

#[test]
fn gc_never_removes_what_was_written_in_the_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let digests = five_records(&store);
    let report = store.gc(GcTarget { max_size: 0, max_age: None }).unwrap();
    assert_eq!((report.records_evicted, report.kept_recent), (0, 5));
    assert!(digests.iter().all(|digest| matches!(store.get_record(digest), RecordLookup::Hit(_))));
}

#[test]
fn gc_sweeps_abandoned_temps_and_orphans_and_honours_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (digest, _) = put(&store, "t", &[("a", b"kept")]);
    let orphan = store.put_bytes(b"nobody names me").unwrap();
    let temp = store.layout().tmp().join(".x.1.2.3.cuenv-tmp");
    fs::write(&temp, "half written").unwrap();
    age_files(&store, Duration::from_secs(2 * 3600));
    File::open(&temp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let report = store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap();
    assert_eq!((report.temps_swept, report.blobs_removed, report.records_evicted), (1, 1, 0));
    assert!(!store.has_blob(&orphan) && !temp.exists());
    assert!(matches!(store.get_record(&digest), RecordLookup::Hit(_)));

    // The read above counts as an access now; with max_age of an hour it stays.
    store.flush().unwrap();
    let report = store
        .gc(GcTarget { max_size: u64::MAX, max_age: Some(Duration::from_secs(3600)) })
        .unwrap();
    assert_eq!(report.records_evicted, 0);
    let report = store.gc(GcTarget { max_size: u64::MAX, max_age: Some(Duration::ZERO) }).unwrap();
    assert_eq!(report.records_evicted, 1);
}

#[test]
fn a_lost_or_corrupt_index_is_rebuilt_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let digests = five_records(&store);
    store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap();
    let index = store.layout().index();
    let mut bytes = fs::read(&index).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&index, bytes).unwrap();
    fs::write(store.layout().journal(), b"\xff\xff\xff\xffgarbage").unwrap();
    age_files(&store, Duration::from_secs(600));
    let report = store.gc(GcTarget { max_size: 0, max_age: None }).unwrap();
    assert_eq!(report.records_evicted, 5, "{report:?}");
    assert_eq!(report.size_after, 0);
    assert!(digests.iter().all(|digest| matches!(store.get_record(digest), RecordLookup::Miss)));
}

#[test]
fn the_usage_file_tracks_new_bytes_across_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    put(&store, "t", &[("a", &[1u8; 5000])]);
    store.flush().unwrap();
    let usage = store.approximate_usage();
    assert!(usage >= 5000, "{usage}");
    // The same blob again adds only the record.
    put(&store, "u", &[("a", &[1u8; 5000])]);
    store.flush().unwrap();
    assert!(store.approximate_usage() - usage < 1000);
    let exact = store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap().size_after;
    assert_eq!(store.approximate_usage(), exact);
}

#[test]
fn last_digest_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let first = store(dir.path());
    let digest = Digest::of(b"x");
    assert_eq!(first.last("/proj", "build"), None);
    first.set_last("/proj", "build", &digest);
    assert_eq!(first.last("/proj", "build"), Some(digest));
    assert_eq!(first.last("/other", "build"), None);
    // After a flush, another process (another store on the same dir) sees it too, and a second
    // writer's notes merge with the first's.
    first.flush().unwrap();
    let other = store(dir.path());
    assert_eq!(other.last("/proj", "build"), Some(digest));
    other.set_last("/proj", "test", &Digest::of(b"t"));
    other.flush().unwrap();
    let third = store(dir.path());
    assert_eq!(
        (third.last("/proj", "build"), third.last("/proj", "test")),
        (Some(digest), Some(Digest::of(b"t")))
    );
}

#[test]
fn storing_again_repairs_a_damaged_blob() {
    let (cache, source) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store(cache.path());
    let small = b"small output".to_vec();
    let large: Vec<u8> = (0..400_000u32).map(|i| (i % 13) as u8).collect();
    let small_digest = store.put_bytes(&small).unwrap();
    let path = source.path().join("large.bin");
    fs::write(&path, &large).unwrap();
    let (large_digest, _) = store.put_file(&path).unwrap();
    for (digest, len) in [(small_digest, small.len()), (large_digest, large.len())] {
        let blob = store.layout().blob(&digest);
        let mut bytes = fs::read(&blob).unwrap();
        bytes[len / 2] ^= 1;
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, bytes).unwrap();
    }
    // Storing the same content again must not trust the damaged copies.
    store.put_bytes(&small).unwrap();
    store.put_file(&path).unwrap();
    assert_eq!(store.read_blob(&small_digest), BlobRead::Found(small));
    assert_eq!(store.read_blob(&large_digest), BlobRead::Found(large));
}

#[test]
fn outputs_in_place_are_recognised_by_their_stamps() {
    let (project, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = project.path();
    let store = store(cache.path());
    let (_, result) = put(&store, "build", &[("pkg/out.txt", b"fresh")]);
    let digest = result.output_files[0].digest;
    let target = root.join("pkg/out.txt");
    let stamp_now = || FileStamp::of(&fs::symlink_metadata(&target).unwrap());
    fs::create_dir_all(root.join("pkg")).unwrap();
    fs::write(&target, "fresh").unwrap();

    // Found in place by hashing: left alone, and its stamp remembered.
    let stamps = StatCache::in_memory(Duration::ZERO);
    let report = store.restore_outputs_with(&result, root, None, Some(&stamps)).unwrap();
    assert_eq!((report.files, report.bytes), (1, 0));
    assert_eq!(stamps.lookup("pkg/out.txt", &stamp_now()), Some(digest));

    // A remembered stamp is trusted without reading the file (shown with a stamp recorded
    // for other content of the same size).
    fs::write(&target, "FRESH").unwrap();
    stamps.remember("pkg/out.txt", stamp_now(), digest);
    store.restore_outputs_with(&result, root, None, Some(&stamps)).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"FRESH");

    // A file replaced since (a new inode) no longer matches its remembered stamp: rewritten.
    let temp = root.join("pkg/replacement");
    fs::write(&temp, "FRESH").unwrap();
    fs::rename(&temp, &target).unwrap();
    let report = store.restore_outputs_with(&result, root, None, Some(&stamps)).unwrap();
    assert_eq!(report.bytes, 5);
    assert_eq!(fs::read(&target).unwrap(), b"fresh");
}

#[test]
fn many_fsynced_outputs_are_stored_in_parallel_in_file_order() {
    let cache = tempfile::tempdir().unwrap();
    let mut store = store_in(cache.path(), 1 << 30, EvictionPolicy::default());
    store.settings.fsync = true;
    let project = tempfile::tempdir().unwrap();
    let mut captured = CapturedOutputs::default();
    for i in 0..60 {
        let path = format!("out/f{i:02}");
        let absolute = project.path().join(&path);
        fs::create_dir_all(absolute.parent().unwrap()).unwrap();
        // Every third file repeats an earlier content: parallel writers of one blob agree.
        fs::write(&absolute, format!("content {}", i % 20)).unwrap();
        captured.files.push((path, absolute, if i % 7 == 0 { 0o755 } else { 0o600 }));
    }
    let outputs = store.store_outputs(&captured).unwrap();
    assert_eq!(outputs.len(), 60);
    for (i, output) in outputs.iter().enumerate() {
        assert_eq!(output.path, format!("out/f{i:02}"));
        assert_eq!(output.mode, if i % 7 == 0 { 0o755 } else { 0o600 });
        let content = format!("content {}", i % 20);
        assert_eq!(output.digest, Digest::of(content.as_bytes()));
        assert_eq!(store.read_blob(&output.digest), BlobRead::Found(content.into_bytes()));
    }

    // A file that vanished before it was stored fails the whole store.
    captured.files[41].1 = project.path().join("out/gone");
    let error = store.store_outputs(&captured).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
}

#[test]
fn outputs_whose_names_or_link_targets_are_not_utf8_are_refused_not_dropped() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    fs::create_dir_all(root.join("dist")).unwrap();
    fs::write(root.join("dist/app.js"), "1").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"notes\xff.log")), "not an output").unwrap();
    // `*.js` cannot reach below a top-level directory.
    fs::create_dir(root.join(OsStr::from_bytes(b"vendor\xff"))).unwrap();
    let patterns = vec!["dist".to_owned(), "*.js".to_owned()];
    let captured = CapturedOutputs::collect(root, "build", "", &patterns, &[]).unwrap();
    assert_eq!(captured.files.len(), 1, "a name no output glob wants is left alone");

    for odd in [&b"dist/caf\xe9.js"[..], b"caf\xe9.js"] {
        let path = root.join(OsStr::from_bytes(odd));
        fs::write(&path, "2").unwrap();
        let error = CapturedOutputs::collect(root, "build", "", &patterns, &[]).unwrap_err();
        assert!(matches!(error, CaptureError::NotUtf8 { .. }), "{error}");
        assert!(error.to_string().contains("caf\u{fffd}.js"), "{error}");
        fs::remove_file(path).unwrap();
    }
    let odd_dir = root.join(OsStr::from_bytes(b"dist/sub\xff"));
    fs::create_dir(&odd_dir).unwrap();
    let error = CapturedOutputs::collect(root, "build", "", &patterns, &[]).unwrap_err();
    assert!(error.to_string().contains("dist/sub\u{fffd}"), "{error}");
    fs::remove_dir(odd_dir).unwrap();
    symlink(OsStr::from_bytes(b"app\xff.js"), root.join("dist/latest.js")).unwrap();
    let error = CapturedOutputs::collect(root, "build", "", &patterns, &[]).unwrap_err();
    assert!(error.to_string().contains("dist/latest.js"), "{error}");
}

#[test]
fn output_walks_never_take_the_repository_or_the_cache_along() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    for (path, content) in
        [(".git/HEAD", "ref"), (".cache/v1/ac/x", "record"), ("dist/a.js", "a"), ("b.txt", "b")]
    {
        fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        fs::write(root.join(path), content).unwrap();
    }
    let skip = [root.join(".cache")];
    for patterns in [vec!["**".to_owned()], vec![".".to_owned()], vec!["**/*".to_owned()]] {
        let captured = CapturedOutputs::collect(root, "t", "", &patterns, &skip).unwrap();
        let paths: Vec<&str> = captured.files.iter().map(|(path, _, _)| path.as_str()).collect();
        assert_eq!(paths, ["b.txt", "dist/a.js"], "{patterns:?}");
    }
    // The project root as a literal output: everything in it, the root itself not recorded.
    let captured = CapturedOutputs::collect(root, "t", "", &[".".to_owned()], &skip).unwrap();
    assert_eq!(captured.dirs, ["dist"]);
    // Named outright, the cache directory is still not an output.
    let captured = CapturedOutputs::collect(root, "t", "", &[".cache".to_owned()], &skip).unwrap();
    assert!(captured.files.is_empty(), "{:?}", captured.files);
}

#[test]
fn only_paths_the_declared_outputs_could_capture_are_accepted_from_elsewhere() {
    let declared = |working_dir: &str, outputs: &[&str]| KeyManifest {
        working_dir: working_dir.to_owned(),
        outputs: outputs.iter().map(|output| (*output).to_owned()).collect(),
        ..manifest("t")
    };
    let first_undeclared = |manifest: &KeyManifest, paths: &[&'static str]| {
        undeclared_output(manifest, paths.iter().copied(), [])
    };
    let pkg = declared("pkg", &["dist", "*.txt", "gen/**/*.rs"]);
    let fine =
        ["pkg/dist/a.js", "pkg/dist/sub/b.js", "pkg/dist", "pkg/notes.txt", "pkg/gen/x/y.rs"];
    assert_eq!(first_undeclared(&pkg, &fine), None);
    for wrong in [
        "pkg/src/main.rs",
        "other/dist/a.js",
        ".git/hooks/post-checkout",
        "pkg/dist/.git/config",
        "pkg/gen/.git/x.rs",
        "pkg/sub/notes.txt",
    ] {
        assert_eq!(first_undeclared(&pkg, &["pkg/dist/a.js", wrong]), Some(wrong), "{wrong}");
    }
    // Named outright, even a path in .git is the task's own (a hook installer).
    let hook = declared("", &[".git/hooks/pre-commit"]);
    assert_eq!(first_undeclared(&hook, &[".git/hooks/pre-commit"]), None);
    assert_eq!(
        first_undeclared(&hook, &[".git/hooks/post-checkout"]),
        Some(".git/hooks/post-checkout")
    );
    // Everything, yet never into .git; no outputs, nothing.
    let all = declared("", &["**"]);
    assert_eq!(first_undeclared(&all, &["a", "b/c"]), None);
    assert_eq!(first_undeclared(&all, &[".git/config"]), Some(".git/config"));
    assert_eq!(first_undeclared(&declared("", &[]), &["a"]), Some("a"));
    // Directories: inside the outputs, or on the way to them (a restore creates those anyway),
    // and nowhere else: one in place of a file replaces that file.
    let dirs = |manifest: &KeyManifest, dirs: &[&'static str]| {
        undeclared_output(manifest, [], dirs.iter().copied())
    };
    assert_eq!(dirs(&pkg, &["pkg", "pkg/dist", "pkg/dist/sub", "pkg/gen"]), None);
    for wrong in ["pkg/src", "pkg/notes.txt/x", "other", "pkg/gen/x", "pkg/dist/.git", ".git"] {
        assert_eq!(dirs(&pkg, &[wrong]), Some(wrong), "{wrong}");
    }
}

#[test]
fn a_store_opened_on_a_file_says_it_is_not_a_directory_and_keeps_the_real_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let settings = |cache_dir: &Path| DiskSettings {
        cache_dir: cache_dir.to_owned(),
        max_size: u64::MAX,
        policy: EvictionPolicy::Lru,
        fsync: false,
        inline_threshold: 64,
    };
    let error = DiskStore::open(settings(&file), hash_pool(2).unwrap()).err().unwrap();
    assert_eq!(error.kind(), io::ErrorKind::NotADirectory);
    assert!(error.to_string().contains("not a directory"), "{error}");
    // Through a symlink and `..`: the store keeps where it really is.
    symlink(dir.path(), dir.path().join("link")).unwrap();
    let roundabout = dir.path().join("link/sub/../cache");
    fs::create_dir_all(dir.path().join("sub")).unwrap();
    let store = DiskStore::open(settings(&roundabout), hash_pool(2).unwrap()).unwrap();
    let real = fs::canonicalize(dir.path()).unwrap().join("cache");
    assert_eq!(store.settings().cache_dir, real);
}

#[test]
fn a_local_record_that_writes_outside_its_declared_outputs_is_refused_and_nothing_written() {
    // A cache directory others write to (a CI cache saved by another branch) is checked like a
    // remote: a record may write, or replace, only where its task's outputs go.
    let (cache, project) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store(cache.path());
    fs::create_dir_all(project.path().join("src")).unwrap();
    fs::write(project.path().join("src/main.rs"), "fn main() {}").unwrap();
    let (_, mut result) = put(&store, "t", &[("dist/app.js", b"ok"), ("src/main.rs", b"evil")]);
    result.manifest.outputs = vec!["dist/**".to_owned()];
    let error = store.restore_outputs(&result, project.path()).unwrap_err();
    assert!(
        matches!(&error, RestoreError::Undeclared { path } if path == "src/main.rs")
            && error.is_cache_fault(),
        "{error}"
    );
    // A directory where a source file is would replace it.
    result.output_files.retain(|file| file.path == "dist/app.js");
    result.output_dirs = vec!["src/main.rs".to_owned()];
    let error = store.restore_outputs(&result, project.path()).unwrap_err();
    assert!(matches!(error, RestoreError::Undeclared { .. }), "{error}");
    assert_eq!(fs::read_to_string(project.path().join("src/main.rs")).unwrap(), "fn main() {}");
    assert!(!project.path().join("dist").exists(), "nothing is written before the check");
    // Where the outputs go, it restores.
    result.output_dirs = vec!["dist".to_owned()];
    store.restore_outputs(&result, project.path()).unwrap();
    assert_eq!(fs::read(project.path().join("dist/app.js")).unwrap(), b"ok");
}

#[test]
fn a_named_pipe_among_the_outputs_is_left_out_not_waited_on() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("out")).unwrap();
    fs::write(root.join("out/a.txt"), "a").unwrap();
    let pipe = std::ffi::CString::new(root.join("out/pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: `pipe` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(pipe.as_ptr(), 0o644) }, 0);
    let captured = CapturedOutputs::collect(root, "t", "", &["out/**".to_owned()], &[]).unwrap();
    let paths: Vec<&str> = captured.files.iter().map(|(path, _, _)| path.as_str()).collect();
    assert_eq!(paths, ["out/a.txt"]);
    // Storing opens it without waiting for a writer, and refuses it.
    let store = store(&root.join("cache"));
    let error = store.put_file(&root.join("out/pipe")).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn directories_an_output_glob_matches_are_captured_even_when_empty() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    for dir in ["dist/logs", "dist/cache/v1", "dist/js", "other/empty"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("dist/js/app.js"), "1").unwrap();
    fs::write(root.join("dist/js/app.map"), "1").unwrap();
    let capture = |patterns: &[&str]| {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        CapturedOutputs::collect(root, "build", "", &patterns, &[]).unwrap()
    };
    let everything = capture(&["dist/**"]);
    assert_eq!(everything.dirs, ["dist/cache", "dist/cache/v1", "dist/js", "dist/logs"]);
    // A glob that matches files only records no directory; one that matches a directory does.
    let scripts = capture(&["dist/**/*.js"]);
    assert!(scripts.dirs.is_empty(), "{:?}", scripts.dirs);
    assert_eq!(scripts.files.len(), 1);
    assert_eq!(capture(&["dist/*"]).dirs, ["dist/cache", "dist/js", "dist/logs"]);
}

#[test]
fn a_blob_written_in_pieces_is_published_whole_and_scanned_back_verified() {
    const MIB: usize = 1024 * 1024;
    let cache = tempfile::tempdir().unwrap();
    let store = store(cache.path());
    let content: Vec<u8> = (0..(2 * MIB + 77)).map(|i| (i % 253) as u8).collect();
    let mut writer = store.blob_writer().unwrap();
    for piece in content.chunks(100_000) {
        writer.write(piece).unwrap();
    }
    assert_eq!(writer.len(), content.len() as u64);
    let digest = writer.finish().unwrap();
    assert_eq!(digest, Digest::of(&content));
    assert_eq!(store.blob_size(&digest), Some(content.len() as u64));
    let mut scanned = Vec::new();
    assert_eq!(
        store.scan_blob(&digest, |chunk| scanned.extend_from_slice(chunk)),
        BlobRead::Found(Vec::new())
    );
    assert_eq!(scanned, content);

    // Dropped unfinished, a writer leaves nothing behind.
    let temps = || fs::read_dir(store.layout.tmp()).unwrap().count();
    let before = temps();
    let mut abandoned = store.blob_writer().unwrap();
    abandoned.write(b"half").unwrap();
    assert_eq!(temps(), before + 1);
    drop(abandoned);
    assert_eq!(temps(), before);

    // A damaged blob scans as corrupt and is removed.
    let path = store.layout.blob(&digest);
    let mut damaged = fs::read(&path).unwrap();
    damaged[MIB + 1] ^= 1;
    fs::write(&path, damaged).unwrap();
    assert_eq!(store.scan_blob(&digest, |_| {}), BlobRead::Corrupt);
    assert!(!store.has_blob(&digest));
    assert_eq!(store.scan_blob(&digest, |_| {}), BlobRead::Missing);
}

#[test]
fn only_errors_that_say_a_file_is_damaged_remove_it() {
    // A process short of open files or memory, or not allowed to read, leaves a good entry.
    for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EACCES, libc::EINTR] {
        assert!(!is_damage(&io::Error::from_raw_os_error(errno)), "errno {errno}");
    }
    // A file that cannot be read back whole is damaged.
    assert!(is_damage(&io::Error::from_raw_os_error(libc::EIO)));
    assert!(is_damage(&io::Error::from_raw_os_error(libc::EISDIR)));
    assert!(is_damage(&io::Error::from(io::ErrorKind::UnexpectedEof)));
}
