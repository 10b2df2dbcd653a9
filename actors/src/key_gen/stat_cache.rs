//! The stat cache: reuse a file's hash while its (device, inode, size, mtime, ctime, mode) are
//! unchanged, so a warm key costs a walk and a stat per file instead of a read.
//!
//! # Racy entries
//! Filesystem timestamps advance in coarse ticks, so a file rewritten within the tick in which
//! it was hashed can keep its stamp while its content changes. Like git's "racily clean" rule,
//! an entry is only trusted when the file's mtime and ctime are older than the moment of the
//! stat by more than [`KeyGenSettings::racy_window`](super::KeyGenSettings); newer files are
//! rehashed every time until they settle. On load, entries not older than the time the cache
//! file was written are dropped too.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Digest, envelope, fsio};

const MAGIC: [u8; 4] = *b"CUSC";
const VERSION: u16 = 1;

/// What must stay equal for a cached hash to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    mode: u32,
}

impl FileStamp {
    /// The stamp of `metadata`.
    pub fn of(metadata: &fs::Metadata) -> Self {
        FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: metadata
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.mtime_nsec()),
            ctime_ns: metadata
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.ctime_nsec()),
            mode: metadata.mode(),
        }
    }

    /// Whether the file has been still for longer than `window` before `now_ns`.
    pub(super) fn settled(&self, now_ns: i64, window: Duration) -> bool {
        let window = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        self.mtime_ns.max(self.ctime_ns).saturating_add(window) < now_ns
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Entry {
    stamp: FileStamp,
    hash: Digest,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    written_at_ns: i64,
    entries: Vec<(String, Entry)>,
}

/// The stat cache of one project: in memory, persisted to one file under the cache dir.
#[derive(Debug)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: RwLock<HashMap<String, Entry>>,
    dirty: AtomicBool,
}

/// The wall clock in nanoseconds since the epoch.
pub(super) fn now_ns() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

impl StatCache {
    /// An empty cache that is never persisted.
    pub fn in_memory() -> Self {
        StatCache { file: None, entries: RwLock::default(), dirty: AtomicBool::new(false) }
    }

    /// Loads the cache stored at `file`. A missing file is an empty cache; an unreadable or
    /// corrupt one is set aside (renamed `*.corrupt`) with one warning and starts empty.
    pub fn load(file: PathBuf) -> Self {
        let entries = match fs::read(&file) {
            Ok(bytes) => match decode(&bytes) {
                Ok(entries) => entries,
                Err(reason) => {
                    tracing::warn!(path = %file.display(), %reason, "stat cache is corrupt; rebuilding it");
                    let _ = fs::rename(&file, file.with_extension("corrupt"));
                    HashMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                tracing::warn!(path = %file.display(), %error, "cannot read the stat cache; rebuilding it");
                HashMap::new()
            }
        };
        StatCache { file: Some(file), entries: RwLock::new(entries), dirty: AtomicBool::new(false) }
    }

    /// The cached hash of `path`, if its stamp is unchanged.
    pub fn lookup(&self, path: &str, stamp: &FileStamp) -> Option<Digest> {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(path).filter(|entry| entry.stamp == *stamp).map(|entry| entry.hash)
    }

    /// Records freshly computed hashes; stamps that are not settled at `now_ns` are skipped
    /// (and any older entry for them dropped).
    pub fn record(&self, fresh: Vec<(String, FileStamp, Digest)>, now_ns: i64, window: Duration) {
        if fresh.is_empty() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (path, stamp, hash) in fresh {
            if stamp.settled(now_ns, window) {
                entries.insert(path, Entry { stamp, hash });
            } else {
                entries.remove(&path);
            }
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path and bytes to persist, if anything changed since the last call.
    pub fn take_snapshot(&self) -> Option<(PathBuf, Vec<u8>)> {
        let file = self.file.clone()?;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        let written_at_ns = now_ns();
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let on_disk = OnDisk {
            written_at_ns,
            entries: entries.iter().map(|(path, entry)| (path.clone(), *entry)).collect(),
        };
        drop(entries);
        let payload = postcard::to_allocvec(&on_disk).unwrap_or_default();
        Some((file, envelope::seal(MAGIC, VERSION, &payload)))
    }

    /// Writes the cache to its file if it changed.
    pub fn persist(&self) -> std::io::Result<()> {
        match self.take_snapshot() {
            Some((file, bytes)) => fsio::write_atomic(&file, &bytes, false),
            None => Ok(()),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<HashMap<String, Entry>, String> {
    let payload = envelope::open(MAGIC, VERSION, bytes).map_err(|error| error.to_string())?;
    let on_disk: OnDisk = postcard::from_bytes(payload).map_err(|error| error.to_string())?;
    // An entry whose file changed at or after the moment the cache was written may be racy.
    Ok(on_disk
        .entries
        .into_iter()
        .filter(|(_, entry)| entry.stamp.mtime_ns.max(entry.stamp.ctime_ns) < on_disk.written_at_ns)
        .collect())
}

/// The stat-cache file of `project_root` under `dir`: one file per project, named by a hash of
/// its absolute path.
pub(super) fn file_for(dir: &Path, project_root: &Path) -> PathBuf {
    let id = Digest::of(project_root.as_os_str().as_encoded_bytes());
    dir.join(format!("{}.stat", &id.to_hex()[..32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mtime_ns: i64, ctime_ns: i64) -> FileStamp {
        FileStamp { dev: 1, ino: 2, size: 3, mtime_ns, ctime_ns, mode: 0o644 }
    }

    #[test]
    fn only_settled_stamps_are_trusted() {
        let cache = StatCache::in_memory();
        let now = 10_000_000_000;
        let window = Duration::from_secs(1);
        let hash = Digest::of(b"x");
        // Changed 10 ms before the stat: a rewrite in the same timestamp tick could keep this
        // stamp, so the hash must not be reused.
        cache.record(
            vec![("racy".into(), stamp(now - 10_000_000, now - 20_000_000), hash)],
            now,
            window,
        );
        assert_eq!(cache.lookup("racy", &stamp(now - 10_000_000, now - 20_000_000)), None);
        // A recent ctime (chmod, rename) is just as racy as a recent mtime.
        cache.record(
            vec![("ctime".into(), stamp(now - 5_000_000_000, now - 1), hash)],
            now,
            window,
        );
        assert_eq!(cache.lookup("ctime", &stamp(now - 5_000_000_000, now - 1)), None);
        cache.record(
            vec![("old".into(), stamp(now - 5_000_000_000, now - 4_000_000_000), hash)],
            now,
            window,
        );
        assert_eq!(
            cache.lookup("old", &stamp(now - 5_000_000_000, now - 4_000_000_000)),
            Some(hash)
        );
        assert_eq!(cache.lookup("old", &stamp(now - 5_000_000_000, now - 3_000_000_000)), None);
    }

    #[test]
    fn entries_not_older_than_the_write_are_dropped_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.stat");
        let hash = Digest::of(b"x");
        let written_at_ns = 50;
        let on_disk = OnDisk {
            written_at_ns,
            entries: vec![
                ("before".into(), Entry { stamp: stamp(10, 20), hash }),
                ("same".into(), Entry { stamp: stamp(10, 50), hash }),
                ("after".into(), Entry { stamp: stamp(60, 20), hash }),
            ],
        };
        let bytes = envelope::seal(MAGIC, VERSION, &postcard::to_allocvec(&on_disk).unwrap());
        fs::write(&file, bytes).unwrap();
        let cache = StatCache::load(file);
        assert_eq!(cache.lookup("before", &stamp(10, 20)), Some(hash));
        assert_eq!(cache.len(), 1);
    }
}
