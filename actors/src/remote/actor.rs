//! The `RemoteSync` actor: owns the REAPI client, downloads on a local miss, and uploads in the
//! background after a task finished, so an upload never delays a run.
//!
//! Downloads and uploads run as tasks in two `JoinSet`s the actor owns. A download whose
//! caller stopped waiting ends at once. At most twice the client's in-flight limit of
//! downloads run as tasks; the rest wait in a queue holding only their requests, since a
//! download's task holds kilobytes of state before its first call. At shutdown it stops
//! accepting work, waits for pending uploads up to a bound, and says how many it dropped. The
//! remote's outcome counters are forwarded to the Stats actor (by `try_send`) as they change.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::{CheckReport, RemoteClient, RemoteCounters, RemoteError};
use crate::Digest;
use crate::actor::call;
use crate::disk::DiskStore;
use crate::error::ActorGone;
use crate::key_gen::KeyManifest;
use crate::result::ActionResult;
use crate::stats::{Counters, StatsHandle};

const NAME: &str = "remote sync";

/// Runs `work` and sends its answer, unless the caller stops waiting first (it was
/// cancelled): then `work` is dropped at its next await.
async fn answer_while_awaited<T>(mut reply: oneshot::Sender<T>, work: impl Future<Output = T>) {
    tokio::select! {
        answer = work => {
            let _ = reply.send(answer);
        }
        () = reply.closed() => {}
    }
}

/// A cloneable handle to the remote-sync actor.
#[derive(Debug, Clone)]
pub struct RemoteHandle {
    /// The actor's bounded mailbox; answers come back on oneshots.
    mailbox: mpsc::Sender<RemoteMessage>,
}

/// What shutdown did with pending uploads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteShutdown {
    /// Uploads that finished while shutdown waited.
    pub finished: usize,
    /// Uploads still running at the bound, and abandoned.
    pub dropped: usize,
}

enum RemoteMessage {
    Download {
        digest: Digest,
        manifest: Box<KeyManifest>,
        reply: oneshot::Sender<Option<ActionResult>>,
    },
    Upload {
        digest: Digest,
        result: Arc<ActionResult>,
    },
    Check {
        reply: oneshot::Sender<Result<CheckReport, RemoteError>>,
    },
    Counters {
        reply: oneshot::Sender<RemoteCounters>,
    },
    Shutdown {
        wait: Duration,
        reply: oneshot::Sender<RemoteShutdown>,
    },
}

struct RemoteActor {
    client: RemoteClient,
    store: Arc<DiskStore>,
    stats: StatsHandle,
    inbox: mpsc::Receiver<RemoteMessage>,
    downloads: JoinSet<()>,
    /// Downloads waiting for room among the tasks (`downloads_at_once`).
    queued: VecDeque<QueuedDownload>,
    uploads: JoinSet<()>,
    /// The counters last forwarded to Stats.
    reported: RemoteCounters,
}

/// A download waiting for its task.
struct QueuedDownload {
    digest: Digest,
    manifest: Box<KeyManifest>,
    reply: oneshot::Sender<Option<ActionResult>>,
}

impl RemoteHandle {
    /// Starts the actor. Downloads write into `store` as blobs arrive, in groups stored once
    /// they hold 8 MiB (a large result is never held whole in memory); see ARCHITECTURE.md.
    pub fn spawn(
        client: RemoteClient,
        store: Arc<DiskStore>,
        stats: StatsHandle,
        mailbox_size: usize,
    ) -> (Self, JoinHandle<()>) {
        let (mailbox, inbox) = mpsc::channel(mailbox_size);
        let actor = RemoteActor {
            client,
            store,
            stats,
            inbox,
            downloads: JoinSet::new(),
            queued: VecDeque::new(),
            uploads: JoinSet::new(),
            reported: RemoteCounters::default(),
        };
        (RemoteHandle { mailbox }, tokio::spawn(actor.run()))
    }

    /// The remote's result for `digest`, stored locally; `None` on a miss or any remote fault.
    pub async fn download(
        &self,
        digest: Digest,
        manifest: KeyManifest,
    ) -> Result<Option<ActionResult>, ActorGone> {
        let manifest = Box::new(manifest);
        call(&self.mailbox, NAME, |reply| RemoteMessage::Download { digest, manifest, reply }).await
    }

    /// Queues an upload and returns; the upload itself runs in the background. Waits only
    /// while the mailbox is full (the actor hands each message to a task at once, so for a
    /// burst's length): an upload is never dropped for want of room. After shutdown the
    /// result stays local.
    pub async fn upload(&self, digest: Digest, result: Arc<ActionResult>) {
        if self.mailbox.send(RemoteMessage::Upload { digest, result }).await.is_err() {
            tracing::debug!(digest = %digest.short(), "remote sync has shut down; result stays local");
        }
    }

    /// Capabilities, and a probe blob written and read back.
    pub async fn check(&self) -> Result<Result<CheckReport, RemoteError>, ActorGone> {
        call(&self.mailbox, NAME, |reply| RemoteMessage::Check { reply }).await
    }

    /// The remote's outcome counters.
    pub async fn counters(&self) -> Result<RemoteCounters, ActorGone> {
        call(&self.mailbox, NAME, |reply| RemoteMessage::Counters { reply }).await
    }

    /// Whether the actor has stopped.
    pub fn is_gone(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Stops accepting work and waits up to `wait` for pending uploads.
    pub async fn shutdown(&self, wait: Duration) -> Result<RemoteShutdown, ActorGone> {
        call(&self.mailbox, NAME, |reply| RemoteMessage::Shutdown { wait, reply }).await
    }
}

impl RemoteActor {
    async fn run(mut self) {
        let shutdown = loop {
            tokio::select! {
                message = self.inbox.recv() => match message {
                    Some(RemoteMessage::Shutdown { wait, reply }) => break Some((wait, reply)),
                    Some(message) => self.handle(message),
                    None => break None,
                },
                Some(_) = self.downloads.join_next(), if !self.downloads.is_empty() => {
                    self.start_queued();
                    self.report();
                }
                Some(_) = self.uploads.join_next(), if !self.uploads.is_empty() => self.report(),
            }
        };
        self.inbox.close();
        while let Some(message) = self.inbox.recv().await {
            match message {
                RemoteMessage::Shutdown { reply, .. } => {
                    let _ = reply.send(RemoteShutdown::default());
                }
                message => self.handle(message),
            }
        }
        loop {
            self.start_queued();
            if self.downloads.join_next().await.is_none() {
                break;
            }
        }
        let wait = shutdown.as_ref().map_or(Duration::from_secs(10), |(wait, _)| *wait);
        let outcome = self.drain_uploads(wait).await;
        self.report();
        if let Some((_, reply)) = shutdown {
            let _ = reply.send(outcome);
        }
    }

    async fn drain_uploads(&mut self, wait: Duration) -> RemoteShutdown {
        let mut outcome = RemoteShutdown::default();
        let deadline = tokio::time::Instant::now() + wait;
        while !self.uploads.is_empty() {
            match tokio::time::timeout_at(deadline, self.uploads.join_next()).await {
                Ok(_) => outcome.finished += 1,
                Err(_) => break,
            }
        }
        outcome.dropped = self.uploads.len();
        if outcome.dropped > 0 {
            tracing::warn!(
                dropped = outcome.dropped,
                "shutting down: remote uploads still pending were dropped"
            );
            self.uploads.shutdown().await;
        }
        outcome
    }

    fn handle(&mut self, message: RemoteMessage) {
        match message {
            RemoteMessage::Download { digest, manifest, reply } => {
                self.queued.push_back(QueuedDownload { digest, manifest, reply });
                self.start_queued();
            }
            RemoteMessage::Upload { digest, result } => {
                let (client, store) = (self.client.clone(), Arc::clone(&self.store));
                self.uploads.spawn(async move {
                    client.upload_or_skip(&digest, &result, &store).await;
                });
            }
            RemoteMessage::Check { reply } => {
                let client = self.client.clone();
                self.downloads
                    .spawn(answer_while_awaited(reply, async move { client.check().await }));
            }
            RemoteMessage::Counters { reply } => {
                let _ = reply.send(self.client.counters());
            }
            RemoteMessage::Shutdown { reply, .. } => {
                let _ = reply.send(RemoteShutdown::default());
            }
        }
    }

    /// The most downloads running as tasks at once: twice the in-flight limit, so one that
    /// is between calls (storing what it received) leaves another to keep the calls going.
    fn downloads_at_once(&self) -> usize {
        self.client.settings().max_concurrent.saturating_mul(2).max(1)
    }

    /// Starts queued downloads while there is room; one whose caller stopped waiting is
    /// dropped unstarted.
    fn start_queued(&mut self) {
        while self.downloads.len() < self.downloads_at_once() {
            let Some(QueuedDownload { digest, manifest, reply }) = self.queued.pop_front() else {
                return;
            };
            if reply.is_closed() {
                continue;
            }
            let (client, store) = (self.client.clone(), Arc::clone(&self.store));
            // What an abandoned download stored so far is complete blobs, and no record.
            self.downloads.spawn(answer_while_awaited(reply, async move {
                client.download_or_miss(&digest, &manifest, &store).await
            }));
        }
    }

    /// Forwards what the counters gained since the last report.
    fn report(&mut self) {
        let now = self.client.counters();
        let before = self.reported;
        let delta = Counters {
            remote_misses: now.misses - before.misses,
            remote_errors: now.errors - before.errors,
            remote_uploads: now.uploads - before.uploads,
            remote_bytes_up: now.bytes_up - before.bytes_up,
            remote_bytes_down: now.bytes_down - before.bytes_down,
            corrupt: now.corrupt - before.corrupt,
            ..Counters::default()
        };
        if !delta.is_empty() {
            self.stats.record(delta);
        }
        self.reported = now;
    }
}
