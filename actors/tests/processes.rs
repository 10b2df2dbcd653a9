//! Issue 3: the disk tier across real processes. Writers SIGKILLed mid-write leave a store
//! where every key is a miss or an exact hit; eight processes reading, writing and collecting
//! one cache directory never see a wrong byte; two processes publishing the same blob and record
//! at the same moment both succeed.
//!
//! The processes run `cuenv-store-stress` (`src/bin/cuenv-store-stress.rs`). This file includes
//! that source as a module, so the test and the tool agree on what each key must read back as.

#![allow(clippy::print_stderr, reason = "the tests report what the children did")]

#[path = "../src/bin/cuenv-store-stress.rs"]
#[allow(dead_code, reason = "the tool's `main` and subcommands are not called from here")]
mod stress;

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cuenv_actors::disk::{DiskStore, GcTarget};
use stress::{Checked, KEYS};

const TOOL: &str = env!("CARGO_BIN_EXE_cuenv-store-stress");

fn spawn(args: &[&str]) -> Child {
    Command::new(TOOL)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cuenv-store-stress")
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stdout}\n{stderr}", output.status);
    stdout
}

/// Waits `duration` while a child runs. A test may sleep; the library may not.
#[allow(clippy::disallowed_methods, reason = "the child runs for a chosen time, then is killed")]
fn let_run(duration: Duration) {
    std::thread::sleep(duration);
}

/// Checks keys `keys`: each must be a miss or an exact hit (`vanished` is never right when no
/// process is running). Returns (hits, misses).
fn check_all(store: &DiskStore, keys: impl Iterator<Item = u64>, restore: &Path) -> (u64, u64) {
    let (mut hits, mut misses) = (0, 0);
    for n in keys {
        match stress::check_key(store, n, restore) {
            Ok(Checked::Exact) => hits += 1,
            Ok(Checked::Miss) => misses += 1,
            other => panic!("k{n}: {other:?}"),
        }
    }
    (hits, misses)
}

fn temp_files(cache: &Path) -> usize {
    fs::read_dir(cache.join("v1/tmp")).map_or(0, |entries| entries.count())
}

/// SIGKILLs `write-loop` at random moments; after each kill every key must read as a miss or
/// exactly right. At the end the store takes a fresh write of every key, and a gc (with every
/// file aged past an hour) sweeps exactly the torn temp files and nothing else.
#[test]
fn killed_writers_leave_only_misses_or_exact_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, restore) = (dir.path().join("cache"), dir.path().join("restore"));
    let mut rng = fastrand::Rng::with_seed(3);
    let (mut torn_kills, mut hits, mut misses) = (0, 0, 0);
    for iteration in 0..60u64 {
        let temps_before = temp_files(&cache);
        let mut child = spawn(&["write-loop", cache.to_str().unwrap(), &iteration.to_string()]);
        let run_ms = if iteration % 12 == 11 { rng.u64(150..300) } else { rng.u64(5..60) };
        let_run(Duration::from_millis(run_ms));
        assert!(child.try_wait().unwrap().is_none(), "write-loop exited on its own");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // Nothing sweeps temp files this young: a new one is a write the kill cut short.
        if temp_files(&cache) > temps_before {
            torn_kills += 1;
        }
        let store = stress::open(&cache).unwrap();
        let (h, m) = check_all(&store, 0..KEYS, &restore);
        (hits, misses) = (hits + h, misses + m);
    }
    let leftover = temp_files(&cache);
    eprintln!(
        "60 kills, {torn_kills} mid-write ({leftover} temp files left); \
         after them {hits} exact hits and {misses} misses"
    );
    assert!(torn_kills > 0, "no kill landed mid-write");
    assert!(hits > 0 && misses > 0, "{hits} hits, {misses} misses");
    still_usable_after_kills(&cache, &restore, leftover);
}

fn still_usable_after_kills(cache: &Path, restore: &Path, leftover: usize) {
    let store = stress::open(cache).unwrap();
    let scratch = cache.join("test-scratch");
    fs::create_dir_all(&scratch).unwrap();
    for n in 0..KEYS {
        stress::write_key(&store, n, &scratch).unwrap();
    }
    assert_eq!(check_all(&store, 0..KEYS, restore), (KEYS, 0));
    let long_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    let layout = store.layout();
    let files = [stress::store_files(&layout.ac()), stress::store_files(&layout.cas())];
    let temps = fs::read_dir(layout.tmp()).unwrap().map(|entry| entry.unwrap().path());
    for path in files.into_iter().flatten().chain(temps) {
        File::open(path).unwrap().set_modified(long_ago).unwrap();
    }
    let report = store.gc(GcTarget { max_size: u64::MAX, max_age: None }).unwrap();
    assert_eq!(report.temps_swept, leftover as u64, "{report:?}");
    assert_eq!(
        (report.records_evicted, report.blobs_removed, report.corrupt_removed),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(temp_files(cache), 0);
    assert_eq!(check_all(&store, 0..KEYS, restore), (KEYS, 0));
}

/// Eight `mixed` processes share one cache directory and key space for ten seconds: every hit
/// any of them reads is verified byte for byte, and afterwards every key is a miss or exact.
#[test]
fn eight_processes_share_one_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, restore) = (dir.path().join("cache"), dir.path().join("restore"));
    let started = Instant::now();
    let children: Vec<Child> = (1..=8u64)
        .map(|seed| spawn(&["mixed", cache.to_str().unwrap(), &seed.to_string(), "10"]))
        .collect();
    let summaries: Vec<String> =
        children.into_iter().map(|child| succeeded(&child.wait_with_output().unwrap())).collect();
    eprintln!("{:?}:\n{}", started.elapsed(), summaries.join("\n"));
    let total = |field: &str| -> u64 {
        let prefix = format!("{field}=");
        summaries
            .iter()
            .flat_map(|line| line.split(' '))
            .filter_map(|pair| pair.strip_prefix(&prefix))
            .map(|value| value.parse::<u64>().unwrap())
            .sum()
    };
    assert!(total("hits") > 0 && total("writes") > 0, "nothing was read back");
    assert!(total("evicted") > 0, "gc never evicted while others read and wrote");
    let store = stress::open(&cache).unwrap();
    let (hits, misses) = check_all(&store, 0..KEYS, &restore);
    eprintln!("afterwards: {hits} hits, {misses} misses");
}

/// Two processes publish keys 1000.. in lockstep, each writing the same blobs (small and large)
/// and the same record at the same moment; both succeed and read back exact hits every round.
#[test]
fn two_processes_publishing_the_same_blob_and_record_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, restore) = (dir.path().join("cache"), dir.path().join("restore"));
    const ROUNDS: u64 = 300;
    let cache_arg = cache.to_str().unwrap();
    let rounds = ROUNDS.to_string();
    let children =
        [spawn(&["same", cache_arg, "0", &rounds]), spawn(&["same", cache_arg, "1", &rounds])];
    for child in children {
        let summary = succeeded(&child.wait_with_output().unwrap());
        assert!(summary.ends_with(&format!("exact={ROUNDS}")), "{summary}");
    }
    let store = stress::open(&cache).unwrap();
    assert_eq!(check_all(&store, 1000..1000 + ROUNDS, &restore), (ROUNDS, 0));
    assert_eq!(temp_files(&cache), 0, "a writer left a temp file behind");
}

/// gc must not lose a record written while it runs when the record reuses an old blob.
///
/// gc scans the blobs' ages, then evicts old records and removes each blob whose last indexed
/// record went. A writer that reuses such a blob touches it (under `gc.lock`, shared) and then
/// publishes a record gc's index does not know. gc removes files only under `gc.lock`
/// (exclusive) and re-checks each blob's age first, so the reused blob stays and the new record
/// stays whole. Two stores on one directory stand for two processes.
#[test]
fn gc_keeps_an_old_blob_reused_by_a_record_written_during_the_gc() {
    let mut lost_in = None;
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let (cache, scratch) = (dir.path().join("cache"), dir.path().join("scratch"));
        fs::create_dir_all(&scratch).unwrap();
        let (writer, collector) = (stress::open(&cache).unwrap(), stress::open(&cache).unwrap());
        // Every key hours old, so gc with a zero target evicts them all.
        for n in 0..KEYS {
            stress::write_key(&writer, n, &scratch).unwrap();
        }
        writer.flush().unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        let layout = writer.layout();
        for path in [stress::store_files(&layout.ac()), stress::store_files(&layout.cas())]
            .into_iter()
            .flatten()
        {
            File::open(path).unwrap().set_modified(long_ago).unwrap();
        }
        // A new key: fresh blobs, plus the blob every key shares, touched as it is reused.
        let n = 5000 + round;
        stress::large_source(n, &scratch).unwrap();
        let lost = std::thread::scope(|scope| {
            let gc = scope.spawn(|| collector.gc(GcTarget { max_size: 0, max_age: None }));
            let written = stress::write_key(&writer, n, &scratch);
            gc.join().unwrap().unwrap();
            match written {
                Ok(_) => stress::check_key(&writer, n, &scratch).unwrap() != Checked::Exact,
                Err(error) => {
                    assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
                    true
                }
            }
        });
        if lost {
            lost_in = Some(round);
            break;
        }
    }
    assert_eq!(lost_in, None, "a record written during gc was lost");
}

#[test]
fn a_process_short_of_files_reads_a_miss_and_leaves_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = stress::open(&cache).unwrap();
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    stress::write_key(&store, 1, &scratch).unwrap();
    let stored =
        || [cache.join("v1/ac"), cache.join("v1/cas")].map(|dir| stress::store_files(&dir));
    let files = stored();
    assert!(files.iter().all(|files| !files.is_empty()));
    let output = spawn(&["short-of-files", cache.to_str().unwrap()]).wait_with_output().unwrap();
    // Out of descriptors, the record and its blob could not be opened: a miss, nothing
    // removed (it was "damaged" before, and the entry lost); with descriptors back, a hit.
    assert_eq!(succeeded(&output), "record Miss, blob Missing; then Exact");
    assert_eq!(stored(), files);
}
