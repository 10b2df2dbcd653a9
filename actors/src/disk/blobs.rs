//! Blobs: content stored under the blake3 of its bytes.
//!
//! A blob that already exists is not rewritten but touched, so that gc's one-minute grace
//! period covers it while the record that names it is being written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::panic::resume_unwind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use rayon::prelude::*;

use super::DiskStore;
use crate::key_gen::{LARGE_FILE, hash_open_file, hash_open_file_on, hash_reader_with};
use crate::result::LogRef;
use crate::{Digest, fsio};

/// The outcome of reading a blob.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobRead {
    /// The verified content.
    Found(Vec<u8>),
    /// No such blob, or none this process can read now (short of open files, say); such a
    /// blob is left in place.
    Missing,
    /// The content did not hash to its name, or reading it failed as a damaged file does; the
    /// blob has been removed.
    Corrupt,
}

/// Items stored inline, one after the other; above this, they are stored in parallel.
const INLINE_STORES: usize = 16;

/// Threads that store many blobs at once when every blob is fsynced. Such a store waits on the
/// fsyncs, not the CPU, and concurrent fsyncs overlap (the block layer merges their cache
/// flushes), so more threads than cores pay off: 500 fsyncs took 88–104 ms one after the
/// other and 28 ms from 16 threads on the development machine.
const SYNCING_THREADS: usize = 16;

/// A log ready to be copied out: its bytes, or its blob opened and verified. The blob is hashed
/// through the open file, so what is read from it later is what was verified (blobs are
/// replaced by rename, never rewritten in place), and a large log is never held in memory.
#[derive(Debug)]
pub enum LogSource {
    /// Inline, or held in memory.
    Bytes(Vec<u8>),
    /// A verified blob, positioned at its start.
    File(File),
}

/// Why copying a blob out failed.
#[derive(Debug)]
pub(super) enum CopyOut {
    Missing,
    Corrupt,
    Io(io::Error),
}

impl DiskStore {
    /// Whether a blob is stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.layout.blob(digest)).is_ok()
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        let digest = Digest::of(bytes);
        let target = self.layout.blob(&digest);
        let _guard = self.blob_guard()?;
        if self.existing_is_intact(&target, &digest, bytes.len() as u64) {
            return Ok(digest);
        }
        fsio::write_atomic_via(&self.layout.tmp(), &target, bytes, self.settings.fsync)?;
        self.journal.added(bytes.len() as u64);
        Ok(digest)
    }

    /// Stores the content of the file at `path`, returning its digest and size. Large files are
    /// hashed on the pool while the kernel copies them (`copy_file_range`, a reflink where the
    /// filesystem can).
    pub fn put_file(&self, path: &Path) -> io::Result<(Digest, u64)> {
        // Checked once open: a named pipe in its place must not hang a store.
        let file = fsio::open_nonblocking(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let len = metadata.len();
        if len < LARGE_FILE {
            let mut bytes = Vec::with_capacity(len as usize);
            (&file).read_to_end(&mut bytes)?;
            return Ok((self.put_bytes(&bytes)?, bytes.len() as u64));
        }
        let temp = fsio::temp_path(&self.layout.tmp(), "blob");
        let fsync = self.settings.fsync;
        let (hashed, copied) = self.pool.install(|| {
            rayon::join(|| hash_open_file(&file, len), || fsio::copy_file(path, &temp, fsync))
        });
        let published = hashed.and_then(|digest| {
            if copied? != len {
                return Err(io::Error::other(format!(
                    "{} changed while it was stored",
                    path.display()
                )));
            }
            self.publish_temp(&temp, &digest, len).map(|()| (digest, len))
        });
        if published.is_err() {
            let _ = fs::remove_file(&temp);
        }
        published
    }

    fn publish_temp(&self, temp: &Path, digest: &Digest, len: u64) -> io::Result<()> {
        let target = self.layout.blob(digest);
        let _guard = self.blob_guard()?;
        if self.existing_is_intact(&target, digest, len) {
            return fs::remove_file(temp);
        }
        if self.settings.fsync {
            File::open(temp)?.sync_all()?;
        }
        fsio::rename_creating_parent(temp, &target)?;
        self.journal.added(len);
        Ok(())
    }

    /// Runs `store_one` (which stores a blob) on every item and returns the outcomes in item
    /// order, or the failure with the lowest index. Few items run inline (waking threads for
    /// one blob costs more than it saves); many run in parallel: on the pool when blobs are
    /// not fsynced, else on a few scoped threads (16), joined before this returns. A
    /// failure stops the threads after the item each has in hand.
    pub fn store_each<T: Sync, R: Send>(
        &self,
        items: &[T],
        store_one: impl Fn(&T) -> io::Result<R> + Sync,
    ) -> io::Result<Vec<R>> {
        if items.len() <= INLINE_STORES {
            return items.iter().map(store_one).collect();
        }
        if !self.settings.fsync {
            return self.pool.install(|| items.par_iter().map(&store_one).collect());
        }
        let next = AtomicUsize::new(0);
        let mut stored: Vec<(usize, io::Result<R>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..SYNCING_THREADS.min(items.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            let Some(item) = items.get(index) else { break };
                            let outcome = store_one(item);
                            let failed = outcome.is_err();
                            done.push((index, outcome));
                            if failed {
                                next.store(items.len(), Ordering::Relaxed);
                                break;
                            }
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap_or_else(|panic| resume_unwind(panic)))
                .collect()
        });
        // Only a failure stops the threads early, so without one every item has its outcome.
        stored.sort_by_key(|(index, _)| *index);
        stored.into_iter().map(|(_, outcome)| outcome).collect()
    }

    /// Reads and verifies a blob.
    pub fn read_blob(&self, digest: &Digest) -> BlobRead {
        let path = self.layout.blob(digest);
        match fs::read(&path) {
            Ok(bytes) if Digest::of(&bytes) == *digest => BlobRead::Found(bytes),
            Ok(_) => {
                self.remove_damaged(&path, "blob content does not match its digest");
                BlobRead::Corrupt
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => BlobRead::Missing,
            Err(error) => self.unreadable_blob(&path, &error),
        }
    }

    /// A blob that could not be read: `Corrupt` (and removed) if the error says it is damaged,
    /// else `Missing` for now (left in place).
    fn unreadable_blob(&self, path: &Path, error: &io::Error) -> BlobRead {
        match self.unreadable(path, error, "unreadable blob") {
            Some(_) => BlobRead::Corrupt,
            None => BlobRead::Missing,
        }
    }

    /// Reads a (small) blob into `buffer` and verifies it. On `Corrupt` the blob has been
    /// removed.
    pub(super) fn read_verified(
        &self,
        digest: &Digest,
        buffer: &mut Vec<u8>,
    ) -> Result<(), CopyOut> {
        let path = self.layout.blob(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(CopyOut::Missing),
            Err(error) => return Err(CopyOut::Io(error)),
        };
        buffer.clear();
        file.read_to_end(buffer).map_err(CopyOut::Io)?;
        if Digest::of(buffer) != *digest {
            self.remove_damaged(&path, "blob content does not match its digest");
            return Err(CopyOut::Corrupt);
        }
        Ok(())
    }

    /// A log as it goes into a record: inline when smaller than the inline threshold, else a
    /// blob.
    pub fn log_ref(&self, bytes: Vec<u8>) -> io::Result<LogRef> {
        if (bytes.len() as u64) < self.settings.inline_threshold {
            return Ok(LogRef::Inline(bytes));
        }
        let size = bytes.len() as u64;
        Ok(LogRef::Blob { digest: self.put_bytes(&bytes)?, size })
    }

    /// A log captured to a file, as it goes into a record.
    pub fn log_ref_from_file(&self, path: &Path) -> io::Result<LogRef> {
        let size = fs::metadata(path)?.len();
        if size < self.settings.inline_threshold {
            return Ok(LogRef::Inline(fs::read(path)?));
        }
        let (digest, size) = self.put_file(path)?;
        Ok(LogRef::Blob { digest, size })
    }

    /// A log, its blob opened and verified; `None` when the blob is missing or damaged (it is
    /// then removed), so a replay never prints half a log.
    pub fn open_log(&self, log: &LogRef) -> Option<LogSource> {
        let (digest, size) = match log {
            LogRef::Inline(bytes) => return Some(LogSource::Bytes(bytes.clone())),
            LogRef::Blob { digest, size } => (digest, size),
        };
        let path = self.layout.blob(digest);
        let file = File::open(&path).ok()?;
        let len = file.metadata().map_or(*size, |metadata| metadata.len());
        let intact = hash_open_file_on(&self.pool, &file, len).is_ok_and(|found| found == *digest);
        if !intact {
            self.remove_damaged(&path, "blob content does not match its digest");
            return None;
        }
        Some(LogSource::File(file))
    }

    /// A log's bytes, verified when it is a blob. `None` when its blob is missing or damaged
    /// (verified before anything is shown, so a replay never prints half a log).
    pub fn read_log(&self, log: &LogRef) -> Option<Vec<u8>> {
        match log {
            LogRef::Inline(bytes) => Some(bytes.clone()),
            LogRef::Blob { digest, .. } => match self.read_blob(digest) {
                BlobRead::Found(bytes) => Some(bytes),
                BlobRead::Missing | BlobRead::Corrupt => None,
            },
        }
    }
}

/// A blob written piece by piece, for content too large to hold in memory (a big download):
/// hashed as it is written, published under its digest by [`BlobWriter::finish`] (fsynced
/// first, as every blob). Dropped unfinished, its temp file is removed.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    store: &'a DiskStore,
    file: File,
    temp: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
    published: bool,
}

impl BlobWriter<'_> {
    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publishes what was written; returns its digest.
    pub fn finish(mut self) -> io::Result<Digest> {
        let digest = Digest::from(self.hasher.finalize());
        self.store.publish_temp(&self.temp, &digest, self.len)?;
        self.published = true;
        Ok(digest)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl DiskStore {
    /// A writer for a new blob (see [`BlobWriter`]).
    pub fn blob_writer(&self) -> io::Result<BlobWriter<'_>> {
        let (file, temp) = fsio::create_temp(&self.layout.tmp(), "blob")?;
        Ok(BlobWriter {
            store: self,
            file,
            temp,
            hasher: blake3::Hasher::new(),
            len: 0,
            published: false,
        })
    }

    /// The size of a stored blob, if there is one.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.layout.blob(digest)).ok().map(|metadata| metadata.len())
    }

    /// Opens a stored blob (unverified: see [`DiskStore::scan_blob`]).
    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        File::open(self.layout.blob(digest))
    }

    /// Passes a stored blob to `each`, a piece at a time, verifying it on the way, so a blob of
    /// any size is read without being held: `Found` (with no bytes) when it matched its digest,
    /// `Corrupt` (the blob removed) when it did not. `each` has seen the bytes either way.
    pub fn scan_blob(&self, digest: &Digest, each: impl FnMut(&[u8])) -> BlobRead {
        let path = self.layout.blob(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return BlobRead::Missing,
            Err(error) => return self.unreadable_blob(&path, &error),
        };
        match hash_reader_with(&file, each) {
            Ok((found, _)) if found == *digest => BlobRead::Found(Vec::new()),
            Ok(_) => {
                self.remove_damaged(&path, "blob content does not match its digest");
                BlobRead::Corrupt
            }
            Err(error) => self.unreadable_blob(&path, &error),
        }
    }
}

impl DiskStore {
    /// A shared lock on `gc.lock`, held while a blob is checked, touched or published: gc
    /// removes files only under the exclusive lock and re-checks each blob's age first, so a
    /// blob a writer just reused (touched) is never removed. Dropping the file unlocks.
    fn blob_guard(&self) -> io::Result<File> {
        fsio::lock_file(&self.layout.gc_lock(), false)
    }

    /// Whether a blob is already stored intact under `digest`: then it is touched (so gc's
    /// grace period covers it while the record naming it is written) and need not be written
    /// again. A damaged copy (another size, other content) is reported as absent, so the caller
    /// replaces it with the good bytes it has in hand.
    fn existing_is_intact(&self, target: &Path, digest: &Digest, len: u64) -> bool {
        let Ok(file) = File::open(target) else { return false };
        let intact = file.metadata().is_ok_and(|metadata| metadata.len() == len)
            && hash_open_file_on(&self.pool, &file, len).is_ok_and(|found| found == *digest);
        if !intact {
            tracing::debug!(path = %target.display(), "replacing a damaged blob");
            return false;
        }
        if let Err(error) = file.set_modified(SystemTime::now()) {
            tracing::debug!(path = %target.display(), %error, "cannot touch an existing blob");
        }
        true
    }
}
