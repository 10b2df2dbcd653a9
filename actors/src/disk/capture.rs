//! Collecting a task's outputs after it ran: the files, directories and symlinks its `outputs`
//! globs match, relative to the project root.
//!
//! A literal output that is a directory stands for everything below it. A directory is
//! recorded, and recreated on restore even when empty, when a literal output names it or lies
//! above it, or when a glob matches its path (`dist/**` matches `dist/logs`), as turbo's
//! archives keep directory entries. A literal output that does not exist is skipped (logged): a
//! task may legitimately produce nothing.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::DiskStore;
use crate::key_gen::{InputSpec, KeyError, KeyManifest, SkipDirs, in_literal_dir};
use crate::result::{OutputFile, OutputSymlink};

/// What a task's outputs globs matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutputs {
    /// Files: (path relative to the root, absolute path, permission bits).
    pub files: Vec<(String, PathBuf, u32)>,
    /// Directories a literal output names or holds, or a glob matches, relative to the root.
    pub dirs: Vec<String>,
    /// Symlinks, relative to the root.
    pub symlinks: Vec<OutputSymlink>,
}

/// Why outputs could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A bad or escaping glob.
    #[error(transparent)]
    Pattern(#[from] KeyError),
    /// An output whose name (or symlink target) is not UTF-8: a record cannot hold it, and
    /// storing the rest would replay an incomplete result.
    #[error("cannot store output {}: its name or link target is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The file, directory or symlink.
        path: PathBuf,
    },
    /// Reading the tree failed.
    #[error("cannot read output {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl CapturedOutputs {
    /// Whether nothing was matched at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty() && self.symlinks.is_empty()
    }

    /// Collects the outputs of `task` matched by `patterns` (relative to `working_dir`, itself
    /// relative to `root`). Like the input walk, a walk never enters `.git` or `skip_dirs` (the
    /// cache directory): a glob such as `**` must not take the cache, or the repository, along.
    pub fn collect(
        root: &Path,
        task: &str,
        working_dir: &str,
        patterns: &[String],
        skip_dirs: &[PathBuf],
    ) -> Result<Self, CaptureError> {
        let spec = InputSpec::compile(task, working_dir, patterns, &[])?;
        let mut captured = CapturedOutputs::default();
        let mut literal_dirs = Vec::new();
        for (_, path) in &spec.literals {
            let absolute = root.join(path);
            match fs::symlink_metadata(&absolute) {
                Ok(metadata) if metadata.is_dir() => literal_dirs.push(path.clone()),
                Ok(metadata) => captured.add(path.clone(), absolute, &metadata)?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    tracing::debug!(task, output = %path, "declared output was not produced");
                }
                Err(source) => return Err(CaptureError::Io { path: absolute, source }),
            }
        }
        let bases =
            crate::key_gen::outermost(spec.bases.iter().chain(&literal_dirs).cloned().collect());
        let skip_dirs = &SkipDirs::new(skip_dirs);
        let walker = Walker { root, spec: &spec, literal_dirs: &literal_dirs, skip_dirs };
        for base in bases.into_iter().filter(|base| !skip_dirs.holds_path(&root.join(base))) {
            walker.walk(&base, &mut captured)?;
        }
        captured.files.sort_by(|a, b| a.0.cmp(&b.0));
        captured.files.dedup_by(|a, b| a.0 == b.0);
        captured.dirs.sort();
        captured.dirs.dedup();
        captured.symlinks.sort_by(|a, b| a.path.cmp(&b.path));
        captured.symlinks.dedup_by(|a, b| a.path == b.path);
        Ok(captured)
    }

    fn add(
        &mut self,
        path: String,
        absolute: PathBuf,
        metadata: &fs::Metadata,
    ) -> Result<(), CaptureError> {
        if metadata.file_type().is_symlink() {
            let target = fs::read_link(&absolute)
                .map_err(|source| CaptureError::Io { path: absolute.clone(), source })?;
            let target = target.into_os_string().into_string();
            let target = target.map_err(|_| CaptureError::NotUtf8 { path: absolute })?;
            self.symlinks.push(OutputSymlink { path, target });
        } else if metadata.is_file() {
            self.files.push((path, absolute, metadata.permissions().mode() & 0o777));
        } else {
            // A named pipe, socket or device has no content to store or restore.
            tracing::warn!(output = %path, "an output is not a regular file or a symlink; it is not cached");
        }
        Ok(())
    }
}

/// The first of `paths` (of output files and symlinks, relative to the root) and `dirs` (output
/// directories) that the outputs `manifest` declares could not have captured: one that no
/// literal output names or lies under and no glob matches, or one that reaches into a `.git`
/// directory below where its literal output or glob starts (a walk never enters one). A
/// directory on the way to where the outputs go (a glob's base, or a parent of a literal output)
/// is accepted too: a restore creates those anyway. A result made elsewhere (a remote cache, or a
/// cache directory others write to) is checked with this before anything of it is stored or
/// restored, so it can write, or replace, only where the task's own outputs go.
pub fn undeclared_output<'a>(
    manifest: &KeyManifest,
    paths: impl IntoIterator<Item = &'a str>,
    dirs: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let spec = InputSpec::compile(&manifest.task, &manifest.working_dir, &manifest.outputs, &[]);
    // Outputs that do not compile could not have captured anything.
    let Ok(spec) = spec else { return paths.into_iter().chain(dirs).next() };
    paths
        .into_iter()
        .find(|path| !spec.reaches(path))
        .or_else(|| dirs.into_iter().find(|dir| !spec.reaches(dir) && !spec.leads_to(dir)))
}

struct Walker<'a> {
    root: &'a Path,
    spec: &'a InputSpec,
    literal_dirs: &'a [String],
    skip_dirs: &'a SkipDirs,
}

impl Walker<'_> {
    fn walk(&self, dir: &str, captured: &mut CapturedOutputs) -> Result<(), CaptureError> {
        let absolute = if dir.is_empty() { self.root.to_path_buf() } else { self.root.join(dir) };
        // The project root itself is never recorded: it always exists.
        if !dir.is_empty() && (in_literal_dir(self.literal_dirs, dir) || self.spec.includes(dir)) {
            captured.dirs.push(dir.to_owned());
        }
        let entries = match fs::read_dir(&absolute) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CaptureError::Io { path: absolute, source }),
        };
        for entry in entries {
            let entry =
                entry.map_err(|source| CaptureError::Io { path: absolute.clone(), source })?;
            let metadata = entry
                .metadata()
                .map_err(|source| CaptureError::Io { path: entry.path(), source })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                // Matched by the name with its undecodable bytes replaced.
                let lossy = entry.file_name().to_string_lossy().into_owned();
                let path = if dir.is_empty() { lossy } else { format!("{dir}/{lossy}") };
                let wanted = in_literal_dir(self.literal_dirs, &path)
                    || if metadata.is_dir() {
                        self.spec.may_match_below(&path)
                    } else {
                        self.spec.includes(&path)
                    };
                if wanted {
                    return Err(CaptureError::NotUtf8 { path: entry.path() });
                }
                continue;
            };
            let path = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            if metadata.is_dir() {
                let skipped = name == ".git" || self.skip_dirs.holds(&entry);
                if !skipped {
                    self.walk(&path, captured)?;
                }
            } else if in_literal_dir(self.literal_dirs, &path) || self.spec.includes(&path) {
                captured.add(path, entry.path(), &metadata)?;
            }
        }
        Ok(())
    }
}

impl DiskStore {
    /// Stores every captured file as a blob, in `captured.files` order (in parallel when there
    /// are many: see [`DiskStore::store_each`]).
    pub fn store_outputs(&self, captured: &CapturedOutputs) -> io::Result<Vec<OutputFile>> {
        self.store_each(&captured.files, |(path, absolute, mode)| {
            let (digest, size) = self.put_file(absolute)?;
            Ok(OutputFile { path: path.clone(), digest, size, mode: *mode })
        })
    }
}
