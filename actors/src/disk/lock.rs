//! Per-digest lock files: cross-process single flight.
//!
//! Two processes that miss on the same digest at once: the first takes an advisory lock
//! (`flock`) on `v1/locks/<digest>`, executes and stores; the second waits for the lock and then
//! finds the stored result. A crashed holder's lock is released by the OS. The holder unlinks the
//! file before unlocking, and an acquirer checks that the file it locked is still the one at
//! that path, so an unlinked inode never grants the lock twice.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::layout::Layout;
use crate::Digest;

/// A held lock on one digest; dropping it releases the lock.
#[derive(Debug)]
pub struct DigestLock {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for DigestLock {
    fn drop(&mut self) {
        // Unlink first: a waiter that then gets the lock on this inode sees it is stale.
        let _ = fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Takes the lock of `digest`, waiting up to `timeout`. `Ok(None)` when the wait timed out.
/// Blocks the calling thread: call from a blocking context.
pub(super) fn acquire(
    layout: &Layout,
    digest: &Digest,
    timeout: Duration,
) -> io::Result<Option<DigestLock>> {
    let path = layout.locks().join(digest.to_hex());
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                let same = fs::metadata(&path)
                    .is_ok_and(|at_path| at_path.ino() == file.metadata().map_or(0, |m| m.ino()));
                if same {
                    return Ok(Some(DigestLock { file: Some(file), path }));
                }
                // The holder unlinked it as we locked it: start again on the new file.
                continue;
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(error)) => return Err(error),
        }
        drop(file);
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
