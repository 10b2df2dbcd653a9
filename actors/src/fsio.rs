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

/// Whether `name` is one of our temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}
