//! The `MemoryTier` actor: owns the moka cache and answers gets and inserts from its mailbox.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{MemoryEntry, MemoryTier};
use crate::Digest;
use crate::actor::call;
use crate::error::ActorGone;

const NAME: &str = "memory tier";

/// A cloneable handle to the memory-tier actor.
#[derive(Debug, Clone)]
pub struct MemoryHandle {
    /// The actor's bounded mailbox; the actor exits when every sender is gone or on `Shutdown`.
    mailbox: mpsc::Sender<MemoryMessage>,
}

enum MemoryMessage {
    Get { digest: Digest, reply: oneshot::Sender<Option<Arc<MemoryEntry>>> },
    Insert { digest: Digest, entry: Arc<MemoryEntry>, reply: oneshot::Sender<()> },
    Put { digest: Digest, entry: Arc<MemoryEntry> },
    Invalidate { digest: Digest },
    Clear,
    Poison,
    Shutdown { reply: oneshot::Sender<()> },
}

struct MemoryActor {
    tier: MemoryTier,
    inbox: mpsc::Receiver<MemoryMessage>,
}

impl MemoryHandle {
    /// Starts the actor on the current tokio runtime with a tier of `capacity` bytes.
    pub fn spawn(capacity: u64, mailbox_size: usize) -> (Self, JoinHandle<()>) {
        let (mailbox, inbox) = mpsc::channel(mailbox_size);
        let actor = MemoryActor { tier: MemoryTier::new(capacity), inbox };
        (MemoryHandle { mailbox }, tokio::spawn(actor.run()))
    }

    /// The entry of `digest`, if held.
    pub async fn get(&self, digest: Digest) -> Result<Option<Arc<MemoryEntry>>, ActorGone> {
        call(&self.mailbox, NAME, |reply| MemoryMessage::Get { digest, reply }).await
    }

    /// Holds `entry` under `digest`.
    pub async fn insert(&self, digest: Digest, entry: Arc<MemoryEntry>) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| MemoryMessage::Insert { digest, entry, reply }).await
    }

    /// Holds `entry` under `digest` without waiting (a full mailbox drops it: the memory tier
    /// is a cache of the disk tier).
    pub fn put(&self, digest: Digest, entry: Arc<MemoryEntry>) {
        let _ = self.mailbox.try_send(MemoryMessage::Put { digest, entry });
    }

    /// Drops the entry of `digest`; does not wait.
    pub fn invalidate(&self, digest: Digest) {
        let _ = self.mailbox.try_send(MemoryMessage::Invalidate { digest });
    }

    /// Drops every entry; does not wait.
    pub fn clear(&self) {
        let _ = self.mailbox.try_send(MemoryMessage::Clear);
    }

    /// Makes the actor panic, to check that callers get `ActorGone` and the runtime reports
    /// itself unhealthy. For tests and fault drills only.
    #[doc(hidden)]
    pub fn poison(&self) {
        let _ = self.mailbox.try_send(MemoryMessage::Poison);
    }

    /// Whether the actor has stopped.
    pub fn is_gone(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Asks the actor to finish what is queued and stop.
    pub async fn shutdown(&self) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| MemoryMessage::Shutdown { reply }).await
    }
}

impl MemoryActor {
    async fn run(mut self) {
        while let Some(message) = self.inbox.recv().await {
            if let MemoryMessage::Shutdown { reply } = message {
                self.inbox.close();
                while let Some(message) = self.inbox.recv().await {
                    self.handle(message).await;
                }
                let _ = reply.send(());
                break;
            }
            self.handle(message).await;
        }
    }

    async fn handle(&mut self, message: MemoryMessage) {
        match message {
            MemoryMessage::Get { digest, reply } => {
                let _ = reply.send(self.tier.get(&digest).await);
            }
            MemoryMessage::Insert { digest, entry, reply } => {
                self.tier.insert(digest, entry).await;
                let _ = reply.send(());
            }
            MemoryMessage::Put { digest, entry } => self.tier.insert(digest, entry).await,
            MemoryMessage::Invalidate { digest } => self.tier.invalidate(&digest).await,
            MemoryMessage::Clear => self.tier.clear(),
            MemoryMessage::Poison => panic!("memory tier poisoned on request"),
            MemoryMessage::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }
}
