//! The cache manager: wraps a task's execution as a single-flight cached request.
//!
//! `execute` computes the task's key (KeyGen), looks it up (memory, then disk, back-filling
//! memory), and on a hit restores the outputs and returns the recorded result. On a miss,
//! concurrent calls with the same digest share one execution: the leader's execution runs in its
//! own task (dropping a caller cancels nothing), takes the digest's cross-process lock, looks
//! again (another process may have just stored it), executes, and stores outputs, logs and
//! record before it releases the lock and publishes to the waiters.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cuenv_actors::disk::{
    DiskLookup, DiskSettings, DiskStore, LogSource, Looked, RestoreReport, RestoreTarget,
    StoreOutcome, StoreRequest, now_ms,
};
use cuenv_actors::key_gen::{ActionKey, KeyManifest, KeyRequest, inputs_changed};
use cuenv_actors::memory::MemoryEntry;
use cuenv_actors::remote::RemoteSettings;
use cuenv_actors::result::{ActionResult, LogRef, TaskOutput};
use cuenv_actors::stats::Counters;
use cuenv_actors::{Digest, Runtime, RuntimeSettings};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::config::{
    CacheFeatureFlags, CacheMode, GlobalCacheConfig, RemoteCacheConfig, process_env,
};
use crate::error::Error;
use crate::gate::WorkGate;
use crate::key::{TaskInvocation, key_request};
use crate::single_flight::{Join, SingleFlight};
use crate::task::TaskConfig;

/// The most prefetch outcomes kept for lookups still to come.
const PREFETCH_MEMO_CAP: usize = 16_384;

/// How long a process waits for another process executing the same action before it executes
/// itself, when the task sets no `cacheConfig.timeout`.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// How one call behaves, beyond its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecuteOptions {
    /// Return as soon as the execution finished, and store its result in the background (the
    /// cross-process lock is held until the store is done; shutdown waits for it; a concurrent
    /// identical call waits for the store and shares the result). `cuenv run` uses this so a
    /// task's dependents start while its outputs are being stored. At most
    /// [`BACKGROUND_STORES`] stores run in the background at once; past that, a call returns
    /// once its result is stored.
    pub store_in_background: bool,
}

/// Which tier served a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-process memory tier.
    Memory,
    /// The local disk store.
    Disk,
    /// The remote cache.
    Remote,
}

/// Where an execution's result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Executed by this call.
    Executed,
    /// Replayed from the cache.
    Hit(Tier),
    /// Executed by a concurrent call in this process with the same digest.
    Shared,
    /// Caching is off for this task; executed without a key.
    Uncached,
}

/// What a call produced.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The task.
    pub task: String,
    /// The action digest (none when uncached).
    pub digest: Option<Digest>,
    /// The exit code (executed or recorded).
    pub exit_code: i32,
    /// Where the result came from.
    pub source: Source,
    /// How long the execution took (the recorded one, for hits).
    pub duration_ms: u64,
    /// The stored or replayed result with its small blobs.
    pub entry: Option<Arc<MemoryEntry>>,
    /// Whether this call stored a new result.
    pub stored: bool,
    /// The project root the outputs were written under.
    pub project_root: PathBuf,
}

type Flown = Result<Execution, Error>;

struct Inner {
    config: GlobalCacheConfig,
    flags: CacheFeatureFlags,
    runtime: Runtime,
    /// Executions in flight in this process, by digest.
    flights: SingleFlight<Digest, Flown>,
    /// Admits calls until shutdown; shutdown waits for everything admitted.
    gate: WorkGate,
    /// Leader tasks; joined at shutdown. A std mutex: only held to spawn or reap.
    leaders: Mutex<JoinSet<()>>,
    /// What `prefetch` heard from the remote, by digest, until the lookup that follows takes
    /// it: `true` when the result was fetched, `false` when the remote does not have it. A std
    /// mutex: only held to insert or take.
    prefetched: Mutex<HashMap<Digest, bool>>,
    /// Permits for stores in the background, at most [`BACKGROUND_STORES`] at once.
    background: Arc<Semaphore>,
    /// The process-private store when persistent storage is off; removed on drop.
    _private_dir: Option<tempfile::TempDir>,
}

/// The most stores that run in the background at once. Each holds its digest's lock and its
/// logs; past this many, a call waits for its own store as without
/// `store_in_background`, so stores cannot pile up behind executions that outpace them.
pub const BACKGROUND_STORES: usize = 64;

/// The cache manager. Cheap to clone; every clone shares one runtime.
#[derive(Clone)]
pub struct EnhancedCacheManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EnhancedCacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnhancedCacheManager")
            .field("cache_dir", &self.inner.config.cache_dir)
            .finish()
    }
}

impl EnhancedCacheManager {
    /// Starts a manager on the current tokio runtime, with the feature flags of the process env.
    pub async fn new(config: GlobalCacheConfig) -> Result<Self, Error> {
        let flags = CacheFeatureFlags::from_env(&process_env())?;
        Self::new_with_flags(config, flags).await
    }

    /// Starts a manager with explicit feature flags: enhanced caching off means legacy
    /// behaviour (every task executes, nothing is cached); persistent storage off keeps the
    /// store in a process-private directory removed at drop. So does a config that caches
    /// nothing (disabled, or mode `off`): the cache directory is then never touched.
    pub async fn new_with_flags(
        config: GlobalCacheConfig,
        flags: CacheFeatureFlags,
    ) -> Result<Self, Error> {
        // A run that caches nothing (`--no-cache`, mode `off`, caching disabled) never touches
        // the cache directory: it may be unusable (read-only, full), and turning the cache
        // off is how one gets past that.
        let private_dir = if flags.persistent_storage_enabled && caches_anything(&config, &flags) {
            None
        } else {
            Some(
                tempfile::Builder::new()
                    .prefix("cuenv-cache-")
                    .tempdir()
                    .map_err(cuenv_actors::Error::Io)?,
            )
        };
        let cache_dir = private_dir
            .as_ref()
            .map_or_else(|| config.cache_dir.clone(), |dir| dir.path().to_owned());
        let runtime = Runtime::start(runtime_settings(&config, &flags, cache_dir)).await?;
        let inner = Inner {
            config,
            flags,
            runtime,
            flights: SingleFlight::new(),
            gate: WorkGate::default(),
            leaders: Mutex::new(JoinSet::new()),
            prefetched: Mutex::new(HashMap::new()),
            background: Arc::new(Semaphore::new(BACKGROUND_STORES)),
            _private_dir: private_dir,
        };
        Ok(EnhancedCacheManager { inner: Arc::new(inner) })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GlobalCacheConfig {
        &self.inner.config
    }

    /// The runtime (its actors' handles).
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Whether `task` is cached at all: the enhanced cache is on, the config enables caching,
    /// its mode is not `off`, and the task does not say `cache = false`.
    pub fn is_caching_enabled(&self, task: &TaskConfig) -> bool {
        caches_anything(&self.inner.config, &self.inner.flags) && task.cache
    }

    /// The mode `task` runs in: `off` when caching is disabled for it, else the configured mode.
    pub fn get_task_cache_mode(&self, task: &TaskConfig) -> CacheMode {
        if self.is_caching_enabled(task) { self.inner.config.default_mode } else { CacheMode::Off }
    }

    /// Runs `execute_fn` for `task_config` with the cache, as the seed API has it: the project
    /// root is `working_dir`; no arguments and no dependencies.
    pub async fn execute_task_with_cache<F, Fut, E>(
        &self,
        task_name: &str,
        task_config: &TaskConfig,
        working_dir: &Path,
        env_vars: &HashMap<String, String>,
        execute_fn: F,
    ) -> Result<Execution, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<TaskOutput, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let env: BTreeMap<String, String> =
            env_vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let dependencies = BTreeMap::new();
        let invocation = TaskInvocation {
            task_name,
            task: task_config,
            project_root: working_dir,
            env: &env,
            args: &[],
            dependencies: &dependencies,
        };
        self.execute(invocation, execute_fn).await
    }

    /// Runs `execute_fn` for `invocation` with the cache (see the module docs).
    pub async fn execute<F, Fut, E>(
        &self,
        invocation: TaskInvocation<'_>,
        execute_fn: F,
    ) -> Result<Execution, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<TaskOutput, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.execute_with(invocation, ExecuteOptions::default(), execute_fn).await
    }

    /// Like [`EnhancedCacheManager::execute`], with options.
    pub async fn execute_with<F, Fut, E>(
        &self,
        invocation: TaskInvocation<'_>,
        options: ExecuteOptions,
        execute_fn: F,
    ) -> Result<Execution, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<TaskOutput, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let pass = self.inner.gate.enter().ok_or(Error::ShuttingDown)?;
        let task = invocation.task_name.to_owned();
        let mode = self.get_task_cache_mode(invocation.task);
        if mode == CacheMode::Off {
            return self.run_uncached(task, invocation.project_root, execute_fn).await;
        }
        let request = key_request(&self.inner.config, &invocation);
        let key = self.inner.runtime.key_gen().compute(request.clone()).await?;
        let target = RestoreTarget {
            root: invocation.project_root.to_owned(),
            stamps: Some(Arc::clone(&key.stamps)),
        };
        let look = Look {
            digest: &key.digest,
            manifest: &key.manifest,
            task: &task,
            target: &target,
            ask_remote: true,
        };
        if mode.reads()
            && let Some(hit) = self.inner.lookup_and_restore(&look).await?
        {
            return Ok(hit);
        }
        let job = Job {
            task: task.clone(),
            digest: key.digest,
            manifest: key.manifest,
            request,
            target: target.clone(),
            mode,
            lock_wait: invocation
                .task
                .cache_config
                .timeout
                .map_or(DEFAULT_LOCK_WAIT, Duration::from_secs),
            max_size: invocation.task.cache_config.max_size,
        };
        match self.inner.flights.join(key.digest) {
            Join::Leader(leader) => {
                let wait = leader.wait();
                let inner = Arc::clone(&self.inner);
                let leader_pass = pass.share();
                let (early_tx, early_rx) = oneshot::channel();
                let early_tx = options.store_in_background.then_some(early_tx);
                {
                    let mut leaders =
                        self.inner.leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    while leaders.try_join_next().is_some() {}
                    leaders.spawn(async move {
                        let value = inner.lead(job, execute_fn, early_tx).await;
                        leader.complete(value);
                        drop(leader_pass);
                    });
                }
                // With a background store, the execution comes back before its store is done;
                // if nothing comes early (a hit after the lock, an error), the flight's value does.
                if let Ok(execution) = early_rx.await {
                    return Ok(execution);
                }
                wait.await.map_err(|_| Error::Abandoned { task: task.clone() })?
            }
            Join::Follower(wait) => {
                if mode.reads() {
                    self.inner.record(Counters { lookups: 1, misses: 1, ..Counters::default() });
                }
                let execution =
                    wait.await.map_err(|_| Error::Abandoned { task: task.clone() })??;
                self.inner.follow(execution, &target).await
            }
        }
    }

    async fn run_uncached<F, Fut, E>(
        &self,
        task: String,
        root: &Path,
        execute_fn: F,
    ) -> Result<Execution, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TaskOutput, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let output = execute_fn()
            .await
            .map_err(|error| Error::Execute { task: task.clone(), source: error.into().into() })?;
        output.stdout.discard();
        output.stderr.discard();
        self.inner.record(Counters { executions: 1, ..Counters::default() });
        Ok(Execution {
            task,
            digest: None,
            exit_code: output.exit_code,
            source: Source::Uncached,
            duration_ms: ran_for_ms(&output, started),
            entry: None,
            stored: false,
            project_root: root.to_owned(),
        })
    }

    /// The key of `invocation` (inputs hashed on the library's pool) without looking it up.
    pub async fn compute_key(&self, invocation: TaskInvocation<'_>) -> Result<ActionKey, Error> {
        self.key_of(invocation).await
    }

    /// [`EnhancedCacheManager::compute_key`] as a future that borrows nothing (the request is
    /// built before it returns), to be spawned: many keys computed at once.
    pub fn key_of(
        &self,
        invocation: TaskInvocation<'_>,
    ) -> impl Future<Output = Result<ActionKey, Error>> + Send + 'static {
        let request = key_request(&self.inner.config, &invocation);
        let key_gen = self.inner.runtime.key_gen().clone();
        async move { Ok(key_gen.compute(request).await?) }
    }

    /// Whether [`EnhancedCacheManager::prefetch`] can help `task`: it is read from the cache
    /// and a remote cache with downloads is configured.
    pub fn prefetches(&self, task: &TaskConfig) -> bool {
        let downloads = self.inner.config.remote_cache.as_ref().is_some_and(|r| r.download_enabled);
        downloads && self.inner.runtime.remote().is_some() && self.get_task_cache_mode(task).reads()
    }

    /// Brings the result of `key` from the remote into the local store when no local tier has
    /// it, so that the lookup of the same key that follows is local. A scheduler calls this
    /// ahead of time, while the task's dependencies are still being restored, so remote round
    /// trips overlap instead of adding up along the dependency chain.
    ///
    /// Best effort and side-effect free for the project: nothing is restored and nothing is
    /// counted as a lookup. What the remote said is kept for that lookup: a fetched result
    /// counts as a remote hit there, and a remote miss is not asked again.
    pub async fn prefetch(&self, key: &ActionKey) {
        let inner = &self.inner;
        let Some(_pass) = inner.gate.enter() else { return };
        let Some(remote) = inner.runtime.remote() else { return };
        if self.get_cached_result(&key.digest).await.is_some() {
            return;
        }
        // An error (the actor gone) reads as a miss, as in the lookup itself.
        let fetched =
            matches!(remote.download(key.digest, key.manifest.clone()).await, Ok(Some(_)));
        let mut prefetched = inner.prefetched();
        // Entries a lookup never took (a task that did not run) must not pile up in a
        // long-lived manager. Losing one costs its lookup a remote call, or reports a fetched
        // result as a local hit.
        if prefetched.len() >= PREFETCH_MEMO_CAP {
            prefetched.clear();
        }
        prefetched.insert(key.digest, fetched);
    }

    /// The cached result of `digest`, from memory or disk (filling memory).
    pub async fn get_cached_result(&self, digest: &Digest) -> Option<Arc<ActionResult>> {
        if let Ok(Some(entry)) = self.inner.runtime.memory().get(*digest).await {
            return Some(Arc::clone(&entry.result));
        }
        match self.inner.runtime.disk().lookup(*digest).await {
            Ok(DiskLookup::Hit(entry)) => {
                let result = Arc::clone(&entry.result);
                let _ = self.inner.runtime.memory().insert(*digest, entry).await;
                Some(result)
            }
            _ => None,
        }
    }

    /// The logs of a result: `(stdout, stderr)`, or `None` if a log blob is gone.
    pub async fn logs(&self, entry: &Arc<MemoryEntry>) -> Option<(Vec<u8>, Vec<u8>)> {
        self.both_logs(entry, |bytes| bytes, DiskStore::read_log).await
    }

    /// The logs of a result, `(stdout, stderr)`, ready to be copied out: small ones as bytes,
    /// blobs opened and verified, so a large log is never held in memory. `None` if a log blob
    /// is gone.
    pub async fn log_sources(&self, entry: &Arc<MemoryEntry>) -> Option<(LogSource, LogSource)> {
        self.both_logs(entry, LogSource::Bytes, DiskStore::open_log).await
    }

    /// Both logs of `entry`: `held` wraps what the memory tier has, `stored` reads the rest
    /// from the store on a blocking thread (only when something is not held).
    async fn both_logs<T: Send + 'static>(
        &self,
        entry: &Arc<MemoryEntry>,
        held: fn(Vec<u8>) -> T,
        stored: fn(&DiskStore, &LogRef) -> Option<T>,
    ) -> Option<(T, T)> {
        let held = |log| entry.log(log).map(held);
        let (out, err) = match (held(&entry.result.stdout), held(&entry.result.stderr)) {
            (Some(out), Some(err)) => return Some((out, err)),
            missing => missing,
        };
        let store = Arc::clone(self.inner.runtime.disk().store());
        let entry = Arc::clone(entry);
        tokio::task::spawn_blocking(move || {
            let out = out.or_else(|| stored(&store, &entry.result.stdout))?;
            let err = err.or_else(|| stored(&store, &entry.result.stderr))?;
            Some((out, err))
        })
        .await
        .ok()
        .flatten()
    }

    /// What this process has counted so far.
    pub async fn statistics(&self) -> Result<Counters, Error> {
        Ok(self.inner.runtime.stats().snapshot().await?)
    }

    /// Waits until every execution handed back so far is done with, its background store
    /// included (and any started meanwhile): for a caller that reports after the stores, so that
    /// what they warn of comes before its summary.
    pub async fn settle(&self) {
        loop {
            let mut leaders = std::mem::take(
                &mut *self.inner.leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            if leaders.is_empty() {
                return;
            }
            while leaders.join_next().await.is_some() {}
        }
    }

    /// Stops accepting calls, waits for every admitted call (and its store) to finish, then
    /// stops the actors, flushing statistics, stat caches and the index journal.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.gate.drained().await;
        self.settle().await;
        let uploads = self.inner.runtime.shutdown().await?;
        if uploads.finished + uploads.dropped > 0 {
            tracing::info!(
                finished = uploads.finished,
                dropped = uploads.dropped,
                "remote uploads at shutdown"
            );
        }
        Ok(())
    }
}

/// A result found in a tier, before its outputs are restored.
struct Found {
    entry: Arc<MemoryEntry>,
    digest: Digest,
    tier: Tier,
}

/// What a lookup is for: the action, its task, where a hit is restored, and whether a miss
/// asks the remote.
#[derive(Clone, Copy)]
struct Look<'a> {
    digest: &'a Digest,
    manifest: &'a KeyManifest,
    task: &'a str,
    target: &'a RestoreTarget,
    ask_remote: bool,
}

/// What a leader needs to execute and store.
struct Job {
    task: String,
    digest: Digest,
    manifest: KeyManifest,
    /// What the key was computed from, to compute it again after the execution.
    request: KeyRequest,
    target: RestoreTarget,
    mode: CacheMode,
    lock_wait: Duration,
    max_size: Option<u64>,
}

/// How long an execution's work took: its own figure when it has one, else the time since
/// `started`.
fn ran_for_ms(output: &TaskOutput, started: Instant) -> u64 {
    output.ran_for.unwrap_or_else(|| started.elapsed()).as_millis() as u64
}

impl Inner {
    fn prefetched(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, bool>> {
        self.prefetched.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, delta: Counters) {
        self.runtime.stats().record(delta);
    }

    /// Memory, then disk, then (with `ask_remote`, unless a prefetch already did) the remote;
    /// restores outputs on a hit and back-fills the faster tiers. A damaged entry counts as
    /// corrupt and reads as a miss. Records the lookup and its hit; a miss is recorded by the
    /// caller that decides what happens next.
    async fn lookup_and_restore(&self, look: &Look<'_>) -> Result<Option<Execution>, Error> {
        let Look { digest, task, target, ask_remote, .. } = *look;
        if let Some(entry) = self.runtime.memory().get(*digest).await?
            && let Some(hit) =
                self.restore_hit(entry, Tier::Memory, task, target, ask_remote).await?
        {
            return Ok(Some(hit));
        }
        // One disk job reads the record and restores its outputs.
        let looked = self.runtime.disk().lookup_and_restore(*digest, target.clone()).await?;
        self.disk_found(looked, look).await
    }

    /// What a disk lookup (and how restoring a hit went) makes of a call: a hit (back-filling
    /// memory), or on a miss or damage the remote's answer (with `ask_remote`, unless a
    /// prefetch already asked), or a miss.
    async fn disk_found(
        &self,
        (found, restored): Looked,
        look: &Look<'_>,
    ) -> Result<Option<Execution>, Error> {
        let Look { digest, manifest, task, target, ask_remote } = *look;
        let prefetched = self.prefetched().remove(digest);
        match (found, restored) {
            (DiskLookup::Hit(entry), Some(restored)) => {
                self.runtime.memory().put(*digest, Arc::clone(&entry));
                let tier = if prefetched == Some(true) { Tier::Remote } else { Tier::Disk };
                let found = Found { entry, digest: *digest, tier };
                self.finish_hit(found, task, &target.root, restored, ask_remote)
            }
            (DiskLookup::Corrupt { .. }, _) => {
                self.record(Counters { corrupt: 1, ..Counters::default() });
                self.remote_hit(digest, manifest, task, target).await
            }
            // The remote already said it does not have this result.
            _ if prefetched == Some(false) || !ask_remote => Ok(None),
            _ => self.remote_hit(digest, manifest, task, target).await,
        }
    }

    /// Asks the remote; a result it has is stored locally (blobs verified), read back through
    /// the disk tier like any local record, and restored.
    async fn remote_hit(
        &self,
        digest: &Digest,
        manifest: &KeyManifest,
        task: &str,
        target: &RestoreTarget,
    ) -> Result<Option<Execution>, Error> {
        let Some(remote) = self.runtime.remote() else { return Ok(None) };
        if remote.download(*digest, manifest.clone()).await?.is_none() {
            return Ok(None);
        }
        match self.runtime.disk().lookup(*digest).await? {
            DiskLookup::Hit(entry) => {
                self.runtime.memory().insert(*digest, Arc::clone(&entry)).await?;
                self.restore_hit(entry, Tier::Remote, task, target, true).await
            }
            DiskLookup::Miss | DiskLookup::Corrupt { .. } => Ok(None),
        }
    }

    async fn restore_hit(
        &self,
        entry: Arc<MemoryEntry>,
        tier: Tier,
        task: &str,
        target: &RestoreTarget,
        first_look: bool,
    ) -> Result<Option<Execution>, Error> {
        let digest = entry.result.manifest.digest();
        let restored = self.runtime.disk().restore(Arc::clone(&entry), target.clone()).await;
        self.finish_hit(Found { entry, digest, tier }, task, &target.root, restored, first_look)
    }

    /// Counts a hit whose outputs were restored, or turns a damaged one into a miss. A project
    /// that stands in the way makes a miss too, reported on the first look only (the leader's
    /// second look meets the same obstacle).
    fn finish_hit(
        &self,
        Found { entry, digest, tier }: Found,
        task: &str,
        root: &Path,
        restored: Result<RestoreReport, cuenv_actors::Error>,
        first_look: bool,
    ) -> Result<Option<Execution>, Error> {
        match restored {
            Ok(_) => {}
            Err(cuenv_actors::Error::Restore(error)) if error.is_cache_fault() => {
                tracing::warn!(task, %error, "cached outputs are damaged; executing instead");
                self.runtime.memory().invalidate(digest);
                self.record(Counters { corrupt: 1, ..Counters::default() });
                return Ok(None);
            }
            Err(cuenv_actors::Error::Restore(error)) if error.is_workspace_obstacle() => {
                if first_look {
                    tracing::warn!(task, %error, "cannot restore the cached outputs; executing instead");
                }
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        }
        let mut delta =
            Counters { lookups: 1, time_saved_ms: entry.result.duration_ms, ..Counters::default() };
        match tier {
            Tier::Memory => delta.hits_memory = 1,
            Tier::Disk => delta.hits_disk = 1,
            Tier::Remote => delta.hits_remote = 1,
        }
        self.record(delta);
        Ok(Some(Execution {
            task: task.to_owned(),
            digest: Some(digest),
            exit_code: entry.result.exit_code,
            source: Source::Hit(tier),
            duration_ms: entry.result.duration_ms,
            entry: Some(entry),
            stored: false,
            project_root: root.to_owned(),
        }))
    }

    /// The leader's half: lock across processes, look again, execute, store. With `early`, the
    /// execution is handed back before the store (which keeps the lock until it is done).
    async fn lead<F, Fut, E>(
        &self,
        job: Job,
        execute_fn: F,
        early: Option<oneshot::Sender<Execution>>,
    ) -> Flown
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TaskOutput, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _lock = if job.mode.reads() {
            // Another process may have stored the result while this one waited for the lock:
            // the disk is read again under it (the memory tier holds nothing the disk lacks; the
            // remote was asked just before).
            let (lock, looked) = self
                .runtime
                .disk()
                .lock_and_lookup(job.digest, job.lock_wait, job.target.clone())
                .await?;
            if lock.is_none() {
                tracing::warn!(task = %job.task, "gave up waiting for another process running the same action; executing here");
            }
            let look = Look {
                digest: &job.digest,
                manifest: &job.manifest,
                task: &job.task,
                target: &job.target,
                ask_remote: false,
            };
            if let Some(hit) = self.disk_found(looked, &look).await? {
                return Ok(hit);
            }
            self.record(Counters { lookups: 1, misses: 1, ..Counters::default() });
            lock
        } else {
            None
        };
        let started = Instant::now();
        let output = execute_fn().await.map_err(|error| Error::Execute {
            task: job.task.clone(),
            source: error.into().into(),
        })?;
        let duration_ms = ran_for_ms(&output, started);
        self.record(Counters { executions: 1, ..Counters::default() });
        let exit_code = output.exit_code;
        let mut cacheable = job.mode.writes() && (exit_code == 0 || self.config.cache_failures);
        let mut execution = Execution {
            task: job.task.clone(),
            digest: Some(job.digest),
            exit_code,
            source: Source::Executed,
            duration_ms,
            entry: None,
            stored: false,
            project_root: job.target.root.clone(),
        };
        // Handed back before the store only with a permit; without one the caller gets the
        // execution once it is stored (the dropped sender sends it to the flight's value).
        let _background = early.and_then(|early| {
            let permit = Arc::clone(&self.background).try_acquire_owned().ok()?;
            let _ = early.send(execution.clone());
            Some(permit)
        });
        cacheable = cacheable && self.inputs_unchanged(&job).await;
        if cacheable {
            (execution.entry, execution.stored) = self.store(&job, output, duration_ms).await;
        } else {
            output.stdout.discard();
            output.stderr.discard();
        }
        Ok(execution)
    }

    /// Whether the task's inputs are still those its key was made from, now that it ran. A file
    /// edited, added or removed meanwhile (other than the task's own outputs) means the outputs
    /// may come from other inputs than the key says, so the result is not stored under it.
    async fn inputs_unchanged(&self, job: &Job) -> bool {
        let after = match self.runtime.key_gen().compute(job.request.clone()).await {
            Ok(key) if key.digest == job.digest => return true,
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(task = %job.task, %error, "cannot check the task's inputs after it ran; its result is not cached");
                return false;
            }
        };
        let changed = inputs_changed(&job.manifest, &after.manifest);
        if changed.is_empty() {
            return true;
        }
        const SHOWN: usize = 5;
        let mut files = changed.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if changed.len() > SHOWN {
            files.push_str(&format!(" and {} more", changed.len() - SHOWN));
        }
        tracing::warn!(task = %job.task, %files, "inputs changed while the task ran; its result is not cached");
        false
    }

    /// Stores an execution's result; a failure to store is logged, never the task's failure.
    async fn store(
        &self,
        job: &Job,
        output: TaskOutput,
        duration_ms: u64,
    ) -> (Option<Arc<MemoryEntry>>, bool) {
        let request = StoreRequest {
            digest: job.digest,
            manifest: job.manifest.clone(),
            project_root: job.target.root.clone(),
            exit_code: output.exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
            executed_at_ms: now_ms(),
            duration_ms,
            max_size: job.max_size,
            metadata: BTreeMap::new(),
            remember_as: Some((project_id(&job.target.root), job.task.clone())),
        };
        match self.runtime.disk().store_result(request).await {
            Ok(StoreOutcome::Stored { entry, bytes }) => {
                if let Err(gone) =
                    self.runtime.memory().insert(job.digest, Arc::clone(&entry)).await
                {
                    tracing::debug!(%gone, "memory tier unavailable");
                }
                if let Some(remote) = self.runtime.remote() {
                    remote.upload(job.digest, Arc::clone(&entry.result)).await;
                }
                self.record(Counters { writes: 1, bytes_written: bytes, ..Counters::default() });
                (Some(entry), true)
            }
            Ok(StoreOutcome::TooLarge { size, limit }) => {
                tracing::warn!(task = %job.task, size, limit, "result is larger than the task's maxSize; not cached");
                (None, false)
            }
            Err(error) => {
                tracing::warn!(task = %job.task, %error, "could not store the result; it will run again next time");
                (None, false)
            }
        }
    }

    /// A follower's half: the leader's result, restored here if the follower's project root
    /// is another one.
    async fn follow(
        &self,
        mut execution: Execution,
        target: &RestoreTarget,
    ) -> Result<Execution, Error> {
        if let Some(entry) =
            execution.entry.clone().filter(|_| execution.project_root != target.root)
        {
            self.runtime.disk().restore(entry, target.clone()).await?;
            execution.project_root = target.root.clone();
        }
        if execution.source == Source::Executed {
            execution.source = Source::Shared;
        }
        execution.stored = false;
        Ok(execution)
    }
}

/// A stable identifier of a project for per-task bookkeeping: its root path.
pub fn project_id(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

/// The disk tier's settings for a store of `config` in `cache_dir`.
pub fn disk_settings(config: &GlobalCacheConfig, cache_dir: PathBuf) -> DiskSettings {
    DiskSettings {
        cache_dir,
        max_size: config.max_size,
        policy: config.eviction_policy.into(),
        fsync: config.storage.fsync,
        inline_threshold: config.storage.inline_threshold,
    }
}

/// Whether a manager with `config` and `flags` may cache any task at all.
fn caches_anything(config: &GlobalCacheConfig, flags: &CacheFeatureFlags) -> bool {
    flags.enhanced_cache_enabled && config.enabled && config.default_mode != CacheMode::Off
}

fn runtime_settings(
    config: &GlobalCacheConfig,
    flags: &CacheFeatureFlags,
    cache_dir: PathBuf,
) -> RuntimeSettings {
    let mut settings = RuntimeSettings::new(disk_settings(config, cache_dir));
    settings.persist = flags.persistent_storage_enabled;
    settings.memory_capacity = config.storage.memory_capacity;
    settings.stats_retention_days = config.stats_retention_days;
    settings.remote =
        config.remote_cache.as_ref().filter(|_| flags.remote_cache_enabled).map(remote_settings);
    settings
}

/// The remote client's settings from the user's `remote_cache`.
pub fn remote_settings(remote: &RemoteCacheConfig) -> RemoteSettings {
    let mut settings = RemoteSettings::new(remote.endpoint.clone());
    settings.instance_name = remote.instance_name.clone();
    settings.auth_token = remote.auth_token.clone();
    settings.ca_cert = remote.tls.as_ref().and_then(|tls| tls.ca_cert.clone());
    settings.domain_name = remote.tls.as_ref().and_then(|tls| tls.domain_name.clone());
    settings.timeout = Duration::from_secs(remote.timeout_seconds);
    settings.max_concurrent = remote.max_concurrent;
    settings.upload_enabled = remote.upload_enabled;
    settings.download_enabled = remote.download_enabled;
    settings
}
