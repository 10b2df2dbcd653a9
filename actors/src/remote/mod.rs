//! The remote cache client: shares action results with other machines through a server that
//! speaks the Bazel Remote Execution API (REAPI v2) over gRPC, e.g. BuildGrid, bazel-remote or
//! BuildBuddy.
//!
//! This module is the only place that knows tonic, prost and the REAPI types; its public API
//! speaks the crate's own [`Digest`], [`ActionResult`], [`KeyManifest`] and [`DiskStore`].
//!
//! - **Keys.** The local store stays keyed by blake3. A result's remote key is the digest of a
//!   REAPI `Action` built from its manifest (see `action.rs`); blobs are named remote-side by
//!   the digest function the server negotiated (SHA-256 unless it offers BLAKE3).
//! - **Faults never fail a task.** Transient codes are retried with backoff and jitter; a
//!   circuit breaker stops calling a server that keeps failing; `NOT_FOUND`/`OUT_OF_RANGE`
//!   read as misses. [`RemoteClient::download_or_miss`] and [`RemoteClient::upload_or_skip`]
//!   fold every error into a miss or a skip for callers that only want the cache's help.
//! - **Every outcome is counted** in [`RemoteCounters`].

mod action;
mod actor;
mod cas;
mod check;
mod counters;
mod download;
mod error;
mod limit;
mod negotiate;
mod outage;
mod resilience;
#[cfg(test)]
mod tests;
mod transport;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::OnceCell;

pub use actor::{RemoteHandle, RemoteShutdown};
pub use check::CheckReport;
pub use counters::RemoteCounters;
pub use error::RemoteError;
pub use negotiate::{Capabilities, DigestFunction};
pub use upload::UploadOutcome;

use crate::Digest;
use crate::disk::DiskStore;
use crate::key_gen::KeyManifest;
use crate::result::ActionResult;

/// How to reach a remote cache and what to do with it. `Debug` shows the token as
/// `"<redacted>"`.
#[derive(Clone)]
pub struct RemoteSettings {
    /// `grpc://host:port` (plain HTTP/2) or `grpcs://host:port` (TLS); `http://` and
    /// `https://` are accepted as synonyms.
    pub endpoint: String,
    /// The REAPI instance name; empty for the server's default instance.
    pub instance_name: String,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub auth_token: Option<String>,
    /// PEM file of a custom certificate authority for `grpcs://`; without it the system's
    /// roots are trusted.
    pub ca_cert: Option<PathBuf>,
    /// The name to check the server's certificate against, when it differs from the host.
    pub domain_name: Option<String>,
    /// The deadline of each RPC attempt (streams included).
    pub timeout: Duration,
    /// The most RPCs in flight at once, across all calls on the client.
    pub max_concurrent: usize,
    /// Write results to the remote.
    pub upload_enabled: bool,
    /// Read results from the remote.
    pub download_enabled: bool,
    /// Retry, breaker and batching knobs; the defaults suit production.
    pub tuning: RemoteTuning,
}

impl RemoteSettings {
    /// Settings for `endpoint` with the default instance, no credentials, a 30 s timeout,
    /// 64 RPCs in flight, uploads and downloads enabled.
    pub fn new(endpoint: impl Into<String>) -> Self {
        RemoteSettings {
            endpoint: endpoint.into(),
            instance_name: String::new(),
            auth_token: None,
            ca_cert: None,
            domain_name: None,
            timeout: Duration::from_secs(30),
            max_concurrent: 64,
            upload_enabled: true,
            download_enabled: true,
            tuning: RemoteTuning::default(),
        }
    }

    /// How long opening a connection (TCP, and TLS for `grpcs://`) may take: `timeout`, but
    /// at most [`CONNECT_TIMEOUT`].
    pub fn connect_timeout(&self) -> Duration {
        self.timeout.min(CONNECT_TIMEOUT)
    }
}

/// The longest a connection to the remote may take to open, whatever `timeout` says. A server
/// that can be reached connects within a round trip or two; one that cannot (a host that is
/// down or firewalled, an address reachable only over a VPN that is off) drops the attempt
/// silently, and would otherwise hold a run's first lookup for the whole `timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSettings")
            .field("endpoint", &self.endpoint)
            .field("instance_name", &self.instance_name)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("domain_name", &self.domain_name)
            .field("timeout", &self.timeout)
            .field("max_concurrent", &self.max_concurrent)
            .field("upload_enabled", &self.upload_enabled)
            .field("download_enabled", &self.download_enabled)
            .field("tuning", &self.tuning)
            .finish()
    }
}

/// The knobs behind fault handling and batching, separate so tests can make them small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTuning {
    /// Attempts per RPC for transient codes (`UNAVAILABLE`, `DEADLINE_EXCEEDED`,
    /// `RESOURCE_EXHAUSTED`), the first included.
    pub attempts: u32,
    /// The delay before the first retry; doubled on each further one, with ±50 % jitter.
    pub base_delay: Duration,
    /// Consecutive failed attempts (across all calls) that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
    /// Caps the negotiated batch size (bytes); blobs above the cap go through ByteStream.
    pub max_batch_bytes: Option<u64>,
}

impl Default for RemoteTuning {
    fn default() -> Self {
        RemoteTuning {
            attempts: 4,
            base_delay: Duration::from_millis(100),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_batch_bytes: None,
        }
    }
}

/// A client of one remote cache instance. Cloning is cheap and clones share the connection,
/// the negotiated capabilities, the breaker and the counters.
#[derive(Debug, Clone)]
pub struct RemoteClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: RemoteSettings,
    /// The generated REAPI clients over one lazily connected HTTP/2 channel.
    rpc: transport::Clients,
    /// Negotiated once by the first call that needs it; a failed negotiation is retried by
    /// the next call.
    capabilities: OnceCell<Capabilities>,
    /// Bounds in-flight RPCs, narrowing while the server pushes back (see `limit.rs`). Each
    /// attempt holds a permit until its response (or stream) is done; nothing else holds one,
    /// and the semaphore is never closed.
    in_flight: limit::InFlight,
    /// Consecutive failures and the open/half-open state; see `resilience.rs`.
    breaker: resilience::Breaker,
    counters: counters::Counters,
    /// Set once the "uploads are skipped" warning has been logged.
    warned_upload_skip: AtomicBool,
    /// Set once a best-effort wrapper has logged an error as a warning.
    warned_error: AtomicBool,
}

impl RemoteClient {
    /// Prepares a client. The channel connects lazily, so this fails only on bad settings
    /// (endpoint syntax, an unreadable CA file); the first RPC reports an unreachable server.
    /// Must be called within a tokio runtime.
    pub async fn connect(settings: RemoteSettings) -> Result<RemoteClient, RemoteError> {
        let rpc = transport::Clients::new(&settings)?;
        let breaker = resilience::Breaker::new(
            settings.tuning.breaker_threshold,
            settings.tuning.breaker_cooldown,
        );
        let in_flight = limit::InFlight::new(settings.max_concurrent);
        let inner = Inner {
            settings,
            rpc,
            capabilities: OnceCell::new(),
            in_flight,
            breaker,
            counters: counters::Counters::default(),
            warned_upload_skip: AtomicBool::new(false),
            warned_error: AtomicBool::new(false),
        };
        Ok(RemoteClient { inner: Arc::new(inner) })
    }

    /// The settings the client was made with.
    pub fn settings(&self) -> &RemoteSettings {
        &self.inner.settings
    }

    /// A snapshot of the outcome counters.
    pub fn counters(&self) -> RemoteCounters {
        self.inner.counters.snapshot()
    }

    /// Remembers outages of this remote across runs in `file` (the cache directory's
    /// [`Layout::remote_outage`](crate::disk::Layout::remote_outage)): when the breaker opens,
    /// later clients started before its cooldown ends start with theirs open, instead of
    /// waiting out a dead remote again. If `file` records such an outage now, this client's
    /// breaker opens for the rest of it.
    pub fn remember_outages(&self, file: PathBuf) {
        let outage = outage::OutageFile::new(file, &self.inner.settings);
        self.inner.breaker.remember_in(outage);
    }

    /// Forgets an outage recorded in `file`: the remote just answered (`cuenv cache test`,
    /// which checks it whatever runs remember).
    pub fn forget_outages(&self, file: PathBuf) {
        outage::OutageFile::new(file, &self.inner.settings).clear();
    }

    /// Whether the circuit breaker is currently refusing calls.
    pub fn circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Like [`RemoteClient::download`], but an error reads as a miss: it is counted, logged
    /// as a warning the first time and at debug level after that.
    pub async fn download_or_miss(
        &self,
        local_digest: &Digest,
        manifest: &KeyManifest,
        store: &DiskStore,
    ) -> Option<ActionResult> {
        match self.download(local_digest, manifest, store).await {
            Ok(found) => found,
            Err(error) => {
                self.note_error("download", &error);
                None
            }
        }
    }

    /// Like [`RemoteClient::upload`], but an error is counted and logged instead of returned;
    /// `true` when the result is now on the remote.
    pub async fn upload_or_skip(
        &self,
        local_digest: &Digest,
        result: &ActionResult,
        store: &DiskStore,
    ) -> bool {
        match self.upload(local_digest, result, store).await {
            Ok(outcome) => outcome == UploadOutcome::Uploaded,
            Err(error) => {
                self.note_error("upload", &error);
                false
            }
        }
    }

    /// Logs an error a best-effort wrapper swallowed. An open breaker already warned once
    /// (with the error that opened it).
    fn note_error(&self, what: &str, error: &RemoteError) {
        let first = !self.inner.warned_error.swap(true, Ordering::Relaxed);
        if first && !matches!(error, RemoteError::CircuitOpen { .. }) && !self.circuit_open() {
            tracing::warn!(%error, "remote cache {what} failed; continuing without it");
        } else {
            tracing::debug!(%error, "remote cache {what} failed");
        }
    }
}

/// Checks that `local_digest` is the digest of `manifest`: a result filed under another key
/// would poison the remote cache for every machine.
fn check_key(local_digest: &Digest, manifest: &KeyManifest) -> Result<(), RemoteError> {
    let computed = manifest.digest();
    if computed == *local_digest {
        return Ok(());
    }
    Err(RemoteError::KeyMismatch { given: local_digest.to_hex(), computed: computed.to_hex() })
}

/// Runs blocking store I/O (reads, writes and their fsyncs) from async code. On a multi-thread
/// runtime the worker first hands its other tasks to another thread (`block_in_place`), so a
/// slow disk never stalls the runtime's other tasks; on a current-thread runtime, the caller's
/// choice, it simply runs.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
