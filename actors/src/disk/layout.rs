//! Where everything lives under the cache directory.
//!
//! ```text
//! <cache_dir>/v1/cas/ab/abcdef…   blobs, named by the blake3 of their content
//! <cache_dir>/v1/ac/ab/abcdef…    action records, named by the action digest
//! <cache_dir>/v1/tmp/             temp files of atomic writes (swept after an hour)
//! <cache_dir>/v1/locks/digests    byte-range locks, one byte per digest: cross-process single flight
//! <cache_dir>/v1/index            access index (compacted journal)
//! <cache_dir>/v1/journal          appended access and write events since the last compaction
//! <cache_dir>/v1/usage            approximate bytes stored
//! <cache_dir>/v1/index.lock       orders journal appends, gc and compaction
//! <cache_dir>/v1/gc.lock          shared by blob writes, exclusive while gc removes files
//! <cache_dir>/v1/tasks/           the last digest stored per task, for `cache explain`
//! <cache_dir>/v1/remote-outage    a remote whose calls are suspended, and until when
//! <cache_dir>/stats/v1/           daily statistics buckets
//! <cache_dir>/statcache/v1/       stat caches, one per project
//! ```
//! The format version is in the path, so a future layout can live beside this one.

use std::path::{Path, PathBuf};

use crate::Digest;

/// Paths of one cache directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    store: PathBuf,
}

impl Layout {
    /// The layout under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        Layout { root: cache_dir.to_owned(), store: cache_dir.join("v1") }
    }

    /// The cache directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The versioned store directory.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The CAS directory.
    pub fn cas(&self) -> PathBuf {
        self.store.join("cas")
    }

    /// The action-record directory.
    pub fn ac(&self) -> PathBuf {
        self.store.join("ac")
    }

    /// Where a blob lives.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        sharded(&self.cas(), digest)
    }

    /// Where an action record lives.
    pub fn record(&self, digest: &Digest) -> PathBuf {
        sharded(&self.ac(), digest)
    }

    /// Temp files of atomic writes.
    pub fn tmp(&self) -> PathBuf {
        self.store.join("tmp")
    }

    /// Lock files.
    pub fn locks(&self) -> PathBuf {
        self.store.join("locks")
    }

    /// The compacted access index.
    pub fn index(&self) -> PathBuf {
        self.store.join("index")
    }

    /// The event journal.
    pub fn journal(&self) -> PathBuf {
        self.store.join("journal")
    }

    /// The lock that orders journal appends against compaction and gc.
    pub fn index_lock(&self) -> PathBuf {
        self.store.join("index.lock")
    }

    /// Held shared by every blob write, exclusively by gc while it removes files, so a blob a
    /// writer is reusing is never removed under it.
    pub fn gc_lock(&self) -> PathBuf {
        self.store.join("gc.lock")
    }

    /// The approximate-usage file.
    pub fn usage(&self) -> PathBuf {
        self.store.join("usage")
    }

    /// The last-digest-per-task directory.
    pub fn tasks(&self) -> PathBuf {
        self.store.join("tasks")
    }

    /// The remote outage remembered across runs (see `remote/outage.rs`).
    pub fn remote_outage(&self) -> PathBuf {
        self.store.join("remote-outage")
    }

    /// Daily statistics buckets.
    pub fn stats(&self) -> PathBuf {
        self.root.join("stats").join("v1")
    }

    /// Stat caches.
    pub fn stat_caches(&self) -> PathBuf {
        self.root.join("statcache").join("v1")
    }
}

fn sharded(dir: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.to_hex();
    dir.join(&hex[..2]).join(hex)
}
