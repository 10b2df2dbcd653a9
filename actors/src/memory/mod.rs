//! The memory tier: recent results and their small blobs in a moka cache, so a hot hit costs
//! no disk I/O.
//!
//! Architecture Invariant: the memory tier does no I/O. It is filled by whoever read the disk or
//! the remote (a disk hit fills it), weighed by bytes, and bounded by `capacity`.

mod actor;

use std::sync::Arc;

use moka::future::Cache;

use crate::Digest;
use crate::result::{ActionResult, LogRef};

pub use actor::MemoryHandle;

/// Blobs up to this size travel with their result in the memory tier.
pub const SMALL_BLOB: u64 = 64 * 1024;

/// A result held in memory, with the bytes of its small blobs.
#[derive(Debug, Clone)]
pub struct MemoryEntry {
    /// The result.
    pub result: Arc<ActionResult>,
    /// Verified bytes of some of its blobs (logs and small outputs), by digest.
    pub blobs: Vec<(Digest, Arc<[u8]>)>,
}

impl MemoryEntry {
    /// An entry without blob bytes.
    pub fn new(result: Arc<ActionResult>) -> Self {
        MemoryEntry { result, blobs: Vec::new() }
    }

    /// The bytes of a blob, if held.
    pub fn blob(&self, digest: &Digest) -> Option<&Arc<[u8]>> {
        self.blobs.iter().find(|(held, _)| held == digest).map(|(_, bytes)| bytes)
    }

    /// A log's bytes, if inline or held.
    pub fn log(&self, log: &LogRef) -> Option<Vec<u8>> {
        match log {
            LogRef::Inline(bytes) => Some(bytes.clone()),
            LogRef::Blob { digest, .. } => self.blob(digest).map(|bytes| bytes.to_vec()),
        }
    }

    /// What the entry costs in memory, roughly: its blobs, logs and a share per output.
    pub fn weight(&self) -> u32 {
        let blobs: u64 = self.blobs.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let logs =
            self.result.stdout.size().min(SMALL_BLOB) + self.result.stderr.size().min(SMALL_BLOB);
        let record = 256
            + 128
                * (self.result.output_files.len() + self.result.manifest.input_files().len())
                    as u64;
        u32::try_from(blobs + logs + record).unwrap_or(u32::MAX)
    }
}

/// The memory tier over moka.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<Digest, Arc<MemoryEntry>>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier").field("entries", &self.cache.entry_count()).finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `capacity` bytes of entries.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &Digest, entry: &Arc<MemoryEntry>| entry.weight())
            .build();
        MemoryTier { cache }
    }

    /// The entry of `digest`, if held.
    pub async fn get(&self, digest: &Digest) -> Option<Arc<MemoryEntry>> {
        self.cache.get(digest).await
    }

    /// Holds `entry` under `digest`.
    pub async fn insert(&self, digest: Digest, entry: Arc<MemoryEntry>) {
        self.cache.insert(digest, entry).await;
    }

    /// Drops the entry of `digest` (its disk record turned out damaged or evicted).
    pub async fn invalidate(&self, digest: &Digest) {
        self.cache.invalidate(digest).await;
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries held (approximate until pending maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs moka's pending maintenance (evictions by weight), for exact counts in tests.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}
