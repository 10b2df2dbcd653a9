//! Test support: helpers shared by the integration tests.
//!
//! `buildgrid` starts a real REAPI server for the remote cache tests; the rest builds local
//! stores and captures log output so tests can assert what a user would see.

pub(crate) mod buildgrid;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cuenv_actors::disk::{DiskSettings, DiskStore, EvictionPolicy};
use cuenv_actors::key_gen::hash_pool;
use tracing_subscriber::fmt::MakeWriter;

/// A disk store under `dir` with a 64-byte inline threshold, so logs of either kind are easy
/// to make.
pub(crate) fn disk_store(dir: &Path) -> DiskStore {
    let settings = DiskSettings {
        cache_dir: dir.to_owned(),
        max_size: u64::MAX,
        policy: EvictionPolicy::Lru,
        fsync: false,
        inline_threshold: 64,
    };
    DiskStore::open(settings, hash_pool(2).expect("a rayon pool")).expect("open a disk store")
}

/// Every file below `dir` (none if it cannot be read), depth first.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

/// Log lines written while a [`CapturedLogs`] guard is alive on this thread.
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedLogs {
    /// Everything captured so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// How many captured lines contain `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|line| line.contains(needle)).count()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures warnings (and worse) emitted on this thread until the guard drops. Use it from a
/// current-thread runtime so that the code under test logs on the test's thread.
pub(crate) fn capture_warnings() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}
