//! What a cached result is made of: an exit code, the logs, the outputs and the key manifest.
//!
//! Paths are relative to the project root and `/`-separated, so a result restores into any
//! copy of the project. Large contents are named by blob digest and live in the CAS; small logs
//! are inline so that a replay needs no second read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::key_gen::KeyManifest;

/// The result of one execution of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The process's exit code.
    pub exit_code: i32,
    /// Captured standard output.
    pub stdout: LogRef,
    /// Captured standard error.
    pub stderr: LogRef,
    /// Output files, sorted by path.
    pub output_files: Vec<OutputFile>,
    /// Output directories (recreated even when empty), sorted.
    pub output_dirs: Vec<String>,
    /// Output symlinks, sorted by path.
    pub output_symlinks: Vec<OutputSymlink>,
    /// When the execution finished, in milliseconds since the Unix epoch.
    pub executed_at_ms: u64,
    /// How long the execution took: the time a hit saves.
    pub duration_ms: u64,
    /// The key manifest the result was stored under, kept to explain later misses.
    pub manifest: KeyManifest,
    /// Free-form facts a caller attached (the legacy API keeps its output hashes here).
    pub metadata: BTreeMap<String, String>,
}

/// A captured log: inline bytes, or a blob in the CAS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRef {
    /// Small logs, kept in the record.
    Inline(Vec<u8>),
    /// Larger logs, stored as a blob.
    Blob {
        /// The blob's digest.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
}

impl LogRef {
    /// An empty log.
    pub const EMPTY: LogRef = LogRef::Inline(Vec::new());

    /// The log's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            LogRef::Inline(bytes) => bytes.len() as u64,
            LogRef::Blob { size, .. } => *size,
        }
    }
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the project root.
    pub path: String,
    /// The content's blob digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The permission bits the task left on it (`0o777` at most). A restore sets them less
    /// the restoring process's umask, as `tar` does for an ordinary user, so a file the task
    /// made private or read-only comes back so.
    pub mode: u32,
}

impl OutputFile {
    /// The mode of a file recorded before modes were: `0o755` or `0o644`.
    pub fn mode_of(executable: bool) -> u32 {
        if executable { 0o755 } else { 0o644 }
    }

    /// Whether any execute bit is set.
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// One output symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSymlink {
    /// Path of the link relative to the project root.
    pub path: String,
    /// The link's target, as stored in the link.
    pub target: String,
}

impl ActionResult {
    /// Every blob the result references, with its size: logs stored as blobs and output files.
    pub fn blobs(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        let logs = [&self.stdout, &self.stderr].into_iter().filter_map(|log| match log {
            LogRef::Blob { digest, size } => Some((*digest, *size)),
            LogRef::Inline(_) => None,
        });
        logs.chain(self.output_files.iter().map(|file| (file.digest, file.size)))
    }

    /// Bytes of content the result stands for (logs and outputs); the weight of a memory-tier
    /// entry and the size a task's `maxSize` limits.
    pub fn content_size(&self) -> u64 {
        let outputs: u64 = self.output_files.iter().map(|file| file.size).sum();
        self.stdout.size() + self.stderr.size() + outputs
    }
}

/// A log as an execution produced it: in memory, or captured to a file (so a large log never
/// has to be held in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Log {
    /// The bytes.
    Bytes(Vec<u8>),
    /// A file holding the bytes; it is read, not moved or removed.
    File(PathBuf),
    /// A temporary file the cache takes over: read if the result is stored, and removed in any
    /// case (the task runner spills large logs to these).
    Spilled(PathBuf),
}

impl Log {
    /// Removes a spilled log's file; other logs are left alone.
    pub fn discard(&self) {
        if let Log::Spilled(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What an execution hands back to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutput {
    /// The process's exit code.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Log,
    /// Its standard error.
    pub stderr: Log,
    /// How long the work itself took, when the execution knows better than the manager's
    /// clock: an execution that first waits (for a job slot, say) times the work alone, so
    /// the time a later hit saves is not inflated by the wait. `None`: the manager times the
    /// whole execution.
    pub ran_for: Option<Duration>,
}

impl TaskOutput {
    /// An output with the given exit code and in-memory logs.
    pub fn new(exit_code: i32, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        TaskOutput {
            exit_code,
            stdout: Log::Bytes(stdout.into()),
            stderr: Log::Bytes(stderr.into()),
            ran_for: None,
        }
    }
}
