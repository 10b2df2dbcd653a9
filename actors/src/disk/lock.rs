//! Per-digest locks: cross-process single flight.
//!
//! Two processes that miss on the same digest at once: the first takes the digest's lock,
//! executes and stores; the second waits for the lock and then finds the stored result. The
//! locks are open-file-description byte-range locks (`F_OFD_SETLK`) on one shared file,
//! `v1/locks/digests`, one byte per digest (at an offset taken from the digest), so taking a
//! lock creates and removes no file. The OS releases a crashed holder's lock; two digests that
//! share an offset only wait for each other, which is harmless.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::layout::Layout;
use crate::{Digest, fsio};

/// A held lock on one digest; dropping it (closing its file) releases the lock.
#[derive(Debug)]
pub struct DigestLock {
    _file: File,
}

/// The byte that stands for `digest` in the lock file.
fn offset(digest: &Digest) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.0[..8]);
    // Keep it positive and well inside what every filesystem allows as an offset.
    i64::from_le_bytes(bytes) & ((1 << 40) - 1)
}

/// Tries to take the write lock on one byte; `Ok(false)` if another open file holds it.
fn try_lock(file: &File, at: i64) -> io::Result<bool> {
    // SAFETY: a zeroed `flock` is a valid value; every field we rely on is set below.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_WRLCK as libc::c_short;
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

/// Takes the lock of `digest`, waiting up to `timeout`. `Ok(None)` when the wait timed out.
/// Blocks the calling thread: call from a blocking context.
pub(super) fn acquire(
    layout: &Layout,
    digest: &Digest,
    timeout: Duration,
) -> io::Result<Option<DigestLock>> {
    let path = layout.locks().join("digests");
    let file = fsio::open_lock_file(&path)?;
    let at = offset(digest);
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if try_lock(&file, at)? {
            return Ok(Some(DigestLock { _file: file }));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_lock_excludes_other_holders_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.locks()).unwrap();
        let (digest, other) = (Digest::of(b"a"), Digest::of(b"b"));
        let held = acquire(&layout, &digest, Duration::ZERO).unwrap().expect("free lock");
        // Another open file (as another process would have) cannot take it...
        assert!(acquire(&layout, &digest, Duration::from_millis(30)).unwrap().is_none());
        // ...but can take another digest's lock.
        assert!(acquire(&layout, &other, Duration::ZERO).unwrap().is_some());
        drop(held);
        assert!(acquire(&layout, &digest, Duration::ZERO).unwrap().is_some());
    }
}
