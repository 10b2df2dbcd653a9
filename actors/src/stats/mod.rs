//! Cache statistics: counters, and their persistence in daily buckets under the cache dir.
//!
//! Each process accumulates its own counters and merges them into the bucket of the day (UTC)
//! under a lock (readers take it shared), so several processes sharing a cache dir add up
//! instead of overwriting each other, and `cache stats` in another process reads the sum. A
//! bucket is created whole and then updated in place. Buckets older than the retention
//! window are pruned. A damaged bucket is set aside with one warning and counting restarts; it
//! never fails a run.

mod actor;

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsio;

pub use actor::StatsHandle;

/// The counters of one process or one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Lookups (each task key looked up once).
    pub lookups: u64,
    /// Hits served by the memory tier.
    pub hits_memory: u64,
    /// Hits served by the disk tier.
    pub hits_disk: u64,
    /// Hits served by the remote cache.
    pub hits_remote: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Damaged entries found (each also counted as a miss).
    pub corrupt: u64,
    /// Results stored.
    pub writes: u64,
    /// Bytes stored (records and new blobs).
    pub bytes_written: u64,
    /// Records evicted.
    pub evictions: u64,
    /// Bytes freed by eviction.
    pub bytes_evicted: u64,
    /// Sum of the recorded durations of every hit: the time the cache saved.
    pub time_saved_ms: u64,
    /// Tasks executed (misses and uncached tasks).
    pub executions: u64,
    /// Remote lookups that missed.
    pub remote_misses: u64,
    /// Remote calls that failed (after retries) or were skipped by the circuit breaker.
    pub remote_errors: u64,
    /// Results uploaded to the remote.
    pub remote_uploads: u64,
    /// Bytes sent to the remote.
    pub remote_bytes_up: u64,
    /// Bytes received from the remote.
    pub remote_bytes_down: u64,
}

impl Counters {
    /// Hits from every tier.
    pub fn hits(&self) -> u64 {
        self.hits_memory + self.hits_disk + self.hits_remote
    }

    /// hits / lookups, or 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 { 0.0 } else { self.hits() as f64 / self.lookups as f64 }
    }

    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Counters) {
        let Counters {
            lookups,
            hits_memory,
            hits_disk,
            hits_remote,
            misses,
            corrupt,
            writes,
            bytes_written,
            evictions,
            bytes_evicted,
            time_saved_ms,
            executions,
            remote_misses,
            remote_errors,
            remote_uploads,
            remote_bytes_up,
            remote_bytes_down,
        } = *other;
        self.lookups += lookups;
        self.hits_memory += hits_memory;
        self.hits_disk += hits_disk;
        self.hits_remote += hits_remote;
        self.misses += misses;
        self.corrupt += corrupt;
        self.writes += writes;
        self.bytes_written += bytes_written;
        self.evictions += evictions;
        self.bytes_evicted += bytes_evicted;
        self.time_saved_ms += time_saved_ms;
        self.executions += executions;
        self.remote_misses += remote_misses;
        self.remote_errors += remote_errors;
        self.remote_uploads += remote_uploads;
        self.remote_bytes_up += remote_bytes_up;
        self.remote_bytes_down += remote_bytes_down;
    }

    /// Whether every counter is zero.
    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }
}

/// The oldest day (`YYYY-MM-DD`) a retention of `retention_days` keeps at `now`: today counts
/// as one of them.
pub fn oldest_kept_day(now: SystemTime, retention_days: u32) -> String {
    let days_back = u64::from(retention_days.max(1) - 1);
    day_of(now - std::time::Duration::from_secs(86_400 * days_back))
}

/// A UTC calendar day as `YYYY-MM-DD`.
pub fn day_of(time: SystemTime) -> String {
    let days = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The daily buckets of one cache dir.
#[derive(Debug, Clone)]
pub struct StatsStore {
    dir: PathBuf,
}

impl StatsStore {
    /// Buckets under `dir` (the layout's stats directory).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StatsStore { dir: dir.into() }
    }

    fn bucket(&self, day: &str) -> PathBuf {
        self.dir.join(format!("{day}.json"))
    }

    /// Adds `delta` to the bucket of `day`, under a lock shared with every other process.
    pub fn merge(&self, day: &str, delta: &Counters) -> io::Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let _lock = fsio::lock_file(&self.dir.join(".lock"), true)?;
        let path = self.bucket(day);
        // The day's bucket is created whole (temp file and rename), then updated in place: one
        // small write at offset 0, padded with JSON whitespace to cover the old text, so a run
        // does not replace a file (a new inode) just to count its hits. Readers take the lock.
        let mut existing = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => Some(file),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let mut old = Vec::new();
        if let Some(file) = &mut existing {
            file.read_to_end(&mut old)?;
        }
        let mut total = match existing {
            Some(_) => self.parse_bucket(&path, &old),
            None => Counters::default(),
        };
        total.add(delta);
        let mut bytes = serde_json::to_vec_pretty(&total).map_err(io::Error::other)?;
        match existing {
            // Still in place (not set aside as damaged): overwrite it.
            Some(file) if path.exists() => {
                if bytes.len() < old.len() {
                    bytes.resize(old.len(), b' ');
                }
                file.write_all_at(&bytes, 0)
            }
            _ => fsio::write_atomic(&path, &bytes, false),
        }
    }

    /// Takes the shared lock for reading buckets, when any writer ever made the lock file.
    fn read_lock(&self) -> Option<fs::File> {
        let lock = fs::File::open(self.dir.join(".lock")).ok()?;
        lock.lock_shared().ok()?;
        Some(lock)
    }

    fn read_bucket(&self, path: &Path) -> Counters {
        match fs::read(path) {
            Ok(bytes) => self.parse_bucket(path, &bytes),
            Err(_) => Counters::default(),
        }
    }

    fn parse_bucket(&self, path: &Path, bytes: &[u8]) -> Counters {
        match serde_json::from_slice(bytes) {
            Ok(counters) => counters,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "statistics bucket is damaged; setting it aside");
                let _ = fs::rename(path, path.with_extension("corrupt"));
                Counters::default()
            }
        }
    }

    /// Every bucket, oldest first, as (day, counters).
    pub fn days(&self) -> Vec<(String, Counters)> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        let _lock = self.read_lock();
        let mut days: Vec<(String, Counters)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.strip_suffix(".json")?.to_owned();
                is_day(&name).then(|| (name, self.read_bucket(&entry.path())))
            })
            .collect();
        days.sort_by(|a, b| a.0.cmp(&b.0));
        days
    }

    /// Removes buckets of days before `oldest_kept` (`YYYY-MM-DD`). Returns how many went.
    pub fn prune_before(&self, oldest_kept: &str) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else { return 0 };
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let Some(day) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    return false;
                };
                is_day(day) && day < oldest_kept && fs::remove_file(entry.path()).is_ok()
            })
            .count()
    }
}

fn is_day(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes.iter().enumerate().all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(day_of(UNIX_EPOCH), "1970-01-01");
        assert_eq!(day_of(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29");
        assert_eq!(day_of(UNIX_EPOCH + Duration::from_secs(1_795_996_799)), "2026-11-29");
        assert_eq!(day_of(UNIX_EPOCH + Duration::from_secs(1_795_996_800)), "2026-11-30");
    }

    #[test]
    fn buckets_add_up_across_writers_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let first = StatsStore::new(dir.path());
        let second = StatsStore::new(dir.path());
        let delta = Counters {
            lookups: 3,
            hits_disk: 2,
            misses: 1,
            time_saved_ms: 500,
            ..Counters::default()
        };
        first.merge("2026-11-01", &delta).unwrap();
        second.merge("2026-11-01", &delta).unwrap();
        second.merge("2026-11-02", &delta).unwrap();
        let days = first.days();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].1.lookups, 6);
        assert_eq!(days[0].1.time_saved_ms, 1000);
        assert!((days[0].1.hit_rate() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(first.prune_before("2026-11-02"), 1);
        assert_eq!(first.days().len(), 1);
    }

    #[test]
    fn a_bucket_is_updated_in_place_and_a_shorter_text_is_padded() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = StatsStore::new(dir.path());
        let path = dir.path().join("2026-11-04.json");
        // A bucket written more verbosely than the writer would: the update is shorter.
        let verbose = format!("{{ \"lookups\": 7,{} \"hits_disk\": 7 }}", " ".repeat(4000));
        fs::write(&path, verbose).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let delta = Counters { lookups: 1, ..Counters::default() };
        store.merge("2026-11-04", &delta).unwrap();
        store.merge("2026-11-04", &delta).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(
            store.days(),
            [(
                "2026-11-04".to_owned(),
                Counters { lookups: 9, hits_disk: 7, ..Counters::default() }
            )]
        );
    }

    #[test]
    fn a_damaged_bucket_is_set_aside_and_counting_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = StatsStore::new(dir.path());
        fs::write(dir.path().join("2026-11-03.json"), "{ not json").unwrap();
        store.merge("2026-11-03", &Counters { writes: 1, ..Counters::default() }).unwrap();
        assert_eq!(
            store.days(),
            [("2026-11-03".to_owned(), Counters { writes: 1, ..Counters::default() })]
        );
        assert!(dir.path().join("2026-11-03.corrupt").exists());
    }
}
