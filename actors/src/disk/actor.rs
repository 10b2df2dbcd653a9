//! The `DiskTier` actor: owns the [`DiskStore`] and runs each request on a blocking thread, so
//! no tokio worker ever waits on the filesystem.
//!
//! Architecture Invariant: every write into the cache directory (blobs, records, the journal,
//! statistics buckets, stat caches, lock files) is made by a job this actor spawned. Background
//! eviction and the periodic journal flush are its jobs too, joined at shutdown.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::lock::DigestLock;
use super::{
    CapturedOutputs, DiskStore, GcReport, GcTarget, RecordLookup, RestoreError, RestoreReport,
    RestoreTarget,
};
use crate::actor::call;
use crate::error::{ActorGone, Error};
use crate::key_gen::KeyManifest;
use crate::memory::{MemoryEntry, SMALL_BLOB};
use crate::result::{ActionResult, Log, LogRef};
use crate::stats::{Counters, StatsStore};
use crate::{Digest, fsio};

const NAME: &str = "disk tier";
/// Blocking jobs the actor runs at once before it stops taking messages.
const MAX_JOBS: usize = 32;
/// Results whose small blobs together exceed this are held in memory without their blobs.
const MEMORY_BLOBS_BUDGET: u64 = 1 << 20;

/// A cloneable handle to the disk-tier actor.
#[derive(Debug, Clone)]
pub struct DiskHandle {
    /// The actor's bounded mailbox; replies come back on oneshot channels, so no cycle forms.
    mailbox: mpsc::Sender<DiskMessage>,
    /// The store, for reads that need no actor (log replay of a result already in hand).
    store: Arc<DiskStore>,
}

/// A result to store, as an execution left it.
#[derive(Debug)]
pub struct StoreRequest {
    /// The action digest.
    pub digest: Digest,
    /// Its manifest (outputs and working directory are read from it).
    pub manifest: KeyManifest,
    /// The project root outputs are collected from.
    pub project_root: PathBuf,
    /// The exit code.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Log,
    /// Standard error.
    pub stderr: Log,
    /// When it finished (ms since the epoch).
    pub executed_at_ms: u64,
    /// How long it ran.
    pub duration_ms: u64,
    /// The task's `maxSize`: larger results are not stored.
    pub max_size: Option<u64>,
    /// Facts to keep with the result.
    pub metadata: BTreeMap<String, String>,
    /// `(project id, task)` to remember this digest under, for `cache explain`.
    pub remember_as: Option<(String, String)>,
}

/// The outcome of a disk lookup.
#[derive(Debug)]
pub enum DiskLookup {
    /// A verified record, with the bytes of its small blobs.
    Hit(Arc<MemoryEntry>),
    /// Nothing usable.
    Miss,
    /// A damaged record, now removed.
    Corrupt {
        /// What was wrong.
        reason: String,
    },
}

/// What became of a store request.
#[derive(Debug)]
pub enum StoreOutcome {
    /// Stored; the result and its memory-tier entry.
    Stored {
        /// The entry (result plus small blobs).
        entry: Arc<MemoryEntry>,
        /// Bytes the record and its blobs take.
        bytes: u64,
    },
    /// Larger than the task's `maxSize`; nothing stored.
    TooLarge {
        /// The result's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// A lookup's answer with, on a hit, how restoring its outputs went.
type LookupRestored = (DiskLookup, Option<Result<RestoreReport, RestoreError>>);

/// A lookup's answer with, on a hit, how restoring its outputs went, as callers get it.
pub type Looked = (DiskLookup, Option<Result<RestoreReport, Error>>);

fn looked((found, restored): LookupRestored) -> Looked {
    (found, restored.map(|outcome| outcome.map_err(Error::from)))
}

enum DiskMessage {
    Lookup {
        digest: Digest,
        reply: oneshot::Sender<DiskLookup>,
    },
    LookupAndRestore {
        digest: Digest,
        target: RestoreTarget,
        reply: oneshot::Sender<LookupRestored>,
    },
    Store {
        request: Box<StoreRequest>,
        reply: oneshot::Sender<Result<StoreOutcome, Error>>,
    },
    Restore {
        entry: Arc<MemoryEntry>,
        target: RestoreTarget,
        reply: oneshot::Sender<Result<RestoreReport, RestoreError>>,
    },
    LockAndLookup {
        digest: Digest,
        timeout: Duration,
        target: RestoreTarget,
        reply: oneshot::Sender<io::Result<(Option<DigestLock>, LookupRestored)>>,
    },
    Gc {
        target: GcTarget,
        reply: oneshot::Sender<io::Result<GcReport>>,
    },
    WriteFiles {
        files: Vec<(PathBuf, Vec<u8>)>,
        reply: oneshot::Sender<io::Result<()>>,
    },
    MergeStats {
        day: String,
        delta: Counters,
        oldest_kept: String,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Last {
        project_id: String,
        task: String,
        reply: oneshot::Sender<Option<Digest>>,
    },
    Flush {
        reply: oneshot::Sender<io::Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct DiskActor {
    store: Arc<DiskStore>,
    inbox: mpsc::Receiver<DiskMessage>,
    /// Blocking jobs in flight, at most [`MAX_JOBS`] (the mailbox waits meanwhile); joined
    /// before the actor exits.
    jobs: JoinSet<()>,
    /// Jobs that mostly wait (cross-process locks), outside the bound so they cannot starve
    /// lookups; joined before the actor exits.
    waits: JoinSet<()>,
    flush_every: Duration,
}

impl DiskHandle {
    /// Starts the actor over `store` on the current tokio runtime.
    pub fn spawn(
        store: DiskStore,
        flush_every: Duration,
        mailbox_size: usize,
    ) -> (Self, JoinHandle<()>) {
        let store = Arc::new(store);
        let (mailbox, inbox) = mpsc::channel(mailbox_size);
        let actor = DiskActor {
            store: Arc::clone(&store),
            inbox,
            jobs: JoinSet::new(),
            waits: JoinSet::new(),
            flush_every,
        };
        (DiskHandle { mailbox, store }, tokio::spawn(actor.run()))
    }

    /// The store (read-only uses: its layout, log replay).
    pub fn store(&self) -> &Arc<DiskStore> {
        &self.store
    }

    /// Reads the record of `digest`; a hit comes as a memory-tier entry.
    pub async fn lookup(&self, digest: Digest) -> Result<DiskLookup, ActorGone> {
        call(&self.mailbox, NAME, |reply| DiskMessage::Lookup { digest, reply }).await
    }

    /// Reads the record of `digest` and, on a hit, restores its outputs into `target`, in one
    /// job (a hit costs one trip to a blocking thread, not two).
    pub async fn lookup_and_restore(
        &self,
        digest: Digest,
        target: impl Into<RestoreTarget>,
    ) -> Result<Looked, ActorGone> {
        let target = target.into();
        let answer = call(&self.mailbox, NAME, |reply| DiskMessage::LookupAndRestore {
            digest,
            target,
            reply,
        })
        .await?;
        Ok(looked(answer))
    }

    /// Collects outputs, stores blobs, then the record.
    pub async fn store_result(&self, request: StoreRequest) -> Result<StoreOutcome, Error> {
        let request = Box::new(request);
        call(&self.mailbox, NAME, |reply| DiskMessage::Store { request, reply }).await?
    }

    /// Restores the outputs of `entry` into `target`.
    pub async fn restore(
        &self,
        entry: Arc<MemoryEntry>,
        target: impl Into<RestoreTarget>,
    ) -> Result<RestoreReport, Error> {
        let target = target.into();
        Ok(call(&self.mailbox, NAME, |reply| DiskMessage::Restore { entry, target, reply })
            .await??)
    }

    /// Takes the cross-process lock of `digest` (waiting up to `timeout`), then reads its record
    /// and, on a hit, restores its outputs into `target`: what an executor does before it
    /// executes (another process may have stored the result meanwhile), in one job. The lock is
    /// `None` when the wait timed out.
    pub async fn lock_and_lookup(
        &self,
        digest: Digest,
        timeout: Duration,
        target: impl Into<RestoreTarget>,
    ) -> Result<(Option<DigestLock>, Looked), Error> {
        let target = target.into();
        let (lock, answer) = call(&self.mailbox, NAME, |reply| DiskMessage::LockAndLookup {
            digest,
            timeout,
            target,
            reply,
        })
        .await??;
        Ok((lock, looked(answer)))
    }

    /// Evicts to `target`.
    pub async fn gc(&self, target: GcTarget) -> Result<GcReport, Error> {
        Ok(call(&self.mailbox, NAME, |reply| DiskMessage::Gc { target, reply }).await??)
    }

    /// Writes whole files atomically (stat caches).
    pub async fn write_files(&self, files: Vec<(PathBuf, Vec<u8>)>) -> Result<(), Error> {
        Ok(call(&self.mailbox, NAME, |reply| DiskMessage::WriteFiles { files, reply }).await??)
    }

    /// Adds `delta` to the statistics bucket of `day` and prunes buckets before `oldest_kept`.
    pub async fn merge_stats(
        &self,
        day: String,
        delta: Counters,
        oldest_kept: String,
    ) -> Result<io::Result<()>, ActorGone> {
        call(&self.mailbox, NAME, |reply| DiskMessage::MergeStats {
            day,
            delta,
            oldest_kept,
            reply,
        })
        .await
    }

    /// The last digest stored for a task.
    pub async fn last(
        &self,
        project_id: String,
        task: String,
    ) -> Result<Option<Digest>, ActorGone> {
        call(&self.mailbox, NAME, |reply| DiskMessage::Last { project_id, task, reply }).await
    }

    /// Appends pending index events to the journal.
    pub async fn flush(&self) -> Result<(), Error> {
        Ok(call(&self.mailbox, NAME, |reply| DiskMessage::Flush { reply }).await??)
    }

    /// Whether the actor has stopped.
    pub fn is_gone(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Finishes queued and running jobs, flushes the journal, and stops.
    pub async fn shutdown(&self) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| DiskMessage::Shutdown { reply }).await
    }
}

impl DiskActor {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.flush_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let shutdown_reply = loop {
            tokio::select! {
                message = self.inbox.recv(), if self.jobs.len() < MAX_JOBS => match message {
                    Some(DiskMessage::Shutdown { reply }) => break Some(reply),
                    Some(message) => self.handle(message),
                    None => break None,
                },
                Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => {}
                Some(_) = self.waits.join_next(), if !self.waits.is_empty() => {}
                _ = ticker.tick() => self.spawn_flush(),
            }
        };
        // Stop accepting, then finish everything accepted.
        self.inbox.close();
        while let Some(message) = self.inbox.recv().await {
            match message {
                DiskMessage::Shutdown { reply } => {
                    let _ = reply.send(());
                }
                message => self.handle(message),
            }
        }
        while self.jobs.join_next().await.is_some() {}
        while self.waits.join_next().await.is_some() {}
        let store = Arc::clone(&self.store);
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store.flush()).await {
            tracing::warn!(%error, "cannot flush the cache index journal");
        }
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn spawn_job(&mut self, job: impl FnOnce(&DiskStore) + Send + 'static) {
        let store = Arc::clone(&self.store);
        self.jobs.spawn_blocking(move || job(&store));
    }

    fn spawn_flush(&mut self) {
        if self.store.pending_events() > 0 {
            self.spawn_job(|store| {
                if let Err(error) = store.flush() {
                    tracing::warn!(%error, "cannot flush the cache index journal");
                }
            });
        }
    }

    fn handle(&mut self, message: DiskMessage) {
        match message {
            DiskMessage::Lookup { digest, reply } => self.spawn_job(move |store| {
                let _ = reply.send(lookup(store, &digest));
            }),
            DiskMessage::LookupAndRestore { digest, target, reply } => {
                self.spawn_job(move |store| {
                    let _ = reply.send(lookup_and_restore(store, &digest, &target));
                })
            }
            DiskMessage::Store { request, reply } => self.spawn_job(move |store| {
                let _ = reply.send(store_result(store, *request));
                // After the reply: the caller does not wait for eviction.
                store.evict_if_over_limit();
            }),
            DiskMessage::Restore { entry, target, reply } => self.spawn_job(move |store| {
                let _ = reply.send(store.restore_entry(&entry, &target));
            }),
            DiskMessage::LockAndLookup { digest, timeout, target, reply } => {
                let store = Arc::clone(&self.store);
                self.waits.spawn_blocking(move || {
                    let locked = store
                        .lock_digest(&digest, timeout)
                        .map(|lock| (lock, lookup_and_restore(&store, &digest, &target)));
                    let _ = reply.send(locked);
                });
            }
            DiskMessage::Gc { target, reply } => self.spawn_job(move |store| {
                let _ = reply.send(store.gc(target));
            }),
            DiskMessage::WriteFiles { files, reply } => self.spawn_job(move |store| {
                let written = files.iter().try_for_each(|(path, bytes)| {
                    fsio::write_atomic_via(&store.layout().tmp(), path, bytes, false)
                });
                let _ = reply.send(written);
            }),
            DiskMessage::MergeStats { day, delta, oldest_kept, reply } => {
                self.spawn_job(move |store| {
                    let stats = StatsStore::new(store.layout().stats());
                    let merged = stats.merge(&day, &delta);
                    stats.prune_before(&oldest_kept);
                    let _ = reply.send(merged);
                })
            }
            DiskMessage::Last { project_id, task, reply } => self.spawn_job(move |store| {
                let _ = reply.send(store.last(&project_id, &task));
            }),
            DiskMessage::Flush { reply } => self.spawn_job(move |store| {
                let _ = reply.send(store.flush());
            }),
            DiskMessage::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

/// Reads a record; a hit comes as a memory entry holding its small blobs.
fn lookup(store: &DiskStore, digest: &Digest) -> DiskLookup {
    match store.get_record(digest) {
        RecordLookup::Hit(result) => DiskLookup::Hit(memory_entry(store, *result)),
        RecordLookup::Miss => DiskLookup::Miss,
        RecordLookup::Corrupt { reason } => DiskLookup::Corrupt { reason },
    }
}

/// Reads a record and, on a hit, restores its outputs into `target`.
fn lookup_and_restore(
    store: &DiskStore,
    digest: &Digest,
    target: &RestoreTarget,
) -> LookupRestored {
    let found = lookup(store, digest);
    let restored = match &found {
        DiskLookup::Hit(entry) => Some(store.restore_entry(entry, target)),
        DiskLookup::Miss | DiskLookup::Corrupt { .. } => None,
    };
    (found, restored)
}

/// A memory entry for `result` with the verified bytes of its logs (a replay needs them; output
/// blobs are read when, and only if, a restore has to write them).
fn memory_entry(store: &DiskStore, result: ActionResult) -> Arc<MemoryEntry> {
    let result = Arc::new(result);
    let mut entry = MemoryEntry::new(Arc::clone(&result));
    let mut budget = MEMORY_BLOBS_BUDGET;
    let logs = [&result.stdout, &result.stderr].into_iter().filter_map(|log| match log {
        LogRef::Blob { digest, size } => Some((*digest, *size)),
        LogRef::Inline(_) => None,
    });
    for (digest, size) in logs {
        if size > SMALL_BLOB || size > budget || entry.blob(&digest).is_some() {
            continue;
        }
        if let super::BlobRead::Found(bytes) = store.read_blob(&digest) {
            budget -= size;
            entry.blobs.push((digest, bytes.into()));
        }
    }
    Arc::new(entry)
}

/// Stores a result; spilled logs are removed afterwards, stored or not.
fn store_result(store: &DiskStore, request: StoreRequest) -> Result<StoreOutcome, Error> {
    let spilled: Vec<Log> = [&request.stdout, &request.stderr]
        .into_iter()
        .filter(|log| matches!(log, Log::Spilled(_)))
        .cloned()
        .collect();
    let outcome = collect_and_store(store, request);
    spilled.iter().for_each(Log::discard);
    outcome
}

fn collect_and_store(store: &DiskStore, request: StoreRequest) -> Result<StoreOutcome, Error> {
    let manifest = &request.manifest;
    let captured = CapturedOutputs::collect(
        &request.project_root,
        &manifest.task,
        &manifest.working_dir,
        &manifest.outputs,
        std::slice::from_ref(&store.settings().cache_dir),
    )?;
    if !manifest.outputs.is_empty() && captured.is_empty() {
        // Most often a pattern that does not say where the task writes (turbo warns alike).
        tracing::warn!(
            task = %manifest.task,
            outputs = ?manifest.outputs,
            "the task's declared outputs matched nothing; its result is cached without outputs"
        );
    }
    // Sized only for a task with a `maxSize` (a stat per output, before anything is stored).
    if let Some(limit) = request.max_size {
        let log_size = |log: &Log| match log {
            Log::Bytes(bytes) => bytes.len() as u64,
            Log::File(path) | Log::Spilled(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
        };
        let outputs_size: u64 = captured
            .files
            .iter()
            .filter_map(|(_, path, _)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        let size = outputs_size + log_size(&request.stdout) + log_size(&request.stderr);
        if size > limit {
            return Ok(StoreOutcome::TooLarge { size, limit });
        }
    }
    let output_files = store.store_outputs(&captured)?;
    let log = |log: Log| -> io::Result<LogRef> {
        match log {
            Log::Bytes(bytes) => store.log_ref(bytes),
            Log::File(path) | Log::Spilled(path) => store.log_ref_from_file(&path),
        }
    };
    let result = ActionResult {
        exit_code: request.exit_code,
        stdout: log(request.stdout)?,
        stderr: log(request.stderr)?,
        output_files,
        output_dirs: captured.dirs,
        output_symlinks: captured.symlinks,
        executed_at_ms: request.executed_at_ms,
        duration_ms: request.duration_ms,
        manifest: request.manifest,
        metadata: request.metadata,
    };
    let record_size = store.put_record(&request.digest, &result)?;
    if let Some((project_id, task)) = &request.remember_as {
        store.set_last(project_id, task, &request.digest);
    }
    let bytes = record_size + result.content_size();
    Ok(StoreOutcome::Stored { entry: memory_entry(store, result), bytes })
}
