//! Atomic file publication: write a temp file in the same filesystem, fsync, rename.
//!
//! A reader (in this process or another) sees either the old file, or no file, or the whole new
//! one; never a prefix. Two writers of the same name both succeed: the last rename wins and both
//! wrote the same bytes, because names are content digests or are rewritten whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The suffix of every temp file, so a sweep can recognise abandoned ones.
pub const TEMP_SUFFIX: &str = ".cuenv-tmp";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp path inside `dir`, unique across processes (pid) and threads (counter).
pub fn temp_path(dir: &Path, hint: &str) -> PathBuf {
    let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    dir.join(format!(".{hint}.{}.{count}.{nanos}{TEMP_SUFFIX}", std::process::id()))
}

/// This process's umask, read once (from `/proc/self/status`, which reads it without
/// changing it; `0o022` where that is unavailable).
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|line| line.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .map_or(0o022, |mask| mask & 0o777)
    })
}

/// A file's identity: its device and inode, the same however its path is spelled.
pub fn identity(metadata: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// Opens `path` for reading without waiting: a named pipe (swapped in after a stat said it was
/// a file) opens at once instead of waiting for a writer; a regular file ignores the flag.
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

/// Creates a new temp file in `dir` (which must be on the same filesystem as the final name).
pub fn create_temp(dir: &Path, hint: &str) -> io::Result<(File, PathBuf)> {
    let path = temp_path(dir, hint);
    let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((file, path))
}

/// Writes `bytes` to `target` atomically, creating its parent directory if needed. The temp file
/// lives beside the target, so the rename never crosses a filesystem.
pub fn write_atomic(target: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    write_atomic_via(dir, target, bytes, fsync)
}

/// Like [`write_atomic`], with the temp file in `temp_dir` (same filesystem as `target`), where a
/// sweep finds it if the writer dies before the rename.
pub fn write_atomic_via(
    temp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    fsync: bool,
) -> io::Result<()> {
    let hint = target.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let (mut file, temp) = match create_temp(temp_dir, hint) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(temp_dir)?;
            create_temp(temp_dir, hint)?
        }
        other => other?,
    };
    let written = file.write_all(bytes).and_then(|()| if fsync { file.sync_all() } else { Ok(()) });
    drop(file);
    let published = written.and_then(|()| rename_creating_parent(&temp, target));
    if published.is_err() {
        let _ = fs::remove_file(&temp);
    }
    published
}

/// Renames `from` to `to`, creating `to`'s parent directory if it is missing.
pub fn rename_creating_parent(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(from, to)
        }
        other => other,
    }
}

/// Opens (creating it if needed) the lock file at `path` and takes its whole-file lock,
/// exclusive or shared, waiting for it. Dropping the returned file releases the lock.
pub fn lock_file(path: &Path, exclusive: bool) -> io::Result<File> {
    let file = open_lock_file(path)?;
    if exclusive {
        file.lock()?
    } else {
        file.lock_shared()?
    }
    Ok(file)
}

/// Opens (creating it if needed) a lock file for writing, keeping its content.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

/// Whether `name` is one of our temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// Copies `from` into a new file `to` in the kernel (`copy_file_range`: no user-space copy, a
/// reflink where the filesystem offers one), a chunk at a time. With `write_back`, each chunk's
/// writeback to disk starts as soon as it is copied (`sync_file_range`), so a later fsync finds
/// most of the file already on disk instead of starting the whole write then. Returns the bytes
/// copied.
pub fn copy_file(from: &Path, to: &Path, write_back: bool) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    const CHUNK: usize = 16 << 20;
    let source = File::open(from)?;
    let target = OpenOptions::new().write(true).create_new(true).mode(0o644).open(to)?;
    let mut copied: u64 = 0;
    loop {
        // SAFETY: both fds are open for the duration of the call; null offsets use and advance
        // each file's own position.
        let count = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                std::ptr::null_mut(),
                target.as_raw_fd(),
                std::ptr::null_mut(),
                CHUNK,
                0,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                // Not possible between these files: fall back to a plain copy of the rest.
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    let mut rest = &source;
                    let mut out = &target;
                    Ok(copied + io::copy(&mut rest, &mut out)?)
                }
                _ => Err(error),
            };
        }
        if count == 0 {
            return Ok(copied);
        }
        if write_back {
            // SAFETY: a hint on our own fd's range; failure only means no early writeback.
            unsafe {
                libc::sync_file_range(
                    target.as_raw_fd(),
                    copied as i64,
                    count as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        copied += count as u64;
    }
}
