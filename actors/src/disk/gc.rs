//! Eviction and garbage collection.
//!
//! Under the exclusive index lock (one gc at a time across processes, journal appends wait):
//! fold the journal into the index, reconcile the index with the files (records it does not
//! know are decoded and added; entries whose record is gone are dropped; damaged records are
//! removed), sweep temp files older than an hour and orphan blobs, then evict records in policy
//! order until the store fits, removing each blob when its last record goes.
//!
//! Architecture Invariant: nothing written in the last [`GRACE`] is removed. A writer touches a
//! blob it reuses and writes its record within seconds, so a blob that a fresh record names is
//! never collected under it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::index::{self, Entry, Index};
use super::layout::Layout;
use super::{DiskStore, EvictionPolicy, RecordDamage, decode_record, now_ms};
use crate::{Digest, fsio};

/// Records and blobs younger than this are never evicted.
pub const GRACE: Duration = Duration::from_secs(60);
/// Temp files and unreferenced blobs older than this are always swept.
pub const ABANDONED: Duration = Duration::from_secs(3600);

/// What gc should achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcTarget {
    /// Evict until the store is at or under this many bytes.
    pub max_size: u64,
    /// Also evict every record not read (or written) for this long.
    pub max_age: Option<Duration>,
}

/// What gc did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Records evicted.
    pub records_evicted: u64,
    /// Blobs removed (last reference evicted, or orphaned).
    pub blobs_removed: u64,
    /// Bytes freed by evictions and sweeps.
    pub bytes_freed: u64,
    /// Abandoned temp files removed.
    pub temps_swept: u64,
    /// Damaged records found and removed.
    pub corrupt_removed: u64,
    /// Bytes stored before.
    pub size_before: u64,
    /// Bytes stored after.
    pub size_after: u64,
    /// The digests of evicted records, in eviction order.
    pub evicted: Vec<Digest>,
    /// Records that would have been evicted but were written less than [`GRACE`] ago.
    pub kept_recent: u64,
}

/// A file found by a scan: size and age.
#[derive(Debug, Clone, Copy)]
struct Found {
    size: u64,
    age: Duration,
}

pub(super) fn run(store: &DiskStore, target: GcTarget) -> io::Result<GcReport> {
    let layout = store.layout();
    let _lock = index::lock_index(layout)?;
    let mut report = GcReport::default();
    let mut index = index::load_index(layout);
    index::apply(&mut index, index::read_journal(layout));
    let records = scan(&layout.ac(), &mut report)?;
    reconcile(layout, &mut index, &records, &mut report);
    let mut blobs = scan(&layout.cas(), &mut report)?;
    sweep_temps(&layout.tmp(), &mut report);

    // Writers hold this shared while they reuse or publish a blob; removals happen under it
    // exclusively, each after a fresh look at the file's age.
    let _removals = lock_removals(layout)?;
    remove_broken(layout, &mut index, &records, &blobs, &mut report);
    let mut refs: HashMap<Digest, u32> = HashMap::new();
    for entry in index.values() {
        for (blob, _) in &entry.blobs {
            *refs.entry(*blob).or_default() += 1;
        }
    }
    let mut total: u64 = records.values().chain(blobs.values()).map(|found| found.size).sum();
    report.size_before = total;
    total = total.saturating_sub(report.bytes_freed);

    // Orphans: always after an hour, after the grace period when space is needed.
    let orphans: Vec<Digest> = blobs
        .iter()
        .filter(|(digest, found)| {
            !refs.contains_key(digest)
                && (found.age > ABANDONED || (total > target.max_size && found.age > GRACE))
        })
        .map(|(digest, _)| *digest)
        .collect();
    for digest in orphans {
        remove_blob(layout, &mut blobs, &digest, &mut total, &mut report);
    }

    for digest in eviction_order(&index, &records, store.settings().policy, target.max_age) {
        let (expired, record_age) = {
            let entry = &index[&digest];
            (
                target.max_age.is_some_and(|age| age_of(entry.last_access_ms) >= age),
                records[&digest].age,
            )
        };
        if !(expired || total > target.max_size) {
            continue;
        }
        if record_age <= GRACE {
            report.kept_recent += 1;
            continue;
        }
        let Some(entry) = index.remove(&digest) else { continue };
        if fs::remove_file(layout.record(&digest)).is_ok() {
            total = total.saturating_sub(records[&digest].size);
            report.bytes_freed += records[&digest].size;
        }
        report.records_evicted += 1;
        report.evicted.push(digest);
        for (blob, _) in &entry.blobs {
            let count = refs.entry(*blob).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 && blobs.get(blob).is_some_and(|found| found.age > GRACE) {
                remove_blob(layout, &mut blobs, blob, &mut total, &mut report);
            }
        }
    }
    report.size_after = total;
    index::store_index(layout, &index)?;
    index::write_usage(layout, total)?;
    Ok(report)
}

/// Folds the journal into the index without scanning the store.
pub(super) fn compact(layout: &Layout) -> io::Result<()> {
    let _lock = index::lock_index(layout)?;
    let mut index = index::load_index(layout);
    index::apply(&mut index, index::read_journal(layout));
    index::store_index(layout, &index)
}

/// Makes the index agree with the record files.
fn reconcile(
    layout: &Layout,
    index: &mut Index,
    records: &HashMap<Digest, Found>,
    report: &mut GcReport,
) {
    index.retain(|digest, _| records.contains_key(digest));
    for (digest, found) in records {
        if let Some(entry) = index.get_mut(digest) {
            entry.record_size = found.size;
            continue;
        }
        let path = layout.record(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Gone since the scan (another gc, or a reader that found it broken): not damage.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => Vec::from(error.to_string()),
        };
        let decoded = decode_record(&bytes);
        match decoded {
            Ok(result) => {
                let written_ms = now_ms().saturating_sub(found.age.as_millis() as u64);
                let blobs = result.blobs().collect();
                let entry = Entry {
                    written_ms,
                    last_access_ms: written_ms,
                    hits: 0,
                    record_size: found.size,
                    blobs,
                };
                index.insert(*digest, entry);
            }
            // An older format's record is garbage (no key reaches it); a newer one's belongs
            // to a newer cuenv sharing this directory.
            Err(RecordDamage::OtherVersion { older }) => {
                if older {
                    let _ = fs::remove_file(&path);
                }
            }
            Err(RecordDamage::Damaged(reason)) => {
                tracing::warn!(path = %path.display(), %reason, "removed a damaged cache record during gc");
                let _ = fs::remove_file(&path);
                report.corrupt_removed += 1;
            }
        }
    }
}

/// Records in the order the policy evicts them; expired ones first.
fn eviction_order(
    index: &Index,
    records: &HashMap<Digest, Found>,
    policy: EvictionPolicy,
    max_age: Option<Duration>,
) -> Vec<Digest> {
    let mut order: Vec<(&Digest, &Entry)> =
        index.iter().filter(|(digest, _)| records.contains_key(digest)).collect();
    let expired = |entry: &Entry| max_age.is_some_and(|age| age_of(entry.last_access_ms) >= age);
    order.sort_by(|(da, a), (db, b)| {
        let by_policy = match policy {
            EvictionPolicy::Lru => a.last_access_ms.cmp(&b.last_access_ms),
            EvictionPolicy::Lfu => {
                a.hits.cmp(&b.hits).then(a.last_access_ms.cmp(&b.last_access_ms))
            }
            EvictionPolicy::Fifo => a.written_ms.cmp(&b.written_ms),
            EvictionPolicy::SizeBased => b.total_size().cmp(&a.total_size()),
        };
        expired(b).cmp(&expired(a)).then(by_policy).then(da.cmp(db))
    });
    order.into_iter().map(|(digest, _)| *digest).collect()
}

fn age_of(at_ms: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(at_ms))
}

/// Removes records (older than the grace period) that name a blob no longer stored: they can
/// only ever read as misses.
fn remove_broken(
    layout: &Layout,
    index: &mut Index,
    records: &HashMap<Digest, Found>,
    blobs: &HashMap<Digest, Found>,
    report: &mut GcReport,
) {
    let broken: Vec<Digest> = index
        .iter()
        .filter(|(digest, entry)| {
            records.get(digest).is_some_and(|found| found.age > GRACE)
                && entry.blobs.iter().any(|(blob, _)| !blobs.contains_key(blob))
        })
        .map(|(digest, _)| *digest)
        .collect();
    for digest in broken {
        let path = layout.record(&digest);
        if current_age(&path).is_some_and(|age| age > GRACE) && fs::remove_file(&path).is_ok() {
            index.remove(&digest);
            report.bytes_freed += records[&digest].size;
            report.records_evicted += 1;
            report.evicted.push(digest);
        }
    }
}

fn lock_removals(layout: &Layout) -> io::Result<fs::File> {
    fsio::lock_file(&layout.gc_lock(), true)
}

/// The age of a file now (not as scanned): a writer may have touched it since.
fn current_age(path: &Path) -> Option<Duration> {
    let modified = fs::metadata(path).and_then(|metadata| metadata.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn remove_blob(
    layout: &Layout,
    blobs: &mut HashMap<Digest, Found>,
    digest: &Digest,
    total: &mut u64,
    report: &mut GcReport,
) {
    let path = layout.blob(digest);
    // A writer may have reused (touched) it since the scan.
    if current_age(&path).is_some_and(|age| age <= GRACE) {
        blobs.remove(digest);
        return;
    }
    if let Some(found) = blobs.remove(digest)
        && fs::remove_file(&path).is_ok()
    {
        *total = total.saturating_sub(found.size);
        report.bytes_freed += found.size;
        report.blobs_removed += 1;
    }
}

/// Every digest-named file in the shard directories of `dir`; abandoned temp files found there
/// are swept.
fn scan(dir: &Path, report: &mut GcReport) -> io::Result<HashMap<Digest, Found>> {
    let mut found = HashMap::new();
    let now = SystemTime::now();
    for shard in fs::read_dir(dir)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let Ok(metadata) = entry.metadata() else { continue };
            let age = metadata
                .modified()
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .unwrap_or_default();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match name.parse::<Digest>() {
                Ok(digest) => {
                    found.insert(digest, Found { size: metadata.len(), age });
                }
                Err(_) if fsio::is_temp_name(&name) && age > ABANDONED => {
                    if fs::remove_file(entry.path()).is_ok() {
                        report.temps_swept += 1;
                    }
                }
                Err(_) => {}
            }
        }
    }
    Ok(found)
}

/// Removes temp files older than an hour (writers that died before their rename).
fn sweep_temps(dir: &Path, report: &mut GcReport) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age > ABANDONED);
        if old && fs::remove_file(entry.path()).is_ok() {
            report.temps_swept += 1;
        }
    }
}
