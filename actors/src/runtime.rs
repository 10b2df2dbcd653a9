//! The runtime: starts every actor on the caller's tokio runtime and stops them in order.
//!
//! The message flow between the actors is drawn in the crate docs (`lib.rs`).
//!
//! # Shutdown
//! [`Runtime::shutdown`] stops the actors in dependency order: KeyGen (its stat caches are
//! handed to DiskTier first), MemoryTier, RemoteSync (pending uploads get a bounded wait),
//! Stats (which flushes through DiskTier), and DiskTier last (which finishes its jobs and
//! flushes its journal). Each actor, on its `Shutdown` message, closes its mailbox (later sends
//! fail with `ActorGone`), handles what was already queued, and answers. Then every task is
//! joined. Dropping the runtime without `shutdown` closes the mailboxes instead; actors then
//! flush and exit on their own, and every write that was acknowledged is already on disk.

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::disk::{DiskHandle, DiskSettings, DiskStore};
use crate::error::Error;
use crate::key_gen::{KeyEngine, KeyGenHandle, KeyGenSettings, hash_pool};
use crate::memory::MemoryHandle;
use crate::remote::{RemoteClient, RemoteHandle, RemoteSettings, RemoteShutdown};
use crate::stats::StatsHandle;

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// The disk tier.
    pub disk: DiskSettings,
    /// Key generation (its `stat_cache_dir` is set to the cache dir's when `persist_stat_caches`).
    pub key_gen: KeyGenSettings,
    /// Whether stat caches and statistics are written to the cache dir.
    pub persist: bool,
    /// The memory tier's capacity in bytes.
    pub memory_capacity: u64,
    /// Days of statistics kept.
    pub stats_retention_days: u32,
    /// How often statistics and the index journal are flushed.
    pub flush_every: Duration,
    /// Capacity of each actor's mailbox.
    pub mailbox_size: usize,
    /// The remote cache, if any.
    pub remote: Option<RemoteSettings>,
    /// How long shutdown waits for pending remote uploads.
    pub upload_wait: Duration,
}

impl RuntimeSettings {
    /// Settings for a cache in `disk.cache_dir` with defaults for the rest.
    pub fn new(disk: DiskSettings) -> Self {
        RuntimeSettings {
            disk,
            key_gen: KeyGenSettings::default(),
            persist: true,
            memory_capacity: 256 << 20,
            stats_retention_days: 30,
            flush_every: Duration::from_secs(5),
            mailbox_size: 256,
            remote: None,
            upload_wait: Duration::from_secs(30),
        }
    }
}

/// Which actors have stopped unexpectedly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Names of actors that are gone.
    pub gone: Vec<&'static str>,
}

impl Health {
    /// Whether every actor is running.
    pub fn is_healthy(&self) -> bool {
        self.gone.is_empty()
    }
}

/// The running actors of one cache directory.
#[derive(Debug)]
pub struct Runtime {
    key_gen: KeyGenHandle,
    memory: MemoryHandle,
    disk: DiskHandle,
    stats: StatsHandle,
    remote: Option<RemoteHandle>,
    upload_wait: Duration,
    /// Join handles, taken by `shutdown`. A std mutex: never held across an await.
    joins: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Runtime {
    /// Starts every actor on the current tokio runtime (the caller's: nothing global is
    /// created, and two runtimes on different cache dirs live side by side).
    pub async fn start(settings: RuntimeSettings) -> Result<Runtime, Error> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoTokioRuntime)?;
        let pool = hash_pool(settings.key_gen.threads)
            .map_err(|error| Error::Io(std::io::Error::other(error)))?;
        let requested = settings.disk.cache_dir.clone();
        let store = DiskStore::open(settings.disk, std::sync::Arc::clone(&pool))
            .map_err(|source| Error::CacheDir { path: requested, source })?;
        let cache_dir = store.settings().cache_dir.clone();
        let mut key_gen_settings = settings.key_gen;
        if settings.persist {
            key_gen_settings.stat_cache_dir = Some(store.layout().stat_caches());
        }
        key_gen_settings.skip_dirs.push(cache_dir);
        let size = settings.mailbox_size;
        let (disk, disk_join) = DiskHandle::spawn(store, settings.flush_every, size);
        let (key_gen, key_gen_join) =
            KeyGenHandle::spawn(KeyEngine::with_pool(key_gen_settings, pool), size);
        let (memory, memory_join) = MemoryHandle::spawn(settings.memory_capacity, size);
        let stats_disk = settings.persist.then(|| disk.clone());
        let (stats, stats_join) = StatsHandle::spawn(
            stats_disk,
            settings.stats_retention_days,
            settings.flush_every,
            size * 4,
        );
        let mut joins = vec![
            ("key generator", key_gen_join),
            ("memory tier", memory_join),
            ("stats", stats_join),
            ("disk tier", disk_join),
        ];
        let remote = match settings.remote {
            Some(remote_settings) => {
                let client = RemoteClient::connect(remote_settings).await?;
                if settings.persist {
                    client.remember_outages(disk.store().layout().remote_outage());
                }
                let (remote, remote_join) = RemoteHandle::spawn(
                    client,
                    std::sync::Arc::clone(disk.store()),
                    stats.clone(),
                    size,
                );
                joins.push(("remote sync", remote_join));
                Some(remote)
            }
            None => None,
        };
        Ok(Runtime {
            key_gen,
            memory,
            disk,
            stats,
            remote,
            upload_wait: settings.upload_wait,
            joins: Mutex::new(joins),
        })
    }

    /// The remote cache, when one is configured.
    pub fn remote(&self) -> Option<&RemoteHandle> {
        self.remote.as_ref()
    }

    /// The key generator.
    pub fn key_gen(&self) -> &KeyGenHandle {
        &self.key_gen
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryHandle {
        &self.memory
    }

    /// The disk tier.
    pub fn disk(&self) -> &DiskHandle {
        &self.disk
    }

    /// Statistics.
    pub fn stats(&self) -> &StatsHandle {
        &self.stats
    }

    /// Which actors are gone.
    pub fn health(&self) -> Health {
        let states = [
            ("key generator", self.key_gen.is_gone()),
            ("memory tier", self.memory.is_gone()),
            ("stats", self.stats.is_gone()),
            ("disk tier", self.disk.is_gone()),
            ("remote sync", self.remote.as_ref().is_some_and(RemoteHandle::is_gone)),
        ];
        Health {
            gone: states.into_iter().filter(|(_, gone)| *gone).map(|(name, _)| name).collect(),
        }
    }

    /// Stops every actor in order, flushing what they hold, and joins them; says how many
    /// pending remote uploads finished or were dropped. Calling it twice is harmless. Reports the
    /// first actor that was already gone or panicked, after stopping the rest.
    pub async fn shutdown(&self) -> Result<RemoteShutdown, Error> {
        let mut first_error: Option<Error> = None;
        let mut note = |result: Result<(), Error>| {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        };
        match self.key_gen.take_snapshots().await {
            Ok(files) if !files.is_empty() => note(self.disk.write_files(files).await),
            Ok(_) => {}
            Err(gone) => note(Err(gone.into())),
        }
        note(self.key_gen.shutdown().await.map_err(Error::from));
        note(self.memory.shutdown().await.map_err(Error::from));
        let mut uploads = RemoteShutdown::default();
        if let Some(remote) = &self.remote {
            match remote.shutdown(self.upload_wait).await {
                Ok(outcome) => uploads = outcome,
                Err(gone) => note(Err(gone.into())),
            }
        }
        note(self.stats.shutdown().await.map_err(Error::from));
        note(self.disk.shutdown().await.map_err(Error::from));
        let joins = std::mem::take(
            &mut *self.joins.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (actor, join) in joins {
            if join.await.is_err() {
                note(Err(crate::error::ActorGone { actor }.into()));
            }
        }
        first_error.map_or(Ok(uploads), Err)
    }
}
