//! The disk tier: a content-addressed store of blobs and a store of action records under the
//! cache directory, shared safely by every process that points at it.
//!
//! - Writes publish by rename (temp file in `v1/tmp`, fsync, rename): readers in any process
//!   see a whole file or none. Blobs go first, the record last, so a record never names a blob
//!   that was not there when it was written.
//! - Reads verify: a record's envelope checksum and its manifest's digest, and every blob's hash
//!   as it is copied out. Anything that does not verify is removed, logged once, and reads as a
//!   miss; a record whose blob has since been evicted reads as a miss too.
//! - [`DiskStore`] is synchronous; the `DiskTier` actor runs it on blocking threads and is the
//!   only writer of the cache directory.

mod actor;
mod blobs;
mod capture;
mod gc;
mod index;
mod last;
mod layout;
mod lock;
mod restore;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use actor::{DiskHandle, DiskLookup, Looked, StoreOutcome, StoreRequest};
pub use blobs::{BlobRead, BlobWriter, LogSource};
pub use capture::{CaptureError, CapturedOutputs, undeclared_output};
pub use gc::{ABANDONED, GRACE, GcReport, GcTarget};
pub use layout::Layout;
pub use lock::DigestLock;
pub use restore::{RestoreError, RestoreReport, RestoreTarget};

use crate::result::ActionResult;
use crate::{Digest, envelope, fsio};

const RECORD_MAGIC: [u8; 4] = *b"CUAR";
/// 2: output files record their mode. Keys changed with it (`KEY_FORMAT_VERSION`), so a
/// record of another version is never one a lookup asks for.
const RECORD_VERSION: u16 = 2;

/// Which records eviction removes first. (The user-facing spelling and parsing live with the
/// configuration in the `cuenv` crate.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Least recently read first.
    #[default]
    Lru,
    /// Least often read first (ties: least recently read).
    Lfu,
    /// Oldest written first.
    Fifo,
    /// Largest first.
    SizeBased,
}

/// How a disk store is set up.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Eviction keeps the store at or under this many bytes.
    pub max_size: u64,
    /// Which records go first.
    pub policy: EvictionPolicy,
    /// fsync files before publishing them.
    pub fsync: bool,
    /// Logs smaller than this stay inline in the record.
    pub inline_threshold: u64,
}

/// The outcome of reading a record.
#[derive(Debug)]
pub enum RecordLookup {
    /// A verified record whose blobs are all present.
    Hit(Box<ActionResult>),
    /// No record, or one whose blobs are gone.
    Miss,
    /// A damaged record; it has been removed.
    Corrupt {
        /// What was wrong.
        reason: String,
    },
}

/// The disk store of one cache directory.
#[derive(Debug)]
pub struct DiskStore {
    layout: Layout,
    settings: DiskSettings,
    pool: Arc<rayon::ThreadPool>,
    journal: index::Journal,
    /// Paths already warned about, so each damaged file is logged once.
    warned: Mutex<HashSet<PathBuf>>,
    /// Set while a background eviction runs, so stores do not start a second one.
    evicting: AtomicBool,
    /// The last digest stored per task, until the next flush.
    last: last::LastDigests,
    /// The cross-process digest locks, all through one open file.
    locks: lock::LockFile,
}

/// Whether an error reading a stored file says that the file itself is damaged (it is then
/// removed), rather than that this process is short of something (open files, memory) or may
/// not read it: removing an entry for those would lose a good result.
fn is_damage(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::IsADirectory
    ) || error.raw_os_error() == Some(libc::EIO)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl DiskStore {
    /// Opens (creating if needed) the store under `settings.cache_dir`. Hashing of large files
    /// runs on `pool`.
    pub fn open(mut settings: DiskSettings, pool: Arc<rayon::ThreadPool>) -> io::Result<Self> {
        if fs::metadata(&settings.cache_dir).is_ok_and(|metadata| !metadata.is_dir()) {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "it is not a directory"));
        }
        // Created private: results hold task logs and outputs, which may be secrets. A
        // directory that exists keeps its mode (one shared on purpose stays shared).
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&settings.cache_dir)?;
        // The real path, one spelling for every process and message. (Walks know the cache
        // directory by identity, not by path: see `key_gen::SkipDirs`.)
        settings.cache_dir = fs::canonicalize(&settings.cache_dir)?;
        let layout = Layout::new(&settings.cache_dir);
        for dir in [layout.cas(), layout.ac(), layout.tmp(), layout.locks(), layout.tasks()] {
            fs::create_dir_all(&dir)?;
        }
        Ok(DiskStore {
            layout,
            settings,
            pool,
            journal: index::Journal::default(),
            warned: Mutex::default(),
            evicting: AtomicBool::new(false),
            last: last::LastDigests::default(),
            locks: lock::LockFile::default(),
        })
    }

    /// Takes the cross-process lock of `digest`, waiting up to `timeout`; `Ok(None)` when the
    /// wait timed out. Blocks the calling thread.
    pub fn lock_digest(
        &self,
        digest: &Digest,
        timeout: std::time::Duration,
    ) -> io::Result<Option<DigestLock>> {
        self.locks.acquire(&self.layout, digest, timeout)
    }

    /// The paths of this store.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &DiskSettings {
        &self.settings
    }

    /// Writes `result` as the record of `digest`. Every blob it names must already be stored.
    pub fn put_record(&self, digest: &Digest, result: &ActionResult) -> io::Result<u64> {
        if let Some((missing, _)) = result.blobs().find(|(blob, _)| !self.has_blob(blob)) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {missing} of record {digest} is not stored"),
            ));
        }
        let payload = postcard::to_allocvec(result).map_err(io::Error::other)?;
        let sealed = envelope::seal(RECORD_MAGIC, RECORD_VERSION, &payload);
        fsio::write_atomic_via(
            &self.layout.tmp(),
            &self.layout.record(digest),
            &sealed,
            self.settings.fsync,
        )?;
        let size = sealed.len() as u64;
        self.journal.added(size);
        self.journal.note(index::Event::Wrote {
            digest: *digest,
            at_ms: now_ms(),
            record_size: size,
            blobs: result.blobs().collect(),
        });
        Ok(size)
    }

    /// Reads and verifies the record of `digest`.
    pub fn get_record(&self, digest: &Digest) -> RecordLookup {
        let path = self.layout.record(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return RecordLookup::Miss,
            Err(error) => {
                return match self.unreadable(&path, &error, "unreadable") {
                    Some(reason) => RecordLookup::Corrupt { reason },
                    None => RecordLookup::Miss,
                };
            }
        };
        let result = match decode_record(&bytes) {
            Ok(result) => result,
            Err(RecordDamage::OtherVersion { older: true }) => {
                let _ = fs::remove_file(&path);
                return RecordLookup::Miss;
            }
            Err(RecordDamage::OtherVersion { older: false }) => return RecordLookup::Miss,
            Err(RecordDamage::Damaged(reason)) => return self.corrupt(&path, reason),
        };
        if result.manifest.digest() != *digest {
            return self
                .corrupt(&path, "record is stored under another action's digest".to_owned());
        }
        if let Some((blob, _)) = result.blobs().find(|(blob, _)| !self.has_blob(blob)) {
            // Left for gc to remove: another process may be rewriting this very record.
            tracing::debug!(record = %digest.short(), blob = %blob.short(), "record names an evicted blob; miss");
            return RecordLookup::Miss;
        }
        self.journal.note(index::Event::Read { digest: *digest, at_ms: now_ms() });
        RecordLookup::Hit(Box::new(result))
    }

    /// Removes a damaged file, warns once per path, and reports it.
    fn corrupt(&self, path: &Path, reason: String) -> RecordLookup {
        self.remove_damaged(path, &reason);
        RecordLookup::Corrupt { reason }
    }

    /// A stored file that could not be read. If `error` says it is damaged, it is removed
    /// (with a warning) and the reason returned; otherwise it is left for the runs that can
    /// read it, with a warning, and this is `None`: a miss either way.
    fn unreadable(&self, path: &Path, error: &io::Error, what: &str) -> Option<String> {
        if is_damage(error) {
            let reason = format!("{what}: {error}");
            self.remove_damaged(path, &reason);
            return Some(reason);
        }
        if self.first_warning(path) {
            tracing::warn!(path = %path.display(), %error, "cannot read a cache entry; it reads as a miss and is left in place");
        }
        None
    }

    fn remove_damaged(&self, path: &Path, reason: &str) {
        let _ = fs::remove_file(path);
        if self.first_warning(path) {
            tracing::warn!(path = %path.display(), %reason, "removed a damaged cache entry; it reads as a miss");
        }
    }

    /// Whether nothing was said about `path` yet: each damaged file is logged once.
    fn first_warning(&self, path: &Path) -> bool {
        self.warned.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(path.to_owned())
    }

    /// Remembers `digest` as the last result stored for `task` of the project at `project_id`,
    /// so `cache explain` can diff against it (written at the next flush).
    pub fn set_last(&self, project_id: &str, task: &str, digest: &Digest) {
        self.last.set(project_id, task, *digest);
    }

    /// The last digest stored for `task` of the project at `project_id`.
    pub fn last(&self, project_id: &str, task: &str) -> Option<Digest> {
        self.last.get(&self.layout, project_id, task)
    }

    /// Appends this process's access and write events to the journal (folding the journal into
    /// the index when it has grown large) and writes the last digests of stored tasks.
    pub fn flush(&self) -> io::Result<()> {
        self.last.flush(&self.layout)?;
        let journal_size = self.journal.flush(&self.layout)?;
        if journal_size > index::COMPACT_AT {
            gc::compact(&self.layout)?;
        }
        Ok(())
    }

    /// Events not yet flushed.
    pub fn pending_events(&self) -> usize {
        self.journal.pending_len()
    }

    /// Bytes this process stored since its last flush (not yet in the usage file).
    pub fn unflushed_bytes(&self) -> u64 {
        self.journal.unflushed_bytes()
    }

    /// The approximate bytes stored, as of the last flush or gc of any process.
    pub fn approximate_usage(&self) -> u64 {
        index::read_usage(&self.layout)
    }

    /// Runs gc down to 90% of `max_size` when the store has grown past `max_size`, unless a gc
    /// of this store is already running. Called after a store, off the caller's path.
    pub fn evict_if_over_limit(&self) {
        let max_size = self.settings.max_size;
        if self.approximate_usage() + self.unflushed_bytes() <= max_size
            || self.evicting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        match self.gc(GcTarget { max_size: max_size / 10 * 9, max_age: None }) {
            Ok(report) => tracing::debug!(?report, "background eviction"),
            Err(error) => tracing::warn!(%error, "background eviction failed"),
        }
        self.evicting.store(false, Ordering::Release);
    }

    /// Evicts by the configured policy until the store is at or under `target`.
    pub fn gc(&self, target: GcTarget) -> io::Result<GcReport> {
        self.flush()?;
        gc::run(self, target)
    }
}

/// Why a record file could not be read.
enum RecordDamage {
    /// Written in another format: an older one (garbage once keys changed with it, removed
    /// quietly), or a newer one (a newer cuenv's, left alone).
    OtherVersion { older: bool },
    /// Damaged: removed, with a warning.
    Damaged(String),
}

fn decode_record(bytes: &[u8]) -> Result<ActionResult, RecordDamage> {
    let payload =
        envelope::open(RECORD_MAGIC, RECORD_VERSION, bytes).map_err(|error| match error {
            envelope::EnvelopeError::UnknownVersion { found, expected } if found != expected => {
                RecordDamage::OtherVersion { older: found < expected }
            }
            error => RecordDamage::Damaged(error.to_string()),
        })?;
    postcard::from_bytes(payload)
        .map_err(|error| RecordDamage::Damaged(format!("undecodable record: {error}")))
}
