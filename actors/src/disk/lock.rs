//! Per-digest locks: cross-process single flight.
//!
//! Two processes that miss on the same digest at once: the first takes the digest's lock,
//! executes and stores; the second waits for the lock and then finds the stored result. The
//! locks are open-file-description byte-range locks (`F_OFD_SETLK`) on one shared file,
//! `v1/locks/digests`, one byte per digest (at an offset taken from the digest), so taking a
//! lock creates and removes no file. The OS releases a crashed holder's lock.
//!
//! A store opens the file once ([`LockFile`]) and takes every lock through that one open file,
//! so a held lock costs no file descriptor: a run holds one for each task in flight (waiting
//! for its turn to execute, or storing in the background), hundreds with a high `--jobs`.
//! Locks taken through one open file do not exclude each other; within a process the
//! manager's single flight keeps one leader per digest. Two digests that share an offset may
//! then each be executed by two processes: duplicated work, never a wrong result.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::layout::Layout;
use crate::{Digest, fsio};

/// The lock file of a store, opened on first use and shared by the locks taken through it.
#[derive(Debug, Default)]
pub(crate) struct LockFile(Mutex<Option<Arc<File>>>);

/// A held lock on one digest; dropping it releases the lock.
#[derive(Debug)]
pub struct DigestLock {
    file: Arc<File>,
    at: i64,
}

impl Drop for DigestLock {
    fn drop(&mut self) {
        // Failing leaves the lock to be released when the file closes, at the latest.
        let _ = set_lock(&self.file, self.at, libc::F_UNLCK);
    }
}

/// The byte that stands for `digest` in the lock file.
fn offset(digest: &Digest) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.0[..8]);
    // Keep it positive and well inside what every filesystem allows as an offset.
    i64::from_le_bytes(bytes) & ((1 << 40) - 1)
}

/// Sets one byte's lock to `kind` (`F_WRLCK` or `F_UNLCK`) without waiting; `Ok(false)` if
/// another open file holds it.
fn set_lock(file: &File, at: i64, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: a zeroed `flock` is a valid value; every field we rely on is set below.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = kind as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = at;
    range.l_len = 1;
    // SAFETY: fcntl with F_OFD_SETLK reads the `flock` we own; the fd is open for `file`'s life.
    let outcome = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &range) };
    if outcome == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(error),
    }
}

impl LockFile {
    /// The open lock file, opened again if the one at its path is another file now (the cache
    /// was cleaned under a long-lived process): locks on a removed file exclude nobody.
    fn file(&self, layout: &Layout) -> io::Result<Arc<File>> {
        let path = layout.locks().join("digests");
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = file.as_ref()
            && let (Ok(open_now), Ok(at_path)) = (open.metadata(), std::fs::metadata(&path))
            && fsio::identity(&open_now) == fsio::identity(&at_path)
        {
            return Ok(Arc::clone(open));
        }
        let opened = match fsio::open_lock_file(&path) {
            // Its directory went with a cleaned cache: made again, as a store makes it.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(layout.locks())?;
                fsio::open_lock_file(&path)?
            }
            opened => opened?,
        };
        let opened = Arc::new(opened);
        *file = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// Takes the lock of `digest`, waiting up to `timeout`. `Ok(None)` when the wait timed
    /// out. Blocks the calling thread: call from a blocking context.
    pub(crate) fn acquire(
        &self,
        layout: &Layout,
        digest: &Digest,
        timeout: Duration,
    ) -> io::Result<Option<DigestLock>> {
        let file = self.file(layout)?;
        let at = offset(digest);
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if set_lock(&file, at, libc::F_WRLCK)? {
                return Ok(Some(DigestLock { file, at }));
            }
            if started.elapsed() >= timeout {
                return Ok(None);
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "runs on a blocking thread, never on a tokio worker"
            )]
            std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's layout in a temp directory, and two lock files on it: what two processes have.
    fn two_processes() -> (tempfile::TempDir, Layout, LockFile, LockFile) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.locks()).unwrap();
        (dir, layout, LockFile::default(), LockFile::default())
    }

    #[test]
    fn a_digest_lock_excludes_other_holders_until_dropped() {
        let (_dir, layout, ours, theirs) = two_processes();
        let (digest, other) = (Digest::of(b"a"), Digest::of(b"b"));
        let held = ours.acquire(&layout, &digest, Duration::ZERO).unwrap().expect("free lock");
        // The other process cannot take it...
        assert!(theirs.acquire(&layout, &digest, Duration::from_millis(30)).unwrap().is_none());
        // ...but can take another digest's lock.
        assert!(theirs.acquire(&layout, &other, Duration::ZERO).unwrap().is_some());
        drop(held);
        assert!(theirs.acquire(&layout, &digest, Duration::ZERO).unwrap().is_some());
    }

    #[test]
    fn the_locks_of_one_store_share_one_open_file() {
        let (_dir, layout, ours, theirs) = two_processes();
        let held: Vec<DigestLock> = (0..500u32)
            .map(|n| ours.acquire(&layout, &Digest::of(&n.to_le_bytes()), Duration::ZERO))
            .map(|lock| lock.unwrap().expect("free lock"))
            .collect();
        let fd = held[0].file.as_raw_fd();
        assert!(held.iter().all(|lock| lock.file.as_raw_fd() == fd));
        // Each is held all the same, and released alone when dropped.
        let (first, second) = (Digest::of(&0u32.to_le_bytes()), Digest::of(&1u32.to_le_bytes()));
        assert!(theirs.acquire(&layout, &first, Duration::ZERO).unwrap().is_none());
        let mut held = held.into_iter();
        drop(held.next());
        assert!(theirs.acquire(&layout, &first, Duration::ZERO).unwrap().is_some());
        assert!(theirs.acquire(&layout, &second, Duration::ZERO).unwrap().is_none());
    }

    #[test]
    fn a_lock_file_removed_under_a_store_is_opened_again() {
        let (_dir, layout, ours, theirs) = two_processes();
        let (first, second) = (Digest::of(b"a"), Digest::of(b"b"));
        let _held = ours.acquire(&layout, &first, Duration::ZERO).unwrap().expect("free lock");
        // The cache is cleaned: a process that starts now creates a new lock file (and its
        // directory)...
        std::fs::remove_dir_all(layout.locks()).unwrap();
        let _theirs = theirs.acquire(&layout, &second, Duration::ZERO).unwrap().expect("free");
        // ...which our next lock uses too, so the two exclude each other again.
        assert!(ours.acquire(&layout, &second, Duration::from_millis(30)).unwrap().is_none());
    }
}
