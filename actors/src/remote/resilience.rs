//! Retries, deadlines, the in-flight limit and the circuit breaker: the wrapper every RPC
//! goes through, so a slow or dead remote costs a task a few milliseconds, never a failure.
//!
//! - Transient codes (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`) are retried
//!   with exponential backoff and ±50 % jitter, up to `tuning.attempts` attempts.
//! - Each attempt holds an in-flight permit and runs under the per-RPC deadline. A ByteStream
//!   transfer's deadline follows its progress instead (`Progress`): it fails after a deadline
//!   in which no chunk moved, so a blob takes as long as the network needs to move it.
//! - `RESOURCE_EXHAUSTED` also narrows the in-flight limit (`limit.rs`). A call refused
//!   while the window was wider than it is now retries at once, without a backoff: the
//!   narrower window is the backoff.
//! - The breaker counts failed attempts (a transient or broken-server code, or a refusal as
//!   overloaded that could not narrow the window), and a retry asks it first. So a server that
//!   stalls every call is given up on after one round of deadlines, not after every call in
//!   flight has used all its attempts. At `tuning.breaker_threshold` failures in a row it opens
//!   (one warning), refuses calls for `tuning.breaker_cooldown`, then lets one probe through
//!   (half-open): success closes it, failure reopens it quietly.
//! - Opening a connection has its own, shorter deadline (`RemoteSettings::connect_timeout`);
//!   an attempt that fails after waiting it out missed a deadline, and says so.
//! - Capabilities come first on every client, so their negotiation is stricter: an attempt
//!   that meets its deadline is not retried, and a negotiation that fails for the server's
//!   sake opens the breaker at once (`Breaker::trip`). A server that accepts connections and
//!   never answers then costs a run one deadline, not a deadline per attempt per call until
//!   the threshold.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tonic::Status;

use super::error::{Meaning, meaning};
use super::limit::Pushback;
use super::outage::OutageFile;
use super::transport::Clients;
use super::{RemoteClient, RemoteError, counters};

/// The circuit breaker's state.
#[derive(Debug)]
enum State {
    /// Calls go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One probe call went through at `since`; others are refused until it ends (or, if its
    /// caller dropped it, until a cooldown has passed).
    HalfOpen { since: Instant },
}

/// Stops calling a remote that keeps failing.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    /// A std mutex: it is held only to read or flip the state, never across an `.await`, so
    /// a tokio mutex would only add cost.
    state: Mutex<State>,
    /// Where an opening is remembered for later runs, once the client has one (`outage.rs`).
    outage: OnceLock<OutageFile>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            outage: OnceLock::new(),
        }
    }

    /// Remembers openings in `outage` from now on. If it records an outage of this remote
    /// whose cooldown has not ended, the breaker opens for the rest of it (one warning).
    pub(crate) fn remember_in(&self, outage: OutageFile) {
        let earlier = outage.remaining(SystemTime::now(), self.cooldown);
        if self.outage.set(outage).is_err() {
            return;
        }
        let Some((left, reason)) = earlier else { return };
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        tracing::warn!(
            failure = %reason,
            suspended_for = %format!("{seconds}s"),
            "remote cache failed in an earlier run; not calling it until that run's cooldown ends (`cuenv cache test` checks it now)"
        );
        *self.state() = State::Open { until: Instant::now() + left };
    }

    /// Records an opening (until a cooldown from now), caused by `reason`, for later runs.
    fn remember(&self, reason: &str) {
        if let Some(outage) = self.outage.get() {
            super::blocking(|| outage.record(SystemTime::now() + self.cooldown, reason));
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a call through, or says how long until one may try.
    pub(crate) fn admit(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::HalfOpen { since } if now < since + self.cooldown => {
                Err(since + self.cooldown - now)
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                tracing::debug!("remote cache circuit half-open; probing");
                *state = State::HalfOpen { since: now };
                Ok(())
            }
        }
    }

    /// Notes a call that reached a working server.
    pub(crate) fn succeeded(&self) {
        {
            let mut state = self.state();
            if matches!(*state, State::HalfOpen { .. } | State::Open { .. }) {
                tracing::info!("remote cache reachable again; resuming calls");
            }
            *state = State::Closed { failures: 0 };
        }
        // Only the first answered call (since this process last recorded one) touches the file.
        if let Some(outage) = self.outage.get()
            && outage.may_be_recorded()
        {
            super::blocking(|| outage.clear());
        }
    }

    /// Notes a call that failed for the server's (or the network's) sake, with `status`.
    pub(crate) fn failed(&self, status: &Status) {
        let until = Instant::now() + self.cooldown;
        let mut state = self.state();
        let opened = match *state {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                tracing::warn!(
                    failures = failures + 1,
                    last = ?status.code(),
                    message = status.message(),
                    cooldown = ?self.cooldown,
                    "remote cache keeps failing; suspending remote calls"
                );
                *state = State::Open { until };
                true
            }
            State::Closed { failures } => {
                *state = State::Closed { failures: failures + 1 };
                false
            }
            State::HalfOpen { .. } | State::Open { .. } => {
                tracing::debug!("remote cache probe failed; circuit stays open");
                *state = State::Open { until };
                true
            }
        };
        drop(state);
        if opened {
            self.remember(&format!("{:?}: {}", status.code(), status.message()));
        }
    }

    /// Opens the breaker now, whatever the count: the remote cannot be used at all, because
    /// of `error`.
    pub(crate) fn trip(&self, error: &RemoteError) {
        let until = Instant::now() + self.cooldown;
        let mut state = self.state();
        if matches!(*state, State::Closed { .. }) {
            tracing::warn!(
                %error,
                cooldown = ?self.cooldown,
                "remote cache did not negotiate its capabilities; suspending remote calls"
            );
        }
        *state = State::Open { until };
        drop(state);
        self.remember(&error.to_string());
    }

    /// Whether calls are being refused right now.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.state(), State::Closed { .. })
    }
}

/// Which failed attempts a call tries again (within `tuning.attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Every transient code.
    Transient,
    /// Transient codes but a missed deadline: a server that did not answer in time is not
    /// waited for again.
    UnlessStalled,
}

/// Immediate retries per call after refusals that narrowed the in-flight window.
const MAX_NARROWED_RETRIES: u32 = 8;

/// `delay` scaled by a random factor in [0.5, 1.5).
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64())
}

/// The chunks a streaming call has moved so far, which its deadline follows (see
/// [`RemoteClient::call_streaming`]). Clones share the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    /// Counts a chunk sent or received.
    pub(crate) fn made(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn moves(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs `future` under `timeout`: `None` once the deadline passes, or with `progress`, once a
/// whole `timeout` passes in which it made none.
pub(crate) async fn within<T>(
    timeout: Duration,
    progress: Option<&Progress>,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(future);
    let mut seen = progress.map(Progress::moves);
    loop {
        if let Ok(value) = tokio::time::timeout(timeout, &mut future).await {
            return Some(value);
        }
        let now = progress.map(Progress::moves);
        if now == seen {
            return None;
        }
        seen = now;
    }
}

impl RemoteClient {
    /// Runs one RPC through the breaker, the in-flight limit, the deadline and retries.
    /// `attempt` is called once per attempt with the clients and must make the whole call
    /// (a stream included) in its future.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        rpc: &'static str,
        attempt: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(rpc, Retry::Transient, attempt).await
    }

    /// [`RemoteClient::call`] for a stream that reports its chunks to `progress`: an attempt
    /// fails only after a deadline in which none moved, however long the whole stream takes.
    pub(crate) async fn call_streaming<T, F, Fut>(
        &self,
        rpc: &'static str,
        progress: &Progress,
        attempt: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.run_call(rpc, Retry::Transient, Some(progress), attempt).await
    }

    /// [`RemoteClient::call`] with a choice of which failures are retried.
    pub(crate) async fn call_with<T, F, Fut>(
        &self,
        rpc: &'static str,
        retry: Retry,
        attempt: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.run_call(rpc, retry, None, attempt).await
    }

    async fn run_call<T, F, Fut>(
        &self,
        rpc: &'static str,
        retry: Retry,
        progress: Option<&Progress>,
        mut attempt: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &self.inner;
        tracing::trace!(rpc, "remote call");
        self.admit()?;
        let tuning = &inner.settings.tuning;
        let mut delay = tuning.base_delay;
        let mut attempts = 1;
        let mut narrowed = 0;
        loop {
            let (status, pushback) = match self.attempt(progress, &mut attempt).await {
                Ok(value) => {
                    inner.breaker.succeeded();
                    return Ok(value);
                }
                Err(refused) => refused,
            };
            let meaning = meaning(status.code());
            // A refusal that narrowed the window retries at once without using up an attempt
            // (a few times per call: the window cannot keep narrowing for long).
            if pushback == Some(Pushback::Narrowed) && narrowed < MAX_NARROWED_RETRIES {
                tracing::debug!(rpc, "remote cache refused a call as overloaded; retrying");
                narrowed += 1;
                continue;
            }
            match meaning {
                Meaning::Transient | Meaning::Broken => inner.breaker.failed(&status),
                Meaning::Miss | Meaning::Rejected => inner.breaker.succeeded(),
            }
            let stalled = status.code() == tonic::Code::DeadlineExceeded;
            let retried = meaning == Meaning::Transient
                && !(stalled && retry == Retry::UnlessStalled)
                && attempts < tuning.attempts;
            if retried {
                tracing::debug!(rpc, code = ?status.code(), attempts, "remote call failed; retrying");
                attempts += 1;
                tokio::time::sleep(jittered(delay)).await;
                delay = delay.saturating_mul(2);
                self.admit()?;
                continue;
            }
            return Err(RemoteError::from_status(rpc, &inner.settings.instance_name, status));
        }
    }

    /// Asks the breaker whether a call (or a retry) may go out; a refusal is counted.
    fn admit(&self) -> Result<(), RemoteError> {
        self.inner.breaker.admit().map_err(|retry_in| {
            counters::bump(&self.inner.counters.short_circuited);
            RemoteError::CircuitOpen { retry_in }
        })
    }

    /// One attempt: a permit, then the call under the deadline (see [`within`]). A refusal as
    /// overloaded comes back with what it did to the in-flight limit.
    async fn attempt<T, F, Fut>(
        &self,
        progress: Option<&Progress>,
        attempt: &mut F,
    ) -> Result<T, (Status, Option<Pushback>)>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &self.inner;
        let slot = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| (Status::cancelled("the remote client is shutting down"), None))?;
        let timeout = inner.settings.timeout;
        let status = match within(timeout, progress, attempt(inner.rpc.clone())).await {
            Some(Ok(value)) => {
                inner.in_flight.succeeded();
                return Ok(value);
            }
            // A connection that did not open within the connect timeout missed a deadline,
            // and is reported (and retried, or not) as one.
            Some(Err(status)) if connect_timed_out(&status) => Status::deadline_exceeded(format!(
                "no connection within {:?}: {}",
                inner.settings.connect_timeout(),
                status.message()
            )),
            Some(Err(status)) => transport_is_unavailable(status),
            None if progress.is_some() => {
                Status::deadline_exceeded(format!("no progress within {timeout:?}"))
            }
            None => Status::deadline_exceeded(format!("no answer within {timeout:?}")),
        };
        let pushback = match status.code() {
            tonic::Code::ResourceExhausted => {
                counters::bump(&inner.counters.overloaded);
                Some(inner.in_flight.overloaded(&slot))
            }
            // No answer: says nothing about the server's load.
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => None,
            // An answer (a miss, a refusal): the server kept up with the call.
            _ => {
                inner.in_flight.succeeded();
                None
            }
        };
        Err((status, pushback))
    }
}

/// Whether `status` is a connection that did not open in time: the connector reports that as
/// an I/O error of kind `TimedOut` among its causes.
fn connect_timed_out(status: &Status) -> bool {
    causes(status).any(|error| {
        error
            .downcast_ref::<io::Error>()
            .is_some_and(|found| found.kind() == io::ErrorKind::TimedOut)
    })
}

/// The chain of errors below `status`, nearest first.
fn causes(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |error| error.source())
}

/// tonic reports a connection that broke mid-call (the server died, a proxy reset it) as
/// `UNKNOWN` "transport error"; it means the server is unreachable, so it becomes
/// `UNAVAILABLE` (retried, counted by the breaker). Either way the causes join the message:
/// "tcp connect error" alone does not say whether the connection was refused or timed out.
fn transport_is_unavailable(status: Status) -> Status {
    let Some(source) = std::error::Error::source(&status) else { return status };
    let code = if status.code() == tonic::Code::Unknown && source.is::<tonic::transport::Error>() {
        tonic::Code::Unavailable
    } else {
        status.code()
    };
    let mut message = status.message().to_owned();
    for error in causes(&status) {
        let text = error.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
    }
    Status::new(code, message)
}
