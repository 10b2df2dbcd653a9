//! Input resolution: globs to a sorted list of hashed files.
//!
//! Each glob is joined to the working directory, normalised, and split into a literal base
//! directory and the glob itself. Only the bases are walked (never the whole project). A task
//! with few input files is listed, stat'ed and hashed inline, so it never wakes the pool (whose
//! idle threads would spin beside the tasks being run); once the listing passes a few hundred
//! files, the walk starts over on the library's pool, every directory and every batch of files a
//! rayon task (`parallel.rs`), so stat, read and hash spread over the cores. `.git`
//! directories and the cache directory are never entered; symlinks are hashed as links and
//! never followed.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::KeyError;
use super::hash::hash_open_file_on;
use super::manifest::{InputFile, InputKind};
use super::stat_cache::{FileStamp, StatCache};
use crate::{Digest, fsio};

/// Up to this many files, a key is computed inline; beyond it, on the pool.
const PARALLEL_AT: usize = 256;

/// Compiled input patterns of one task.
pub(crate) struct InputSpec {
    /// Globs of the form `dir/**` (everything below a literal directory), as `dir/` prefixes:
    /// the commonest input pattern, matched without compiling a glob.
    below: Vec<String>,
    include: GlobSet,
    /// The normalised patterns of `include`, as written into it.
    include_patterns: Vec<String>,
    ignore: GlobSet,
    /// Literal (glob-free) inputs: (pattern as written, path relative to the root).
    pub(crate) literals: Vec<(String, String)>,
    /// Directories to walk, relative to the root, none inside another.
    pub(crate) bases: Vec<String>,
}

/// Counts of how each file's hash was obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashCounts {
    /// Files read and hashed (symlinks, hashed as their target path, count in neither field).
    pub hashed: u64,
    /// Files whose hash came from the stat cache.
    pub reused: u64,
    /// Bytes read for hashing.
    pub bytes_hashed: u64,
}

/// Joins `pattern` to `working_dir` and normalises `.` and `..` lexically (`""` is the root).
/// `None` if the result leaves the root or the pattern is absolute.
pub fn join_normalised(working_dir: &str, pattern: &str) -> Option<String> {
    if pattern.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in working_dir.split('/').chain(pattern.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Whether `text` holds glob syntax (`*`, `?`, `[…]`, `{…}`).
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}'])
}

fn glob(task: &str, pattern: &str, normalised: &str) -> Result<globset::Glob, KeyError> {
    GlobBuilder::new(normalised).literal_separator(true).build().map_err(|error| {
        KeyError::InvalidGlob {
            task: task.to_owned(),
            pattern: pattern.to_owned(),
            message: error.kind().to_string(),
        }
    })
}

impl InputSpec {
    /// Compiles the input and ignore globs of a task.
    pub(crate) fn compile(
        task: &str,
        working_dir: &str,
        inputs: &[String],
        ignore: &[String],
    ) -> Result<Self, KeyError> {
        let mut include = GlobSetBuilder::new();
        let mut below = Vec::new();
        let mut literals = Vec::new();
        let mut bases = Vec::new();
        let mut include_patterns = Vec::new();
        for pattern in inputs {
            let normalised = join_normalised(working_dir, pattern).ok_or_else(|| {
                KeyError::OutsideRoot { task: task.to_owned(), pattern: pattern.clone() }
            })?;
            let everything_below = match normalised.strip_suffix("**") {
                Some(dir) if (dir.is_empty() || dir.ends_with('/')) && !is_glob(dir) => Some(dir),
                _ => None,
            };
            if let Some(dir) = everything_below {
                below.push(dir.to_owned());
                bases.push(dir.trim_end_matches('/').to_owned());
            } else if is_glob(&normalised) {
                include.add(glob(task, pattern, &normalised)?);
                include_patterns.push(normalised.clone());
                bases.push(literal_base(&normalised));
            } else {
                literals.push((pattern.clone(), normalised));
            }
        }
        let mut ignored = GlobSetBuilder::new();
        for pattern in ignore {
            let normalised =
                join_normalised(working_dir, &ignore_glob(pattern)).ok_or_else(|| {
                    KeyError::OutsideRoot { task: task.to_owned(), pattern: pattern.clone() }
                })?;
            ignored.add(glob(task, pattern, &normalised)?);
        }
        // Most tasks have no glob that needs a matcher (`dir/**` and literals do without), and
        // building even an empty set costs automata: an empty set is made directly.
        let build = |builder: GlobSetBuilder, globs: usize| {
            if globs == 0 {
                return Ok(GlobSet::empty());
            }
            builder.build().map_err(|error| KeyError::InvalidGlob {
                task: task.to_owned(),
                pattern: inputs.join(", "),
                message: error.to_string(),
            })
        };
        let include = build(include, include_patterns.len())?;
        let ignore = build(ignored, ignore.len())?;
        Ok(InputSpec { below, include, include_patterns, ignore, literals, bases })
    }

    /// Whether a walk of these patterns, as outputs are collected, reaches `path` (relative to
    /// the root): a literal path, a path below a literal directory, or a glob match below its
    /// base, and below where the walk starts, through no `.git` directory (a walk never enters
    /// one).
    pub(crate) fn reaches(&self, path: &str) -> bool {
        let walked_to = |base: &str| {
            let rest = if base.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(base).and_then(|rest| rest.strip_prefix('/'))
            };
            rest.is_some_and(|rest| !rest.split('/').any(|part| part == ".git"))
        };
        self.literals.iter().any(|(_, literal)| path == literal || walked_to(literal))
            || (self.includes(path) && self.bases.iter().any(|base| walked_to(base)))
    }

    /// Whether the directory `dir` (relative to the root) is a literal pattern, a glob's base,
    /// or a directory above one: on the way to where the patterns point.
    pub(crate) fn leads_to(&self, dir: &str) -> bool {
        let on_the_way =
            |to: &str| to == dir || to.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
        self.literals.iter().any(|(_, literal)| on_the_way(literal))
            || self.bases.iter().any(|base| on_the_way(base))
    }

    /// Whether an input glob matches `path` (relative to the root).
    pub(crate) fn includes(&self, path: &str) -> bool {
        self.below.iter().any(|dir| path.starts_with(dir.as_str())) || self.include.is_match(path)
    }

    /// Whether an input glob may match something below the directory `dir` (relative to the
    /// root). Conservative: only a glob too shallow to reach below `dir` (no `**`, no more
    /// components than `dir` has) rules it out.
    pub(crate) fn may_match_below(&self, dir: &str) -> bool {
        let inside = format!("{dir}/");
        let depth = dir.split('/').count();
        self.below
            .iter()
            .any(|prefix| inside.starts_with(prefix.as_str()) || prefix.starts_with(&inside))
            || self
                .include_patterns
                .iter()
                .any(|pattern| pattern.contains("**") || pattern.split('/').count() > depth)
    }

    /// Whether an ignore glob matches `path` (relative to the root).
    pub(crate) fn ignores(&self, path: &str) -> bool {
        !self.ignore.is_empty() && self.ignore.is_match(path)
    }
}

/// The leading glob-free components of a normalised pattern.
fn literal_base(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('/').take_while(|part| !is_glob(part)).collect();
    // The last component, if it was literal, is a file name unless the glob continues below it.
    let literal_count = parts.len().min(pattern.split('/').count() - 1);
    parts[..literal_count].join("/")
}

/// Drops every base that lies inside another (a walk of the outer one covers it).
pub(crate) fn outermost(mut bases: Vec<String>) -> Vec<String> {
    bases.sort();
    bases.dedup();
    let mut kept: Vec<String> = Vec::new();
    for base in bases {
        let covered = kept.iter().any(|outer| {
            outer.is_empty() || base == *outer || base.starts_with(&format!("{outer}/"))
        });
        if !covered {
            kept.push(base);
        }
    }
    kept
}

/// Everything a walk needs, shared by every rayon task of one key.
pub(super) struct Walk<'a> {
    pub(super) task: &'a str,
    pub(super) root: &'a Path,
    pub(super) skip_dirs: &'a SkipDirs,
    pub(super) spec: &'a InputSpec,
    pub(super) stat_cache: &'a StatCache,
    pub(super) racy_window: Duration,
    pub(super) now_ns: i64,
    /// Whether the stat cache held anything when the walk began: if not, an unsettled file has
    /// no old entry to drop and need not be reported back.
    pub(super) stat_cache_had_entries: bool,
    /// The library's pool, for many files and for large ones.
    pub(super) pool: &'a rayon::ThreadPool,
}

#[derive(Default)]
struct Collected {
    files: Vec<InputFile>,
    fresh: Vec<(String, FileStamp, Digest)>,
    counts: HashCounts,
}

/// Directories a walk never enters (the cache directory), known by identity (device and inode),
/// not by path: a relative path, a symlink or a `..` on either side spells the same directory
/// differently. Telling them apart costs nothing per directory: an entry's inode comes with its
/// name, and only an inode that matches is stat'ed for its device.
#[derive(Debug, Clone, Default)]
pub(crate) struct SkipDirs(Vec<(u64, u64)>);

impl SkipDirs {
    /// The identities of those of `dirs` that exist.
    pub(crate) fn new(dirs: &[PathBuf]) -> Self {
        SkipDirs(
            dirs.iter()
                .filter_map(|dir| fs::metadata(dir).ok())
                .map(|metadata| fsio::identity(&metadata))
                .collect(),
        )
    }

    /// Whether the directory entry `entry` is one of them.
    pub(crate) fn holds(&self, entry: &fs::DirEntry) -> bool {
        use std::os::unix::fs::DirEntryExt;
        self.0.iter().any(|(_, ino)| *ino == entry.ino())
            && entry.metadata().is_ok_and(|metadata| self.0.contains(&fsio::identity(&metadata)))
    }

    /// Whether the directory at `path` is one of them.
    pub(crate) fn holds_path(&self, path: &Path) -> bool {
        !self.0.is_empty()
            && fs::metadata(path).is_ok_and(|metadata| self.0.contains(&fsio::identity(&metadata)))
    }
}

impl Walk<'_> {
    /// Resolves and hashes every input, in two phases: list the candidate files (one `readdir`
    /// per directory, no stat), then stat and hash them — inline when there are few (a small
    /// task never wakes the pool, whose idle threads would spin beside the tasks being run), on
    /// the pool when there are many.
    pub(super) fn run(&self) -> Result<(Vec<InputFile>, HashCounts), KeyError> {
        let mut literal_dirs = Vec::new();
        let mut bases = self.spec.bases.clone();
        let mut literal_files: Vec<String> = Vec::new();
        for (pattern, path) in &self.spec.literals {
            let absolute = self.root.join(path);
            let metadata = fs::symlink_metadata(&absolute).map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => {
                    KeyError::MissingInput { task: self.task.to_owned(), pattern: pattern.clone() }
                }
                _ => KeyError::io(self.task, &absolute, error),
            })?;
            if metadata.is_dir() {
                // A literal directory stands for every file below it.
                bases.push(path.clone());
                literal_dirs.push(path.clone());
            } else if !self.spec.ignores(path) {
                literal_files.push(path.clone());
            }
        }
        let bases = outermost(bases);
        let mut candidates: Vec<Candidate> =
            literal_files.iter().map(|path| Candidate::literal(path)).collect();
        let mut few = true;
        for base in &bases {
            few = few && self.list(base.clone(), &literal_dirs, &mut candidates, PARALLEL_AT)?;
        }
        let visited = if few {
            // A small task: stat and hash right here; the pool stays asleep.
            candidates.sort_unstable_by(|a, b| a.path.cmp(&b.path));
            candidates.dedup_by(|a, b| a.path == b.path);
            candidates
                .into_iter()
                .map(|candidate| self.stat_and_visit(candidate))
                .collect::<Result<_, _>>()?
        } else {
            // Many files: walk again, every directory and batch of files a task on the pool.
            self.pool
                .install(|| super::parallel::walk(self, &bases, &literal_dirs, &literal_files))?
        };
        let mut collected = collect(visited);
        collected.files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        collected.files.dedup_by(|a, b| a.path == b.path);
        self.stat_cache.record(collected.fresh, self.now_ns);
        Ok((collected.files, collected.counts))
    }

    /// Stats a candidate (through its directory entry when it has one: `fstatat` on the open
    /// directory, no walk of the whole path) and visits it.
    pub(super) fn stat_and_visit(&self, candidate: Candidate) -> Result<Visited, KeyError> {
        let Candidate { path, entry } = candidate;
        let metadata = match &entry {
            Some(entry) => entry.metadata(),
            None => fs::symlink_metadata(self.root.join(&path)),
        }
        .map_err(|error| KeyError::io(self.task, &self.root.join(&path), error))?;
        self.visit_file(path, &metadata)
    }

    pub(super) fn wanted(&self, literal_dirs: &[String], path: &str) -> bool {
        (in_literal_dir(literal_dirs, path) || self.spec.includes(path)) && !self.spec.ignores(path)
    }

    /// Lists the files under `base` that the inputs want (files and symlinks; `.git` and the
    /// cache directory are never entered; a missing base matches nothing). Stops early and
    /// returns `false` once `out` holds more than `limit` files.
    fn list(
        &self,
        base: String,
        literal_dirs: &[String],
        out: &mut Vec<Candidate>,
        limit: usize,
    ) -> Result<bool, KeyError> {
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            let absolute =
                if dir.is_empty() { self.root.to_path_buf() } else { self.root.join(&dir) };
            let entries = match fs::read_dir(&absolute) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(KeyError::io(self.task, &absolute, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| KeyError::io(self.task, &absolute, error))?;
                let file_type = entry
                    .file_type()
                    .map_err(|error| KeyError::io(self.task, &entry.path(), error))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    self.unspellable(&dir, &entry, file_type.is_dir(), literal_dirs)?;
                    continue;
                };
                let path = if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") };
                if file_type.is_dir() {
                    if self.enters(name, &entry) {
                        stack.push(path);
                    }
                } else if self.wanted(literal_dirs, &path) {
                    out.push(Candidate { path, entry: Some(entry) });
                    if out.len() > limit {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// An entry of `dir` whose name is not UTF-8: an error when the inputs may want it or
    /// something below it (matched by the name with its undecodable bytes replaced); otherwise
    /// it is none of the key's business and is skipped.
    pub(super) fn unspellable(
        &self,
        dir: &str,
        entry: &fs::DirEntry,
        is_dir: bool,
        literal_dirs: &[String],
    ) -> Result<(), KeyError> {
        let lossy = entry.file_name().to_string_lossy().into_owned();
        let path = if dir.is_empty() { lossy } else { format!("{dir}/{lossy}") };
        let reached = if is_dir {
            !self.skip_dirs.holds(entry)
                && (in_literal_dir(literal_dirs, &path) || self.spec.may_match_below(&path))
        } else {
            self.wanted(literal_dirs, &path)
        };
        if reached {
            return Err(KeyError::NotUtf8 { task: self.task.to_owned(), path: entry.path() });
        }
        Ok(())
    }

    /// Whether a walk descends into the directory `entry`, called `name`.
    pub(super) fn enters(&self, name: &str, entry: &fs::DirEntry) -> bool {
        name != ".git" && !self.skip_dirs.holds(entry)
    }

    /// Hashes the file at `path` (relative to the root) whose metadata is `metadata`, unless the
    /// stat cache knows it; the absolute path is only built when the file must be read.
    pub(super) fn visit_file(
        &self,
        path: String,
        metadata: &fs::Metadata,
    ) -> Result<Visited, KeyError> {
        if metadata.file_type().is_symlink() {
            let absolute = self.root.join(&path);
            let target = fs::read_link(&absolute)
                .map_err(|error| KeyError::io(self.task, &absolute, error))?;
            let bytes = target.as_os_str().as_bytes();
            let file = InputFile {
                path,
                kind: InputKind::Symlink,
                hash: Digest::of(bytes),
                size: bytes.len() as u64,
            };
            return Ok(Visited { file, fresh: None, source: Source::Link });
        }
        if !metadata.is_file() {
            let path = self.root.join(&path);
            return Err(KeyError::NotAFile { task: self.task.to_owned(), path });
        }
        let kind = if metadata.permissions().mode() & 0o111 != 0 {
            InputKind::Executable
        } else {
            InputKind::File
        };
        let stamp = FileStamp::of(metadata);
        if let Some(hash) = self.stat_cache.lookup(&path, &stamp) {
            let file = InputFile { path, kind, hash, size: metadata.len() };
            return Ok(Visited { file, fresh: None, source: Source::StatCache });
        }
        let absolute = self.root.join(&path);
        let hash = fsio::open_nonblocking(&absolute)
            .and_then(|opened| hash_open_file_on(self.pool, &opened, metadata.len()))
            .map_err(|error| KeyError::io(self.task, &absolute, error))?;
        // Only settled files go into the stat cache; skip the copy of the path for the rest.
        let keep = self.stat_cache_had_entries || stamp.settled(self.now_ns, self.racy_window);
        let fresh = keep.then(|| (path.clone(), stamp, hash));
        let file = InputFile { path, kind, hash, size: metadata.len() };
        Ok(Visited { file, fresh, source: Source::Read(metadata.len()) })
    }
}

/// Whether `path` is one of `literal_dirs` or lies below one (`""` is the root).
pub(crate) fn in_literal_dir(literal_dirs: &[String], path: &str) -> bool {
    literal_dirs.iter().any(|dir| {
        dir.is_empty()
            || path
                .strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// An `ignoreInputs` pattern as a glob: one without `/` matches a name at any depth.
pub fn ignore_glob(pattern: &str) -> String {
    if pattern.contains('/') { pattern.to_owned() } else { format!("**/{pattern}") }
}

/// A file to stat and hash: its path relative to the root.
pub(super) struct Candidate {
    pub(super) path: String,
    /// Its directory entry, when a listing found it (stat'ed through the open directory).
    pub(super) entry: Option<fs::DirEntry>,
}

impl Candidate {
    pub(super) fn literal(path: &str) -> Self {
        Candidate { path: path.to_owned(), entry: None }
    }
}

pub(super) struct Visited {
    file: InputFile,
    fresh: Option<(String, FileStamp, Digest)>,
    source: Source,
}

/// Where a file's hash came from.
enum Source {
    /// Read and hashed this many bytes.
    Read(u64),
    /// Reused from the stat cache.
    StatCache,
    /// A symlink, hashed as its target path.
    Link,
}

fn collect(visited: Vec<Visited>) -> Collected {
    let mut collected = Collected::default();
    collected.files.reserve(visited.len());
    for visited in visited {
        match visited.source {
            Source::Read(bytes) => {
                collected.counts.hashed += 1;
                collected.counts.bytes_hashed += bytes;
            }
            Source::StatCache => collected.counts.reused += 1,
            Source::Link => {}
        }
        collected.fresh.extend(visited.fresh);
        collected.files.push(visited.file);
    }
    collected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_joins_and_rejects_escapes() {
        assert_eq!(join_normalised("", "src/**/*.rs").as_deref(), Some("src/**/*.rs"));
        assert_eq!(join_normalised("pkg/a", "./src/x").as_deref(), Some("pkg/a/src/x"));
        assert_eq!(join_normalised("pkg/a", "../b/src").as_deref(), Some("pkg/b/src"));
        assert_eq!(join_normalised("pkg", "../../x"), None);
        assert_eq!(join_normalised("", "/etc/passwd"), None);
    }

    #[test]
    fn bases_are_the_literal_prefix_and_nested_ones_collapse() {
        assert_eq!(literal_base("src/**/*.rs"), "src");
        assert_eq!(literal_base("*.rs"), "");
        assert_eq!(literal_base("a/b/c*.txt"), "a/b");
        assert_eq!(
            outermost(vec!["a/b".into(), "a".into(), "ab".into(), "a/b/c".into()]),
            ["a", "ab"]
        );
        assert_eq!(outermost(vec!["x".into(), String::new()]), [""]);
    }
}
