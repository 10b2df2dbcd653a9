//! Outcome counters, so `cuenv cache stats` can say what the remote did for a run.
//!
//! Plain relaxed atomics: each counter is independent and read only as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of what a [`RemoteClient`](super::RemoteClient) has done.
///
/// Each download ends in exactly one of `hits`, `misses`, `corrupt` or `errors`; each upload
/// in exactly one of `uploads`, `uploads_skipped` or `errors`. A `check` that fails counts
/// in `errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteCounters {
    /// Results found remotely and stored locally.
    pub hits: u64,
    /// Results the remote does not have (or whose blobs it has lost).
    pub misses: u64,
    /// Failed calls, including those refused by the open circuit breaker.
    pub errors: u64,
    /// Calls refused by the open circuit breaker (also counted in `errors`).
    pub short_circuited: u64,
    /// Attempts the server refused as overloaded (`RESOURCE_EXHAUSTED`); each narrows the
    /// in-flight limit or backs off, and is retried.
    pub overloaded: u64,
    /// Downloads dropped because a blob did not match its digest.
    pub corrupt: u64,
    /// Results written to the remote.
    pub uploads: u64,
    /// Uploads not attempted: disabled in the settings or refused by the server's
    /// capabilities.
    pub uploads_skipped: u64,
    /// Blob bytes sent (outputs, logs and the action's own protos).
    pub bytes_up: u64,
    /// Blob bytes received.
    pub bytes_down: u64,
}

/// The live counters behind [`RemoteCounters`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) short_circuited: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) uploads: AtomicU64,
    pub(crate) uploads_skipped: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

impl Counters {
    /// The current values.
    pub(crate) fn snapshot(&self) -> RemoteCounters {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RemoteCounters {
            hits: read(&self.hits),
            misses: read(&self.misses),
            errors: read(&self.errors),
            short_circuited: read(&self.short_circuited),
            overloaded: read(&self.overloaded),
            corrupt: read(&self.corrupt),
            uploads: read(&self.uploads),
            uploads_skipped: read(&self.uploads_skipped),
            bytes_up: read(&self.bytes_up),
            bytes_down: read(&self.bytes_down),
        }
    }
}
