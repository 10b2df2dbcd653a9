//! Key generation: from a task to its action digest and key manifest.
//!
//! [`KeyEngine`] is the synchronous core. It owns a rayon pool (never the global one, so a
//! host application's pool is left alone) and one stat cache per project. The `KeyGen` actor
//! wraps it so a tokio worker never blocks on hashing.

mod actor;
mod hash;
mod inputs;
mod manifest;
mod parallel;
mod request;
mod stat_cache;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use actor::KeyGenHandle;
pub use hash::{LARGE_FILE, hash_open_file, hash_open_file_on, hash_reader, hash_reader_with};
pub use inputs::{HashCounts, ignore_glob, is_glob, join_normalised};
pub(crate) use inputs::{InputSpec, SkipDirs, in_literal_dir, outermost};
pub use manifest::{InputFile, InputKind, InputPart, KEY_FORMAT_VERSION, KeyManifest, platform};
pub use request::KeyRequest;
pub use stat_cache::{FileStamp, StatCache};

use crate::Digest;

/// Why a key could not be computed. Each variant names the task.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A literal (glob-free) input does not exist.
    #[error("task \"{task}\": input \"{pattern}\" does not exist")]
    MissingInput {
        /// The task.
        task: String,
        /// The input as written.
        pattern: String,
    },
    /// An input or ignore pattern is not a valid glob.
    #[error("task \"{task}\": invalid glob \"{pattern}\": {message}")]
    InvalidGlob {
        /// The task.
        task: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A pattern is absolute or climbs out of the project root.
    #[error("task \"{task}\": input \"{pattern}\" is outside the project root")]
    OutsideRoot {
        /// The task.
        task: String,
        /// The pattern as written.
        pattern: String,
    },
    /// Reading an input failed.
    #[error("task \"{task}\": cannot read input {}: {source}", path.display())]
    Io {
        /// The task.
        task: String,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory below an input base has a name that is not UTF-8, which a key (its
    /// globs, its manifest) cannot spell; leaving it out would let it change unseen.
    #[error(
        "task \"{task}\": input {} has a name that is not valid UTF-8; rename it, or narrow the task's inputs so they do not reach it",
        path.display()
    )]
    NotUtf8 {
        /// The task.
        task: String,
        /// The file or directory.
        path: PathBuf,
    },
    /// An input is a named pipe, a socket or a device: it has no content a key could hash
    /// (reading a pipe would wait for a writer).
    #[error(
        "task \"{task}\": input {} is not a regular file (a named pipe, socket or device), which a key cannot hash; narrow the task's inputs so they do not match it",
        path.display()
    )]
    NotAFile {
        /// The task.
        task: String,
        /// The special file.
        path: PathBuf,
    },
    /// The hashing pool could not be built.
    #[error("cannot start the hashing thread pool: {0}")]
    Pool(String),
}

impl KeyError {
    fn io(task: &str, path: &Path, source: std::io::Error) -> Self {
        KeyError::Io { task: task.to_owned(), path: path.to_owned(), source }
    }
}

/// How the key engine is set up.
#[derive(Debug, Clone)]
pub struct KeyGenSettings {
    /// Threads of the hashing pool; 0 means one per available core.
    pub threads: usize,
    /// Where stat caches are persisted (one file per project); `None` keeps them in memory only.
    pub stat_cache_dir: Option<PathBuf>,
    /// Directories never walked for inputs (the cache directory itself, if it sits inside a
    /// project).
    pub skip_dirs: Vec<PathBuf>,
    /// A file changed less than this long before it was stat'ed is rehashed every time (see
    /// the stat cache's racy rule). One second covers every common filesystem's timestamp
    /// granularity.
    pub racy_window: Duration,
}

impl Default for KeyGenSettings {
    fn default() -> Self {
        KeyGenSettings {
            threads: 0,
            stat_cache_dir: None,
            skip_dirs: Vec::new(),
            racy_window: Duration::from_secs(1),
        }
    }
}

/// The library's own rayon pool: `threads` threads (0 = one per core), named `cuenv-hash-N`.
pub fn hash_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, rayon::ThreadPoolBuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|index| format!("cuenv-hash-{index}"))
        .build()?;
    Ok(Arc::new(pool))
}

/// A computed key.
#[derive(Debug, Clone)]
pub struct ActionKey {
    /// The action digest.
    pub digest: Digest,
    /// Everything that went into it.
    pub manifest: KeyManifest,
    /// How the input hashes were obtained.
    pub counts: HashCounts,
    /// The stat cache of the project, so that a restore can skip hashing outputs whose
    /// stamps it already knows.
    pub stamps: Arc<StatCache>,
}

/// The input files that differ between two keys of one task — changed, added or removed —
/// made before and after it ran, other than the task's own outputs (a task may write into the
/// tree its inputs come from). Sorted by path.
pub fn inputs_changed(before: &KeyManifest, after: &KeyManifest) -> Vec<String> {
    // An output pattern that does not compile was refused when the outputs were collected;
    // here it only means every change counts.
    let outputs = InputSpec::compile(&before.task, &before.working_dir, &before.outputs, &[]).ok();
    let is_output = |path: &str| outputs.as_ref().is_some_and(|spec| spec.reaches(path));
    let files = |manifest: &'_ KeyManifest| -> HashMap<String, InputFile> {
        manifest.input_files().iter().map(|file| (file.path.clone(), file.clone())).collect()
    };
    let (old, new) = (files(before), files(after));
    let mut changed: Vec<String> = old
        .iter()
        .filter(|(path, file)| new.get(*path) != Some(file))
        .map(|(path, _)| path)
        .chain(new.keys().filter(|path| !old.contains_key(*path)))
        .filter(|path| !is_output(path))
        .cloned()
        .collect();
    changed.sort();
    changed
}

/// The synchronous key generator: a rayon pool plus per-project stat caches.
#[derive(Debug)]
pub struct KeyEngine {
    pool: Arc<rayon::ThreadPool>,
    settings: KeyGenSettings,
    /// `settings.skip_dirs`, by identity.
    skip_dirs: SkipDirs,
    /// Stat caches by project root. A std mutex: it is held only to find or insert an `Arc`,
    /// never while hashing.
    stat_caches: Mutex<HashMap<PathBuf, Arc<StatCache>>>,
}

impl KeyEngine {
    /// Builds the engine and its own pool of `settings.threads` threads.
    pub fn new(settings: KeyGenSettings) -> Result<Self, KeyError> {
        let pool =
            hash_pool(settings.threads).map_err(|error| KeyError::Pool(error.to_string()))?;
        Ok(Self::with_pool(settings, pool))
    }

    /// Builds the engine on an existing pool (the runtime shares one pool between hashing
    /// inputs and storing outputs).
    pub fn with_pool(settings: KeyGenSettings, pool: Arc<rayon::ThreadPool>) -> Self {
        let skip_dirs = SkipDirs::new(&settings.skip_dirs);
        KeyEngine { pool, settings, skip_dirs, stat_caches: Mutex::default() }
    }

    /// Computes the key of `request`. Blocks the calling thread while the pool hashes; call it
    /// from a blocking context (the `KeyGen` actor does).
    pub fn compute(&self, request: &KeyRequest) -> Result<ActionKey, KeyError> {
        let stamps = self.stat_cache(&request.project_root);
        let (inputs, counts) = match &request.cache_key {
            Some(key) => (InputPart::CacheKey(key.clone()), HashCounts::default()),
            None => {
                let (files, counts) = self.hash_inputs(request, &stamps)?;
                (InputPart::Files(files), counts)
            }
        };
        let manifest = KeyManifest {
            format: KEY_FORMAT_VERSION,
            task: request.task_name.clone(),
            command: request.command.clone(),
            args: request.args.clone(),
            working_dir: join_normalised("", &request.working_dir).unwrap_or_default(),
            env: request
                .env_filter
                .filter(&request.env)
                .into_iter()
                .map(|(name, value)| (name, Digest::of(value.as_bytes())))
                .collect(),
            inputs,
            outputs: request.outputs.clone(),
            custom: request.custom.clone(),
            dependencies: request.dependencies.clone(),
            cuenv_version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: platform(),
        };
        Ok(ActionKey { digest: manifest.digest(), manifest, counts, stamps })
    }

    fn hash_inputs(
        &self,
        request: &KeyRequest,
        stat_cache: &StatCache,
    ) -> Result<(Vec<InputFile>, HashCounts), KeyError> {
        let task = request.task_name.as_str();
        if join_normalised("", &request.working_dir).is_none() {
            return Err(KeyError::OutsideRoot {
                task: task.to_owned(),
                pattern: request.working_dir.clone(),
            });
        }
        let spec =
            InputSpec::compile(task, &request.working_dir, &request.inputs, &request.ignore)?;
        let walk = inputs::Walk {
            task,
            root: &request.project_root,
            skip_dirs: &self.skip_dirs,
            spec: &spec,
            stat_cache,
            racy_window: self.settings.racy_window,
            now_ns: stat_cache::now_ns(),
            stat_cache_had_entries: !stat_cache.is_empty(),
            pool: &self.pool,
        };
        walk.run()
    }

    /// The stat cache of a project, loaded on first use.
    pub fn stat_cache(&self, project_root: &Path) -> Arc<StatCache> {
        let mut caches = self.stat_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cache = caches.entry(project_root.to_owned()).or_insert_with(|| {
            Arc::new(match &self.settings.stat_cache_dir {
                Some(dir) => StatCache::load(
                    stat_cache::file_for(dir, project_root),
                    self.settings.racy_window,
                ),
                None => StatCache::in_memory(self.settings.racy_window),
            })
        });
        Arc::clone(cache)
    }

    /// Drops every stat cache held in memory (their files stay); the next key of each project
    /// reloads its file.
    pub fn forget_stat_caches(&self) {
        self.stat_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// Every stat cache that changed since the last call, as (file, bytes) to write.
    pub fn take_stat_cache_snapshots(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let caches: Vec<Arc<StatCache>> = {
            let caches = self.stat_caches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            caches.values().cloned().collect()
        };
        caches.iter().filter_map(|cache| cache.take_snapshot()).collect()
    }

    /// Runs `work` on the hashing pool (for other CPU-bound work such as hashing outputs).
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}

#[cfg(test)]
mod tests;
