//! The legacy cache API (`CacheManager`, `CacheConfig`, `CachedTaskResult`) kept working over
//! the new runtime, so callers can migrate to [`EnhancedCacheManager`] at their own pace.
//!
//! # Storage
//! A legacy key is a free string. It becomes a real action record: the key manifest of a
//! synthetic task ([`LEGACY_TASK`], command = the key, no inputs, this build's version and
//! platform), whose digest names the record, so the disk store's check that a record's manifest
//! digest equals its name holds, and `cache gc`, eviction and statistics see legacy entries like
//! any other. It is written by the disk tier's store path, so standard output and error are
//! logs (inline when small, blobs otherwise) as for any task; the
//! legacy `output_files` map (path → content hash), the caller's `cache_key` and whether each
//! log was present are kept in [`ActionResult::metadata`](cuenv_actors::result::ActionResult::metadata); `executed_at` is
//! `executed_at_ms` (millisecond precision).
//!
//! # Why the legacy manager owns a tokio runtime
//! The legacy API is synchronous and is called from plain threads, from inside `#[tokio::main]`
//! and from inside current-thread runtimes. Every way of running async work from sync code on
//! the *caller's* runtime fails one of those: `Runtime::block_on`/`Handle::block_on` panic
//! inside a runtime ("cannot start a runtime from within a runtime"), `block_in_place` panics on
//! a current-thread runtime, and blocking a current-thread runtime's only thread while the work
//! waits to be polled by that same thread deadlocks. So a `CacheManager` starts a private
//! multi-thread runtime (two workers) and its [`EnhancedCacheManager`]'s actors live there. A
//! sync call spawns its work on that runtime and waits on a std channel: the waiting thread is
//! never one the work needs, whatever runtime (if any) the caller is in. The one thread that
//! must not wait is one of the private runtime's own; such calls are refused instead.
//! Dropping a runtime inside an async context panics too, so the private runtime is dropped on
//! a helper thread.

#![allow(deprecated)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cuenv_actors::Digest;
use cuenv_actors::disk::{StoreOutcome, StoreRequest};
use cuenv_actors::key_gen::KeyManifest;
use cuenv_actors::memory::MemoryEntry;
use cuenv_actors::result::Log;
use cuenv_actors::stats::Counters;

use crate::config::{CacheMode, GlobalCacheConfig};
use crate::error::Error;
use crate::manager::EnhancedCacheManager;

/// The task name of every legacy record's manifest.
pub const LEGACY_TASK: &str = "legacy";
/// Metadata key of the legacy `output_files` map, JSON-encoded.
const META_OUTPUT_FILES: &str = "legacy.output_files";
/// Metadata key of the `cache_key` the caller stored in its result.
const META_CACHE_KEY: &str = "legacy.cache_key";
/// Metadata keys saying whether stdout / stderr were captured at all (`None` vs empty).
const META_HAS_STDOUT: &str = "legacy.has_stdout";
const META_HAS_STDERR: &str = "legacy.has_stderr";
/// Worker threads of the private runtime: one to run the actors, one so a slow job never
/// delays another caller's reply.
const WORKERS: usize = 2;

/// The legacy cache configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory.
    pub base_dir: PathBuf,
    /// `off`: nothing is read or stored; `read`: no stores; `write`: no reads.
    pub mode: CacheMode,
    /// Largest size of the store in bytes before eviction.
    pub max_size: u64,
}

impl Default for CacheConfig {
    /// The defaults of [`GlobalCacheConfig::default`] (cache dir from the process env).
    fn default() -> Self {
        let global = GlobalCacheConfig::default();
        CacheConfig {
            base_dir: global.cache_dir,
            mode: global.default_mode,
            max_size: global.max_size,
        }
    }
}

impl CacheConfig {
    /// The global configuration this legacy one stands for; the rest are the defaults.
    pub fn into_global(self) -> GlobalCacheConfig {
        GlobalCacheConfig {
            enabled: self.mode != CacheMode::Off,
            default_mode: self.mode,
            cache_dir: self.base_dir,
            max_size: self.max_size,
            ..GlobalCacheConfig::default()
        }
    }
}

/// A result as the legacy cache recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedTaskResult {
    /// The key the result was stored under, as the caller gave it.
    pub cache_key: String,
    /// When the task ran (kept to the millisecond).
    pub executed_at: SystemTime,
    /// The exit code.
    pub exit_code: i32,
    /// Standard output, if captured.
    pub stdout: Option<Vec<u8>>,
    /// Standard error, if captured.
    pub stderr: Option<Vec<u8>>,
    /// Output files: path → content hash.
    pub output_files: HashMap<String, String>,
}

/// The legacy cache manager: a synchronous facade over an [`EnhancedCacheManager`] running on
/// a private runtime (see the module docs for why).
#[deprecated(note = "use cuenv::EnhancedCacheManager; see docs/cache_migration_guide.md")]
pub struct CacheManager {
    /// The legacy mode, checked before every get and store.
    mode: CacheMode,
    /// The manager whose actors run on `runtime`. Dropped before `runtime` (field order).
    enhanced: EnhancedCacheManager,
    /// Whether `enhanced` has been shut down (by `shutdown`; else `Drop` does it).
    shut_down: bool,
    /// The private runtime; dropped last, on a helper thread.
    runtime: PrivateRuntime,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("mode", &self.mode)
            .field("enhanced", &self.enhanced)
            .finish()
    }
}

impl CacheManager {
    /// Starts a legacy manager for `config`, with the feature flags of the process env.
    #[deprecated(note = "use cuenv::EnhancedCacheManager; see docs/cache_migration_guide.md")]
    pub async fn new(config: CacheConfig) -> Result<Self, Error> {
        let runtime = PrivateRuntime::start()?;
        let global = config.into_global();
        let mode = effective_mode(&global);
        let enhanced = runtime
            .handle()
            .spawn(EnhancedCacheManager::new(global))
            .await
            .map_err(|error| runtime_error(format!("starting the cache manager: {error}")))??;
        Ok(CacheManager { mode, enhanced, shut_down: false, runtime })
    }

    /// Starts a legacy manager with the default configuration of the process env
    /// ([`GlobalCacheConfig::default`]). Works inside and outside a tokio runtime.
    #[deprecated(note = "use cuenv::EnhancedCacheManager; see docs/cache_migration_guide.md")]
    pub fn new_sync() -> Result<Self, Error> {
        Self::start_sync(GlobalCacheConfig::default())
    }

    /// [`CacheManager::new_sync`] with an explicit configuration instead of the process env's.
    #[deprecated(note = "use cuenv::EnhancedCacheManager; see docs/cache_migration_guide.md")]
    pub fn new_sync_with(config: CacheConfig) -> Result<Self, Error> {
        Self::start_sync(config.into_global())
    }

    fn start_sync(global: GlobalCacheConfig) -> Result<Self, Error> {
        let runtime = PrivateRuntime::start()?;
        let mode = effective_mode(&global);
        let enhanced = runtime.run(EnhancedCacheManager::new(global))??;
        Ok(CacheManager { mode, enhanced, shut_down: false, runtime })
    }

    /// The result stored under `cache_key`, from memory or disk; `None` when there is none,
    /// when the mode does not read, or when the record's logs are gone.
    pub fn get_cached_result(&self, cache_key: &str) -> Option<CachedTaskResult> {
        if !self.mode.reads() {
            return None;
        }
        let enhanced = self.enhanced.clone();
        let key = cache_key.to_owned();
        self.runtime.run(async move { get(&enhanced, &key).await }).ok().flatten()
    }

    /// Stores `result` under `cache_key`, replacing what was there; does nothing when the mode
    /// does not write.
    pub fn store_result(&self, cache_key: String, result: CachedTaskResult) -> Result<(), Error> {
        if !self.mode.writes() {
            return Ok(());
        }
        let enhanced = self.enhanced.clone();
        self.runtime.run(async move { store(&enhanced, &cache_key, result).await })?
    }

    /// The manager underneath, for the new API. Its actors run on this manager's private
    /// runtime; calls on it may be made from any runtime. Clones of it answer
    /// [`Error::ShuttingDown`] or an actor-gone error once this manager is shut down or dropped.
    pub fn enhanced(&self) -> &EnhancedCacheManager {
        &self.enhanced
    }

    /// Waits for every call admitted by the enhanced manager, flushes and stops the actors,
    /// then the private runtime. Calls made through [`CacheManager::enhanced`] must be able to
    /// finish: a call spawned on a current-thread runtime whose only thread is the one calling
    /// `shutdown` cannot, and would make `shutdown` wait for ever.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        let enhanced = self.enhanced.clone();
        self.runtime.run(async move { enhanced.shutdown().await })?
    }
}

impl Drop for CacheManager {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "the legacy cache manager did not shut down cleanly");
        }
    }
}

/// The mode in force: `off` when the config disables caching.
fn effective_mode(global: &GlobalCacheConfig) -> CacheMode {
    if global.enabled { global.default_mode } else { CacheMode::Off }
}

fn runtime_error(message: String) -> Error {
    cuenv_actors::Error::Io(std::io::Error::other(message)).into()
}

/// A tokio runtime that only the legacy manager runs work on.
struct PrivateRuntime {
    /// Spawns the manager's work; outlives nothing (the runtime is dropped with this struct).
    handle: tokio::runtime::Handle,
    /// Taken by `Drop`, which drops it on a helper thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl PrivateRuntime {
    fn start() -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("cuenv-compat")
            .enable_all()
            .build()
            .map_err(cuenv_actors::Error::Io)?;
        Ok(PrivateRuntime { handle: runtime.handle().clone(), runtime: Some(runtime) })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Whether the calling thread belongs to this runtime (a worker or a blocking thread).
    fn is_current(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok_and(|current| current.id() == self.handle.id())
    }

    /// Runs `future` on this runtime and blocks the calling thread until it is done. Refused
    /// on this runtime's own threads, where waiting could starve the future.
    fn run<F>(&self, future: F) -> Result<F::Output, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.is_current() {
            return Err(runtime_error(
                "the legacy cache API was called from its own runtime; use CacheManager::enhanced"
                    .to_owned(),
            ));
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = reply.send(future.await);
        });
        // A panic in the future drops `reply`, so this never waits for ever on a lost answer.
        answer.recv().map_err(|_| runtime_error("a legacy cache call panicked".to_owned()))
    }
}

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        if self.is_current() {
            runtime.shutdown_background();
            return;
        }
        // Dropping a runtime waits for its blocking threads, which tokio forbids in an async
        // context (it panics); a plain thread may wait.
        let dropper = std::thread::Builder::new()
            .name("cuenv-compat-drop".to_owned())
            .spawn(move || runtime.shutdown_timeout(Duration::from_secs(10)));
        if let Ok(dropper) = dropper {
            let _ = dropper.join();
        }
    }
}

/// The manifest of the synthetic task a legacy key stands for.
pub fn legacy_manifest(cache_key: &str) -> KeyManifest {
    KeyManifest::for_command(LEGACY_TASK, cache_key)
}

/// The digest of the record a legacy key is stored under.
pub fn legacy_digest(cache_key: &str) -> Digest {
    legacy_manifest(cache_key).digest()
}

async fn get(enhanced: &EnhancedCacheManager, cache_key: &str) -> Option<CachedTaskResult> {
    let result = enhanced.get_cached_result(&legacy_digest(cache_key)).await?;
    let entry = Arc::new(MemoryEntry::new(Arc::clone(&result)));
    let (stdout, stderr) = enhanced.logs(&entry).await?;
    let meta = &result.metadata;
    let output_files = match meta.get(META_OUTPUT_FILES) {
        Some(json) => serde_json::from_str(json).ok()?,
        None => HashMap::new(),
    };
    let present = |key: &str| meta.get(key).is_none_or(|value| value == "true");
    Some(CachedTaskResult {
        cache_key: meta.get(META_CACHE_KEY).cloned().unwrap_or_else(|| cache_key.to_owned()),
        executed_at: UNIX_EPOCH + Duration::from_millis(result.executed_at_ms),
        exit_code: result.exit_code,
        stdout: present(META_HAS_STDOUT).then_some(stdout),
        stderr: present(META_HAS_STDERR).then_some(stderr),
        output_files,
    })
}

async fn store(
    enhanced: &EnhancedCacheManager,
    cache_key: &str,
    result: CachedTaskResult,
) -> Result<(), Error> {
    let manifest = legacy_manifest(cache_key);
    let digest = manifest.digest();
    let mut metadata = BTreeMap::new();
    let output_files = serde_json::to_string(&result.output_files)
        .map_err(|error| runtime_error(format!("encoding output files: {error}")))?;
    metadata.insert(META_OUTPUT_FILES.to_owned(), output_files);
    metadata.insert(META_CACHE_KEY.to_owned(), result.cache_key);
    metadata.insert(META_HAS_STDOUT.to_owned(), result.stdout.is_some().to_string());
    metadata.insert(META_HAS_STDERR.to_owned(), result.stderr.is_some().to_string());
    // The disk tier's own store path: logs inline or as blobs by its threshold, no outputs
    // (the synthetic manifest declares none, so nothing is read from `project_root`).
    let request = StoreRequest {
        digest,
        manifest,
        project_root: PathBuf::new(),
        exit_code: result.exit_code,
        stdout: Log::Bytes(result.stdout.unwrap_or_default()),
        stderr: Log::Bytes(result.stderr.unwrap_or_default()),
        executed_at_ms: millis_since_epoch(result.executed_at),
        duration_ms: 0,
        max_size: None,
        metadata,
        remember_as: None,
    };
    let runtime = enhanced.runtime();
    let StoreOutcome::Stored { entry, bytes } = runtime.disk().store_result(request).await? else {
        return Err(runtime_error("a legacy result without a size limit was refused".to_owned()));
    };
    // Replaces an entry an earlier get or store left in memory, which would now be stale.
    runtime.memory().insert(digest, entry).await?;
    runtime.stats().record(Counters { writes: 1, bytes_written: bytes, ..Counters::default() });
    Ok(())
}

/// Milliseconds since the Unix epoch; times before it count as the epoch.
fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}
