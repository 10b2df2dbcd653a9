//! The legacy `CacheManager`: real round trips through the new store, across managers, in every
//! mode, and from sync and async callers alike (no nested-runtime panic, no deadlock).

#![allow(deprecated)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cuenv::compat::{CacheConfig, CacheManager, CachedTaskResult, LEGACY_TASK, legacy_digest};
use cuenv::config::CacheMode;

fn config(dir: &Path, mode: CacheMode) -> CacheConfig {
    CacheConfig { base_dir: dir.to_owned(), mode, max_size: 1 << 30 }
}

fn manager(dir: &Path, mode: CacheMode) -> CacheManager {
    CacheManager::new_sync_with(config(dir, mode)).unwrap()
}

/// A result with a blob-sized stdout (over the 4 KiB inline threshold), a small stderr, and a
/// time with sub-millisecond digits.
fn result(key: &str, exit_code: i32) -> CachedTaskResult {
    CachedTaskResult {
        cache_key: key.to_owned(),
        executed_at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
        exit_code,
        stdout: Some(b"line of output\n".repeat(1000)),
        stderr: Some(b"warning\n".to_vec()),
        output_files: HashMap::from([
            ("dist/app.js".to_owned(), "b3:0123abcd".to_owned()),
            ("dist/app.css".to_owned(), "b3:4567ef01".to_owned()),
        ]),
    }
}

/// `expected` as it reads back: the time kept to the millisecond.
fn to_millis(mut expected: CachedTaskResult) -> CachedTaskResult {
    let ms = expected.executed_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    expected.executed_at = UNIX_EPOCH + Duration::from_millis(ms);
    expected
}

#[test]
fn store_then_get_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), CacheMode::ReadWrite);
    cache.store_result("key-1".to_owned(), result("key-1", 3)).unwrap();
    let got = cache.get_cached_result("key-1").unwrap();
    assert_eq!(got, to_millis(result("key-1", 3)));
    assert_eq!(
        got.executed_at.duration_since(UNIX_EPOCH).unwrap(),
        Duration::from_millis(1_700_000_000_123)
    );
    cache.shutdown().unwrap();
}

#[test]
fn absent_and_empty_logs_stay_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), CacheMode::ReadWrite);
    let stored = CachedTaskResult {
        stdout: None,
        stderr: Some(Vec::new()),
        output_files: HashMap::new(),
        ..result("k", 0)
    };
    cache.store_result("k".to_owned(), stored.clone()).unwrap();
    assert_eq!(cache.get_cached_result("k").unwrap(), to_millis(stored));
}

#[test]
fn a_second_manager_on_the_same_dir_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = manager(dir.path(), CacheMode::ReadWrite);
    first.store_result("shared".to_owned(), result("shared", 0)).unwrap();
    first.shutdown().unwrap();
    let second = manager(dir.path(), CacheMode::ReadWrite);
    assert_eq!(second.get_cached_result("shared"), Some(to_millis(result("shared", 0))));
}

#[test]
fn a_manager_dropped_without_shutdown_has_stored_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    drop({
        let first = manager(dir.path(), CacheMode::ReadWrite);
        first.store_result("dropped".to_owned(), result("dropped", 0)).unwrap();
        first
    });
    let second = manager(dir.path(), CacheMode::ReadWrite);
    assert_eq!(second.get_cached_result("dropped"), Some(to_millis(result("dropped", 0))));
}

#[test]
fn an_unknown_key_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), CacheMode::ReadWrite);
    cache.store_result("known".to_owned(), result("known", 0)).unwrap();
    assert_eq!(cache.get_cached_result("unknown"), None);
    assert_eq!(cache.get_cached_result(""), None);
}

#[test]
fn a_second_store_replaces_the_first_even_after_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), CacheMode::ReadWrite);
    cache.store_result("k".to_owned(), result("k", 1)).unwrap();
    assert_eq!(cache.get_cached_result("k").unwrap().exit_code, 1);
    cache.store_result("k".to_owned(), result("k", 2)).unwrap();
    assert_eq!(cache.get_cached_result("k").unwrap().exit_code, 2);
    cache.shutdown().unwrap();
    assert_eq!(
        manager(dir.path(), CacheMode::ReadWrite).get_cached_result("k").unwrap().exit_code,
        2
    );
}

#[test]
fn a_legacy_entry_is_a_real_record_of_the_legacy_task() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), CacheMode::ReadWrite);
    cache.store_result("real".to_owned(), result("real", 0)).unwrap();
    let enhanced = cache.enhanced().clone();
    let (record, stats) = tokio::runtime::Runtime::new().unwrap().block_on(async move {
        let record = enhanced.get_cached_result(&legacy_digest("real")).await.unwrap();
        (record, enhanced.statistics().await.unwrap())
    });
    assert_eq!(record.manifest.task, LEGACY_TASK);
    assert_eq!(record.manifest.command, "real");
    assert_eq!(record.manifest.digest(), legacy_digest("real"));
    assert_eq!(stats.writes, 1);
}

#[test]
fn mode_off_neither_stores_nor_reads() {
    let dir = tempfile::tempdir().unwrap();
    manager(dir.path(), CacheMode::ReadWrite)
        .store_result("old".to_owned(), result("old", 0))
        .unwrap();
    let off = manager(dir.path(), CacheMode::Off);
    off.store_result("new".to_owned(), result("new", 0)).unwrap();
    assert_eq!(off.get_cached_result("old"), None);
    off.shutdown().unwrap();
    assert_eq!(manager(dir.path(), CacheMode::ReadWrite).get_cached_result("new"), None);
}

#[test]
fn mode_read_reads_but_does_not_store() {
    let dir = tempfile::tempdir().unwrap();
    manager(dir.path(), CacheMode::ReadWrite)
        .store_result("old".to_owned(), result("old", 0))
        .unwrap();
    let read = manager(dir.path(), CacheMode::Read);
    assert_eq!(read.get_cached_result("old"), Some(to_millis(result("old", 0))));
    read.store_result("new".to_owned(), result("new", 0)).unwrap();
    assert_eq!(read.get_cached_result("new"), None);
    read.shutdown().unwrap();
    assert_eq!(manager(dir.path(), CacheMode::ReadWrite).get_cached_result("new"), None);
}

#[test]
fn mode_write_stores_but_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let write = manager(dir.path(), CacheMode::Write);
    write.store_result("new".to_owned(), result("new", 0)).unwrap();
    assert_eq!(write.get_cached_result("new"), None);
    write.shutdown().unwrap();
    let check = manager(dir.path(), CacheMode::ReadWrite);
    assert_eq!(check.get_cached_result("new"), Some(to_millis(result("new", 0))));
}

/// The sync API, called from a runtime's own thread: no nested-runtime panic, no deadlock,
/// and dropping the manager there does not panic either.
fn sync_api_from_inside_a_runtime(dir: &Path) {
    let cache = manager(dir, CacheMode::ReadWrite);
    cache.store_result("inside".to_owned(), result("inside", 0)).unwrap();
    assert_eq!(cache.get_cached_result("inside"), Some(to_millis(result("inside", 0))));
    drop(cache);
    let again = manager(dir, CacheMode::ReadWrite);
    assert!(again.get_cached_result("inside").is_some());
    again.shutdown().unwrap();
}

#[tokio::test]
async fn new_sync_works_inside_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    sync_api_from_inside_a_runtime(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sync_works_inside_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    sync_api_from_inside_a_runtime(dir.path());
}

#[tokio::test]
async fn the_sync_api_works_from_a_spawned_task_and_spawn_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let cache = std::sync::Arc::new(manager(dir.path(), CacheMode::ReadWrite));
    let writer = std::sync::Arc::clone(&cache);
    tokio::spawn(async move { writer.store_result("t".to_owned(), result("t", 0)).unwrap() })
        .await
        .unwrap();
    let reader = std::sync::Arc::clone(&cache);
    let got = tokio::task::spawn_blocking(move || reader.get_cached_result("t")).await.unwrap();
    assert_eq!(got, Some(to_millis(result("t", 0))));
}

#[tokio::test]
async fn async_new_then_drop_inside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), CacheMode::ReadWrite)).await.unwrap();
    cache.store_result("async".to_owned(), result("async", 0)).unwrap();
    let started = SystemTime::now();
    drop(cache);
    assert!(started.elapsed().unwrap() < Duration::from_secs(10));
    let again = CacheManager::new(config(dir.path(), CacheMode::ReadWrite)).await.unwrap();
    assert!(again.get_cached_result("async").is_some());
}

#[test]
fn legacy_keys_map_to_distinct_stable_digests() {
    assert_eq!(legacy_digest("a"), legacy_digest("a"));
    assert_ne!(legacy_digest("a"), legacy_digest("b"));
    assert_ne!(legacy_digest(""), legacy_digest(" "));
}
