//! The `Stats` actor: adds up counter deltas and persists them through the disk actor.
//!
//! Callers report with [`StatsHandle::record`], which uses `try_send`: under load a sample may be
//! dropped, but a lookup never waits on statistics.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::{Counters, day_of, oldest_kept_day};
use crate::actor::call;
use crate::disk::DiskHandle;
use crate::error::ActorGone;

const NAME: &str = "stats";

/// A cloneable handle to the statistics actor.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    /// The actor's bounded mailbox. Samples are sent with `try_send`, so a full mailbox drops a
    /// sample instead of blocking the caller.
    mailbox: mpsc::Sender<StatsMessage>,
}

enum StatsMessage {
    Record(Counters),
    Snapshot { reply: oneshot::Sender<Counters> },
    Flush { reply: oneshot::Sender<()> },
    Shutdown { reply: oneshot::Sender<()> },
}

struct StatsActor {
    inbox: mpsc::Receiver<StatsMessage>,
    /// Everything this process counted.
    total: Counters,
    /// Counted since the last flush.
    unflushed: Counters,
    /// Where buckets are merged; `None` keeps statistics in memory only.
    disk: Option<DiskHandle>,
    retention_days: u32,
    flush_every: Duration,
}

impl StatsHandle {
    /// Starts the actor. With a disk handle, counts are merged into the day's bucket every
    /// `flush_every`, on `flush`, and at shutdown, and buckets older than `retention_days` are
    /// pruned.
    pub fn spawn(
        disk: Option<DiskHandle>,
        retention_days: u32,
        flush_every: Duration,
        mailbox_size: usize,
    ) -> (Self, JoinHandle<()>) {
        let (mailbox, inbox) = mpsc::channel(mailbox_size);
        let actor = StatsActor {
            inbox,
            total: Counters::default(),
            unflushed: Counters::default(),
            disk,
            retention_days,
            flush_every,
        };
        (StatsHandle { mailbox }, tokio::spawn(actor.run()))
    }

    /// Adds `delta`; never waits (drops the sample if the mailbox is full).
    pub fn record(&self, delta: Counters) {
        let _ = self.mailbox.try_send(StatsMessage::Record(delta));
    }

    /// What this process has counted so far.
    pub async fn snapshot(&self) -> Result<Counters, ActorGone> {
        call(&self.mailbox, NAME, |reply| StatsMessage::Snapshot { reply }).await
    }

    /// Writes what was counted to the day's bucket.
    pub async fn flush(&self) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| StatsMessage::Flush { reply }).await
    }

    /// Whether the actor has stopped.
    pub fn is_gone(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Finishes what is queued, flushes, and stops.
    pub async fn shutdown(&self) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| StatsMessage::Shutdown { reply }).await
    }
}

impl StatsActor {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.flush_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // Periodic flushes run beside the loop, one at a time, so the mailbox keeps draining
        // while the disk tier is busy and `record` never finds it full for that reason.
        let mut background: JoinSet<Option<Counters>> = JoinSet::new();
        loop {
            let message = tokio::select! {
                message = self.inbox.recv() => message,
                _ = ticker.tick() => {
                    if background.is_empty() && let Some(merge) = self.take_merge() {
                        background.spawn(merge);
                    }
                    continue;
                }
                Some(joined) = background.join_next(), if !background.is_empty() => {
                    self.returned(joined.ok().flatten());
                    continue;
                }
            };
            let finishing = matches!(message, Some(StatsMessage::Shutdown { .. }) | None);
            if finishing || matches!(message, Some(StatsMessage::Flush { .. })) {
                while let Some(joined) = background.join_next().await {
                    self.returned(joined.ok().flatten());
                }
            }
            match message {
                Some(StatsMessage::Shutdown { reply }) => {
                    self.inbox.close();
                    while let Some(message) = self.inbox.recv().await {
                        self.handle(message).await;
                    }
                    self.flush().await;
                    let _ = reply.send(());
                    return;
                }
                Some(message) => self.handle(message).await,
                // Every handle is gone: the runtime was dropped without `shutdown`.
                None => return self.flush().await,
            }
        }
    }

    async fn handle(&mut self, message: StatsMessage) {
        match message {
            StatsMessage::Record(delta) => {
                self.total.add(&delta);
                self.unflushed.add(&delta);
            }
            StatsMessage::Snapshot { reply } => {
                let _ = reply.send(self.total);
            }
            StatsMessage::Flush { reply } => {
                self.flush().await;
                let _ = reply.send(());
            }
            StatsMessage::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Takes what is unflushed and returns the merge that writes it; the merge resolves to the
    /// counts it could not write (to be added back), if any.
    fn take_merge(&mut self) -> Option<impl Future<Output = Option<Counters>> + Send + 'static> {
        let disk = self.disk.clone()?;
        if self.unflushed.is_empty() {
            return None;
        }
        let now = SystemTime::now();
        let oldest_kept = oldest_kept_day(now, self.retention_days);
        let delta = std::mem::take(&mut self.unflushed);
        Some(async move {
            match disk.merge_stats(day_of(now), delta, oldest_kept).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot write cache statistics");
                    Some(delta)
                }
                Err(gone) => {
                    tracing::warn!(%gone, "cannot write cache statistics");
                    None
                }
            }
        })
    }

    fn returned(&mut self, unwritten: Option<Counters>) {
        if let Some(delta) = unwritten {
            self.unflushed.add(&delta);
        }
    }

    /// Writes what is unflushed and waits for it.
    async fn flush(&mut self) {
        if let Some(merge) = self.take_merge() {
            let unwritten = merge.await;
            self.returned(unwritten);
        }
    }
}
