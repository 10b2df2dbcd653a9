//! Restoring a result's outputs into a project.
//!
//! Files are copied out of the CAS (never hard-linked: a task that edits its output in place
//! would otherwise edit the store), verified on the way, and renamed into place, so each file
//! appears whole or not at all. Paths from a record are checked before anything is written: no
//! absolute paths, no `..`, and no existing symlink on the way that could lead outside the root.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::DiskStore;
use super::blobs::CopyOut;
use super::undeclared_output;
use crate::fsio;
use crate::key_gen::{FileStamp, LARGE_FILE, StatCache, hash_open_file, hash_open_file_on};
use crate::memory::MemoryEntry;
use crate::result::{ActionResult, OutputFile};

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Directories created or confirmed.
    pub dirs: usize,
    /// Symlinks written.
    pub symlinks: usize,
}

/// Where a restore writes: the project root, and the project's stat cache when the caller has
/// one (outputs already in place are then recognised by their stamps instead of re-hashed).
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// The project root that output paths are relative to.
    pub root: PathBuf,
    /// The stat cache of that project.
    pub stamps: Option<Arc<StatCache>>,
}

impl From<PathBuf> for RestoreTarget {
    fn from(root: PathBuf) -> Self {
        RestoreTarget { root, stamps: None }
    }
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The record names a path that is absolute, climbs with `..`, or runs through one of the
    /// record's own symlinks.
    #[error("cached output {path:?} is not a safe path inside the project")]
    Unsafe {
        /// The path as recorded.
        path: String,
    },
    /// The record names a path that the task's declared outputs could not have captured.
    #[error("cached output {path:?} is not where the task's declared outputs go")]
    Undeclared {
        /// The path as recorded.
        path: String,
    },
    /// A directory on the way to an output is a symlink in the project. A restore never writes
    /// through one (it may lead outside the project); the entry itself is sound.
    #[error(
        "{} is a symlink in the project, and cached outputs are never restored through one",
        path.display()
    )]
    SymlinkInTheWay {
        /// The symlink.
        path: PathBuf,
    },
    /// An output's blob is missing or damaged (it has been removed).
    #[error("cached output {path:?} is missing from the store or damaged")]
    BlobGone {
        /// The output's path.
        path: String,
    },
    /// Writing into the project failed.
    #[error("cannot restore {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl RestoreError {
    /// Whether the cache entry is at fault (the caller should treat it as a miss and execute),
    /// rather than the workspace.
    pub fn is_cache_fault(&self) -> bool {
        matches!(
            self,
            RestoreError::Unsafe { .. }
                | RestoreError::Undeclared { .. }
                | RestoreError::BlobGone { .. }
        )
    }

    /// Whether the project stands in the way of a sound entry (the caller should execute
    /// instead, without blaming the cache).
    pub fn is_workspace_obstacle(&self) -> bool {
        matches!(self, RestoreError::SymlinkInTheWay { .. })
    }
}

/// Whether `path` is a plain relative path: non-empty, no root, no `.`/`..`/empty components.
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl DiskStore {
    /// Writes every output of `result` under `root`.
    pub fn restore_outputs(
        &self,
        result: &ActionResult,
        root: &Path,
    ) -> Result<RestoreReport, RestoreError> {
        self.restore_outputs_with(result, root, None, None)
    }

    /// Like [`DiskStore::restore_outputs`], taking the bytes of small blobs from a memory-tier
    /// entry where it holds them (verified when they entered the memory tier), and taking an
    /// output in place as current when `stamps` knows its stamp with the output's digest.
    pub fn restore_outputs_with(
        &self,
        result: &ActionResult,
        root: &Path,
        memory: Option<&MemoryEntry>,
        stamps: Option<&StatCache>,
    ) -> Result<RestoreReport, RestoreError> {
        let all_paths = result
            .output_dirs
            .iter()
            .chain(result.output_files.iter().map(|file| &file.path))
            .chain(result.output_symlinks.iter().map(|link| &link.path));
        if let Some(bad) = all_paths.clone().find(|path| !is_safe_relative(path)) {
            return Err(RestoreError::Unsafe { path: bad.clone() });
        }
        // An output below one of the record's own symlinks would be written through it.
        let below_a_link = |path: &&String| {
            result.output_symlinks.iter().any(|link| {
                path.strip_prefix(link.path.as_str()).is_some_and(|rest| rest.starts_with('/'))
            })
        };
        if let Some(bad) = all_paths.into_iter().find(below_a_link) {
            return Err(RestoreError::Unsafe { path: bad.clone() });
        }
        // Only where the task's outputs go, as for a download: a record from a cache directory
        // that others write to (a CI cache saved by another branch) cannot write into the
        // project's sources or `.git`. A record this version captured always passes.
        let files = result.output_files.iter().map(|file| file.path.as_str());
        let links = result.output_symlinks.iter().map(|link| link.path.as_str());
        let dirs = result.output_dirs.iter().map(String::as_str);
        if let Some(bad) = undeclared_output(&result.manifest, files.chain(links), dirs) {
            return Err(RestoreError::Undeclared { path: bad.to_owned() });
        }
        let dirs = SafeDirs { root, checked: Mutex::default() };
        let mut report = RestoreReport::default();
        for dir in &result.output_dirs {
            dirs.ensure(dir)?;
            report.dirs += 1;
        }
        let restore_one = |file: &OutputFile| self.restore_file(file, root, &dirs, memory, stamps);
        let bytes: Vec<u64> = if result.output_files.len() > 16 {
            self.pool.install(|| {
                result.output_files.par_iter().map(restore_one).collect::<Result<_, _>>()
            })?
        } else {
            result.output_files.iter().map(restore_one).collect::<Result<_, _>>()?
        };
        report.files = bytes.len();
        report.bytes = bytes.iter().sum();
        for link in &result.output_symlinks {
            let parent = dirs.ensure_parent(&link.path)?;
            let target = root.join(&link.path);
            let temp = fsio::temp_path(&parent, "link");
            symlink(&link.target, &temp)
                .and_then(|()| replace(&temp, &target))
                .map_err(|source| RestoreError::Io { path: target.clone(), source })?;
            report.symlinks += 1;
        }
        Ok(report)
    }

    /// Restores a memory-tier entry's result into `target`, with its small blobs and the
    /// target's stamps.
    pub fn restore_entry(
        &self,
        entry: &MemoryEntry,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, RestoreError> {
        self.restore_outputs_with(
            &entry.result,
            &target.root,
            Some(entry),
            target.stamps.as_deref(),
        )
    }

    fn restore_file(
        &self,
        file: &OutputFile,
        root: &Path,
        dirs: &SafeDirs<'_>,
        memory: Option<&MemoryEntry>,
        stamps: Option<&StatCache>,
    ) -> Result<u64, RestoreError> {
        let parent = dirs.ensure_parent(&file.path)?;
        let target = root.join(&file.path);
        if self.already_in_place(&target, file, stamps) {
            return Ok(0);
        }
        let in_memory = memory.and_then(|entry| entry.blob(&file.digest));
        if file.size >= LARGE_FILE && in_memory.is_none() {
            return self.restore_large(file, &parent, &target);
        }
        // Read and verify first, so nothing is written for a damaged blob; then one write.
        let written = SMALL_BUFFER.with_borrow_mut(|buffer| {
            let bytes: &[u8] = match in_memory {
                Some(bytes) => bytes,
                None => {
                    self.read_verified(&file.digest, buffer)?;
                    buffer
                }
            };
            write_new_file(&parent, &target, bytes, restored_mode(file)).map_err(CopyOut::Io)
        });
        written.map(|()| file.size).map_err(|error| match error {
            CopyOut::Missing | CopyOut::Corrupt => {
                RestoreError::BlobGone { path: file.path.clone() }
            }
            CopyOut::Io(source) => RestoreError::Io { path: target, source },
        })
    }
}

thread_local! {
    /// Reused for small outputs, so a restore of many files allocates once per thread.
    static SMALL_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The mode a restored file gets: the recorded one less this process's umask.
fn restored_mode(file: &OutputFile) -> u32 {
    file.mode & 0o777 & !fsio::umask()
}

/// Writes `bytes` as a temp file in `parent`, sets its mode, and renames it over `target`.
fn write_new_file(parent: &Path, target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (mut temp_file, temp) = fsio::create_temp(parent, "out")?;
    let written = temp_file
        .write_all(bytes)
        .and_then(|()| temp_file.set_permissions(fs::Permissions::from_mode(mode)));
    drop(temp_file);
    let done = written.and_then(|()| replace(&temp, target));
    if done.is_err() {
        let _ = fs::remove_file(&temp);
    }
    done
}

impl DiskStore {
    /// A large output: the kernel copies the blob (`copy_file_range`, a reflink where the
    /// filesystem can) while the pool hashes the blob; the copy is renamed into place only if
    /// the blob verified.
    fn restore_large(
        &self,
        file: &OutputFile,
        parent: &Path,
        target: &Path,
    ) -> Result<u64, RestoreError> {
        let blob_path = self.layout.blob(&file.digest);
        let blob = match fs::File::open(&blob_path) {
            Ok(blob) => blob,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(RestoreError::BlobGone { path: file.path.clone() });
            }
            Err(source) => return Err(RestoreError::Io { path: blob_path, source }),
        };
        let temp = fsio::temp_path(parent, "out");
        let (verified, copied) = self.pool.install(|| {
            rayon::join(|| hash_open_file(&blob, file.size), || fs::copy(&blob_path, &temp))
        });
        let io_error = |source| RestoreError::Io { path: target.to_owned(), source };
        let outcome = match (verified, copied) {
            (Ok(found), Ok(len)) if found == file.digest && len == file.size => {
                fs::set_permissions(&temp, fs::Permissions::from_mode(restored_mode(file)))
                    .and_then(|()| replace(&temp, target))
                    .map(|()| len)
                    .map_err(io_error)
            }
            (Ok(_), Ok(_)) | (Err(_), _) => {
                self.remove_damaged(&blob_path, "blob content does not match its digest");
                Err(RestoreError::BlobGone { path: file.path.clone() })
            }
            // The blob went between the open and the copy (evicted by another process).
            (Ok(_), Err(source)) if source.kind() == io::ErrorKind::NotFound => {
                Err(RestoreError::BlobGone { path: file.path.clone() })
            }
            (Ok(_), Err(source)) => Err(io_error(source)),
        };
        if outcome.is_err() {
            let _ = fs::remove_file(&temp);
        }
        outcome
    }
}

impl DiskStore {
    /// Whether `target` already is `file`: a regular file of the same size and restored mode
    /// whose content hashes to the same digest. Then a restore leaves it alone (no rewrite, no
    /// new mtime), as when the outputs of a previous run are still there.
    ///
    /// With `stamps`, a file whose stamp (device, inode, size, times, mode) is recorded with
    /// this digest is taken as is without reading it; one that hashes equal is recorded.
    fn already_in_place(
        &self,
        target: &Path,
        file: &OutputFile,
        stamps: Option<&StatCache>,
    ) -> bool {
        let Ok(metadata) = fs::symlink_metadata(target) else { return false };
        let mode = metadata.permissions().mode() & 0o777;
        if !metadata.is_file() || metadata.len() != file.size || mode != restored_mode(file) {
            return false;
        }
        let stamp = FileStamp::of(&metadata);
        if stamps.and_then(|known| known.lookup(&file.path, &stamp)) == Some(file.digest) {
            return true;
        }
        let Ok(opened) = fs::File::open(target) else { return false };
        let same = hash_open_file_on(&self.pool, &opened, file.size)
            .is_ok_and(|found| found == file.digest);
        if same && let Some(known) = stamps {
            known.remember(&file.path, stamp, file.digest);
        }
        same
    }
}

/// Renames `temp` over `target`, first removing a directory that stands where the file goes
/// (a stale output of another shape).
fn replace(temp: &Path, target: &Path) -> io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(target)?,
        _ => {}
    }
    fs::rename(temp, target)
}

/// Directories confirmed to be real directories (not symlinks) inside the root.
struct SafeDirs<'a> {
    root: &'a Path,
    /// A std mutex: restores run on rayon threads, never across an await.
    checked: Mutex<HashSet<String>>,
}

impl SafeDirs<'_> {
    /// Ensures the parent directory of `path` exists inside the root; returns it.
    fn ensure_parent(&self, path: &str) -> Result<PathBuf, RestoreError> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.ensure(parent),
            None => Ok(self.root.to_path_buf()),
        }
    }

    /// Ensures `dir` (relative) exists as a real directory, creating what is missing and
    /// replacing a stale file that stands in its way; a symlink on the way is unsafe.
    fn ensure(&self, dir: &str) -> Result<PathBuf, RestoreError> {
        let mut prefix = String::new();
        for part in dir.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self
                .checked
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&prefix)
            {
                continue;
            }
            let absolute = self.root.join(&prefix);
            let io_error = |source| RestoreError::Io { path: absolute.clone(), source };
            match fs::symlink_metadata(&absolute) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(RestoreError::SymlinkInTheWay { path: absolute });
                }
                Ok(metadata) if metadata.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&absolute).map_err(io_error)?;
                    create_dir(&absolute).map_err(io_error)?;
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    create_dir(&absolute).map_err(io_error)?
                }
                Err(error) => return Err(io_error(error)),
            }
            self.checked
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(prefix.clone());
        }
        Ok(self.root.join(dir))
    }
}

/// Creates a directory; one created meanwhile by a parallel restore is fine.
fn create_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}
