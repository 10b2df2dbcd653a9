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
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::envelope::EnvelopeError;
use crate::{Digest, envelope, fsio};

const MAGIC: [u8; 4] = *b"CUSC";
const VERSION: u16 = 2;

/// What must stay equal for a cached hash to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    stamp: FileStamp,
    hash: Digest,
}

/// Bytes of one stored record: key, stamp (dev, ino, size, mtime, ctime, mode) and hash.
const RECORD_LEN: usize = 8 + 8 + 8 + 8 + 8 + 8 + 4 + 32;

/// The key of a project-relative path: a stable 64-bit FNV-1a hash, so that loading the file
/// allocates nothing per entry. Two paths that share a key can only share an answer if they also
/// share a stamp, device and inode included: the same file, with the same content.
fn key_of(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The records of a stat-cache file, searched where they lie in the bytes read: loading costs
/// one read and one checksum, whatever the number of entries.
#[derive(Debug, Default)]
struct Loaded {
    /// The whole file, its envelope checked and its records found in key order.
    bytes: Vec<u8>,
    written_at_ns: i64,
}

impl Loaded {
    /// Checks a file's bytes: the envelope, whole records, keys strictly increasing.
    fn new(bytes: Vec<u8>) -> Result<Self, Damage> {
        let payload = envelope::open(MAGIC, VERSION, &bytes).map_err(|error| match error {
            EnvelopeError::UnknownVersion { .. } => Damage::OtherVersion,
            error => Damage::Corrupt(error.to_string()),
        })?;
        let Some(written_at) = payload.get(..8) else {
            return Err(Damage::Corrupt("payload shorter than its header".to_owned()));
        };
        let records = payload.len() - 8;
        if records % RECORD_LEN != 0 {
            return Err(Damage::Corrupt(format!(
                "{records} record bytes is not a whole number of records"
            )));
        }
        let written_at_ns = i64::from_le_bytes(written_at.try_into().unwrap_or_default());
        let loaded = Loaded { bytes, written_at_ns };
        let in_order = (1..loaded.len()).all(|at| loaded.key(at - 1) < loaded.key(at));
        if !in_order {
            return Err(Damage::Corrupt("records out of order".to_owned()));
        }
        Ok(loaded)
    }

    fn len(&self) -> usize {
        self.bytes.len().saturating_sub(envelope::HEADER_LEN + 8) / RECORD_LEN
    }

    fn record(&self, at: usize) -> &[u8] {
        let start = envelope::HEADER_LEN + 8 + at * RECORD_LEN;
        &self.bytes[start..start + RECORD_LEN]
    }

    fn key(&self, at: usize) -> u64 {
        Fields(self.record(at)).u64()
    }

    /// The entry of record `at`, unless its file changed at or after the moment the cache was
    /// written: such an entry may be racy.
    fn entry(&self, at: usize) -> Option<Entry> {
        let mut fields = Fields(&self.record(at)[8..]);
        let stamp = FileStamp {
            dev: fields.u64(),
            ino: fields.u64(),
            size: fields.u64(),
            mtime_ns: fields.u64() as i64,
            ctime_ns: fields.u64() as i64,
            mode: fields.u32(),
        };
        let hash = Digest(fields.0.try_into().unwrap_or_default());
        (stamp.mtime_ns.max(stamp.ctime_ns) < self.written_at_ns).then_some(Entry { stamp, hash })
    }

    /// Keys are FNV hashes, spread evenly over `u64`, so a key's record lies near
    /// `key / 2^64 * len`: a small window around that guess is bracketed first (widened until it
    /// holds the key's place), then searched, which touches a few neighbouring cache lines
    /// instead of a dozen scattered ones.
    fn get(&self, key: u64) -> Option<Entry> {
        let len = self.len();
        if len == 0 {
            return None;
        }
        let guess = ((u128::from(key) * len as u128) >> 64) as usize;
        let mut span = 8;
        let (mut low, mut high) = loop {
            let low = guess.saturating_sub(span);
            let high = guess.saturating_add(span).saturating_add(1).min(len);
            let from_below = low == 0 || self.key(low) <= key;
            let from_above = high == len || self.key(high - 1) >= key;
            if from_below && from_above {
                break (low, high);
            }
            span = span.saturating_mul(8);
        };
        while low < high {
            let middle = low + (high - low) / 2;
            match self.key(middle).cmp(&key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return self.entry(middle),
            }
        }
        None
    }
}

/// Why a stat-cache file is not used.
enum Damage {
    /// Written by another format version: replaced without a word.
    OtherVersion,
    Corrupt(String),
}

/// The entries: those loaded from the file and the changes since.
#[derive(Debug, Default)]
struct Entries {
    loaded: Loaded,
    /// Recorded (`Some`) or dropped (`None`) since the load.
    changed: HashMap<u64, Option<Entry>, BuildHasherDefault<KeyHasher>>,
}

/// Hashes a key that is itself a hash: the identity.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl Entries {
    fn get(&self, key: u64) -> Option<Entry> {
        if !self.changed.is_empty()
            && let Some(changed) = self.changed.get(&key)
        {
            return *changed;
        }
        self.loaded.get(key)
    }

    /// Every live entry, sorted by key.
    fn merged(&self) -> Vec<(u64, Entry)> {
        let loaded = (0..self.loaded.len())
            .map(|at| (self.loaded.key(at), at))
            .filter(|(key, _)| !self.changed.contains_key(key))
            .filter_map(|(key, at)| Some((key, self.loaded.entry(at)?)));
        let changed = self.changed.iter().filter_map(|(key, entry)| Some((*key, (*entry)?)));
        let mut merged: Vec<(u64, Entry)> = loaded.chain(changed).collect();
        merged.sort_unstable_by_key(|(key, _)| *key);
        merged
    }
}

/// The stat cache of one project: in memory, persisted to one file under the cache dir.
///
/// Its paths are project-relative, the namespace of both input files and recorded outputs:
/// a restore that finds an output already in place records its stamp here too.
pub struct StatCache {
    file: Option<PathBuf>,
    /// How long a file must have been still before its hash is kept.
    window: Duration,
    entries: RwLock<Entries>,
    dirty: AtomicBool,
}

/// The wall clock in nanoseconds since the epoch.
pub(super) fn now_ns() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("file", &self.file)
            .field("window", &self.window)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl StatCache {
    /// An empty cache that is never persisted.
    pub fn in_memory(window: Duration) -> Self {
        StatCache { file: None, window, entries: RwLock::default(), dirty: AtomicBool::new(false) }
    }

    /// Loads the cache stored at `file`. A missing file is an empty cache; an unreadable or
    /// corrupt one is set aside (renamed `*.corrupt`) with one warning and starts empty.
    pub fn load(file: PathBuf, window: Duration) -> Self {
        let loaded = match fs::read(&file) {
            Ok(bytes) => match Loaded::new(bytes) {
                Ok(loaded) => loaded,
                Err(Damage::OtherVersion) => Loaded::default(),
                Err(Damage::Corrupt(reason)) => {
                    tracing::warn!(path = %file.display(), %reason, "stat cache is corrupt; rebuilding it");
                    let _ = fs::rename(&file, file.with_extension("corrupt"));
                    Loaded::default()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Loaded::default(),
            Err(error) => {
                tracing::warn!(path = %file.display(), %error, "cannot read the stat cache; rebuilding it");
                Loaded::default()
            }
        };
        StatCache {
            file: Some(file),
            window,
            entries: RwLock::new(Entries { loaded, changed: HashMap::default() }),
            dirty: AtomicBool::new(false),
        }
    }

    /// The cached hash of `path`, if its stamp is unchanged.
    pub fn lookup(&self, path: &str, stamp: &FileStamp) -> Option<Digest> {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(key_of(path)).filter(|entry| entry.stamp == *stamp).map(|entry| entry.hash)
    }

    /// Records freshly computed hashes; stamps that are not settled at `now_ns` are skipped
    /// (and any older entry for them dropped).
    pub fn record(&self, fresh: Vec<(String, FileStamp, Digest)>, now_ns: i64) {
        if fresh.is_empty() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (path, stamp, hash) in fresh {
            let entry = stamp.settled(now_ns, self.window).then_some(Entry { stamp, hash });
            entries.changed.insert(key_of(&path), entry);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Records one hash computed now (of an output found in place), if its file is settled.
    pub fn remember(&self, path: &str, stamp: FileStamp, hash: Digest) {
        if stamp.settled(now_ns(), self.window) {
            let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            entries.changed.insert(key_of(path), Some(Entry { stamp, hash }));
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.merged().len()
    }

    /// Whether the cache has no entries (counting loaded ones that turn out racy).
    pub fn is_empty(&self) -> bool {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.loaded.len() == 0 && entries.changed.values().all(Option::is_none)
    }

    /// The path and bytes to persist, if anything changed since the last call.
    pub fn take_snapshot(&self) -> Option<(PathBuf, Vec<u8>)> {
        let file = self.file.clone()?;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        let written_at_ns = now_ns();
        let merged = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner()).merged();
        Some((file, envelope::seal(MAGIC, VERSION, &encode(written_at_ns, &merged))))
    }

    /// Writes the cache to its file if it changed.
    pub fn persist(&self) -> std::io::Result<()> {
        match self.take_snapshot() {
            Some((file, bytes)) => fsio::write_atomic(&file, &bytes, false),
            None => Ok(()),
        }
    }
}

/// The payload: the write time, then fixed-size little-endian records sorted by key.
fn encode(written_at_ns: i64, entries: &[(u64, Entry)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * RECORD_LEN);
    out.extend_from_slice(&written_at_ns.to_le_bytes());
    for (key, Entry { stamp, hash }) in entries {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&stamp.dev.to_le_bytes());
        out.extend_from_slice(&stamp.ino.to_le_bytes());
        out.extend_from_slice(&stamp.size.to_le_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.mode.to_le_bytes());
        out.extend_from_slice(&hash.0);
    }
    out
}

/// Reads fixed-size fields off the front of a record (whose length was checked).
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u64(&mut self) -> u64 {
        let (head, rest) = self.0.split_at(8);
        self.0 = rest;
        u64::from_le_bytes(head.try_into().unwrap_or_default())
    }

    fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_le_bytes(head.try_into().unwrap_or_default())
    }
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
        let cache = StatCache::in_memory(Duration::from_secs(1));
        let now = 10_000_000_000;
        let hash = Digest::of(b"x");
        // Changed 10 ms before the stat: a rewrite in the same timestamp tick could keep this
        // stamp, so the hash must not be reused.
        cache.record(vec![("racy".into(), stamp(now - 10_000_000, now - 20_000_000), hash)], now);
        assert_eq!(cache.lookup("racy", &stamp(now - 10_000_000, now - 20_000_000)), None);
        // A recent ctime (chmod, rename) is just as racy as a recent mtime.
        cache.record(vec![("ctime".into(), stamp(now - 5_000_000_000, now - 1), hash)], now);
        assert_eq!(cache.lookup("ctime", &stamp(now - 5_000_000_000, now - 1)), None);
        cache.record(
            vec![("old".into(), stamp(now - 5_000_000_000, now - 4_000_000_000), hash)],
            now,
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
        let mut entries = vec![
            (key_of("before"), Entry { stamp: stamp(10, 20), hash }),
            (key_of("same"), Entry { stamp: stamp(10, 50), hash }),
            (key_of("after"), Entry { stamp: stamp(60, 20), hash }),
        ];
        entries.sort_unstable_by_key(|(key, _)| *key);
        let bytes = envelope::seal(MAGIC, VERSION, &encode(written_at_ns, &entries));
        fs::write(&file, bytes).unwrap();
        let cache = StatCache::load(file, Duration::from_secs(1));
        assert_eq!(cache.lookup("before", &stamp(10, 20)), Some(hash));
        assert_eq!(cache.len(), 1);
    }

    /// Loads records with exactly `keys` (sorted) and checks that each is found and that keys
    /// between them are not.
    fn every_key_found(mut keys: Vec<u64>) {
        keys.sort_unstable();
        keys.dedup();
        let hash = Digest::of(b"x");
        let entries: Vec<(u64, Entry)> =
            keys.iter().map(|key| (*key, Entry { stamp: stamp(10, 20), hash })).collect();
        let bytes = envelope::seal(MAGIC, VERSION, &encode(50, &entries));
        let loaded = match Loaded::new(bytes) {
            Ok(loaded) => loaded,
            Err(_) => panic!("records rejected"),
        };
        for key in &keys {
            assert!(loaded.get(*key).is_some(), "key {key:#x} of {} not found", keys.len());
            for absent in [key.wrapping_add(1), key.wrapping_sub(1)] {
                if keys.binary_search(&absent).is_err() {
                    assert!(loaded.get(absent).is_none(), "absent key {absent:#x} found");
                }
            }
        }
    }

    #[test]
    fn lookups_find_every_record_however_the_keys_are_spread() {
        // Path keys, spread evenly.
        every_key_found((0..5000).map(|index| key_of(&format!("pkg/src/{index}.txt"))).collect());
        // Bunched at either end and in the middle: the first guess is far off.
        every_key_found((0..3000).map(|index| index * 7).collect());
        every_key_found((0..3000).map(|index| u64::MAX - index * 3).collect());
        every_key_found((0..3000).map(|index| (1 << 63) + index).chain([0, u64::MAX]).collect());
        every_key_found(vec![42]);
        every_key_found(Vec::new());
    }

    #[test]
    fn changes_survive_a_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.stat");
        let now = 10_000_000_000;
        let settled = stamp(now - 5_000_000_000, now - 4_000_000_000);
        let cache = StatCache::load(file.clone(), Duration::from_secs(1));
        let fresh = (0..500)
            .map(|index| (format!("src/file{index}.txt"), settled, Digest::of(&[index as u8])))
            .collect();
        cache.record(fresh, now);
        cache.persist().unwrap();
        let cache = StatCache::load(file.clone(), Duration::from_secs(1));
        assert_eq!(cache.len(), 500);
        assert_eq!(cache.lookup("src/file7.txt", &settled), Some(Digest::of(&[7])));
        // A rewrite of one file and a racy stamp for another: the first is replaced, the
        // second dropped, the rest kept.
        let newer = stamp(now - 3_000_000_000, now - 3_000_000_000);
        cache.record(
            vec![
                ("src/file7.txt".into(), newer, Digest::of(b"new")),
                ("src/file8.txt".into(), stamp(now, now), Digest::of(b"racy")),
            ],
            now,
        );
        cache.persist().unwrap();
        let cache = StatCache::load(file.clone(), Duration::from_secs(1));
        assert_eq!(cache.len(), 499);
        assert_eq!(cache.lookup("src/file7.txt", &newer), Some(Digest::of(b"new")));
        assert_eq!(cache.lookup("src/file7.txt", &settled), None);
        assert_eq!(cache.lookup("src/file8.txt", &settled), None);
        assert_eq!(cache.lookup("src/file9.txt", &settled), Some(Digest::of(&[9])));
        // A file of an older format is replaced quietly, not set aside as corrupt.
        fs::write(&file, envelope::seal(MAGIC, VERSION - 1, b"old")).unwrap();
        assert!(StatCache::load(file.clone(), Duration::from_secs(1)).is_empty());
        assert!(!file.with_extension("corrupt").exists());
        cache.persist().unwrap_or_default();
        let cache = StatCache::load(file.clone(), Duration::from_secs(1));
        cache.record(vec![("x".into(), settled, Digest::of(b"x"))], now);
        cache.persist().unwrap();
        // A payload cut inside a record is corrupt, not misread.
        let bytes = fs::read(&file).unwrap();
        let payload = &bytes[envelope::HEADER_LEN..bytes.len() - 10];
        fs::write(&file, envelope::seal(MAGIC, VERSION, payload)).unwrap();
        assert!(StatCache::load(file.clone(), Duration::from_secs(1)).is_empty());
        assert!(file.with_extension("corrupt").exists());
    }
}
