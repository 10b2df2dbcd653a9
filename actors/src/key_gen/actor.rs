//! The `KeyGen` actor: owns the key engine and computes each key on a blocking thread (which
//! uses the library's hashing pool for many or large inputs), so a tokio worker never blocks on
//! hashing and several keys are computed at once.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::{ActionKey, KeyEngine, KeyError, KeyRequest};
use crate::actor::call;
use crate::error::{ActorGone, Error};

const NAME: &str = "key generator";

/// A cloneable handle to the key-generation actor.
#[derive(Debug, Clone)]
pub struct KeyGenHandle {
    /// The actor's bounded mailbox; answers come back on oneshot channels from pool threads.
    mailbox: mpsc::Sender<KeyGenMessage>,
}

enum KeyGenMessage {
    Compute { request: Box<KeyRequest>, reply: oneshot::Sender<Result<ActionKey, KeyError>> },
    TakeSnapshots { reply: oneshot::Sender<Vec<(PathBuf, Vec<u8>)>> },
    ForgetStatCaches,
    Shutdown { reply: oneshot::Sender<()> },
}

struct KeyGenActor {
    engine: Arc<KeyEngine>,
    inbox: mpsc::Receiver<KeyGenMessage>,
}

impl KeyGenHandle {
    /// Starts the actor over `engine` on the current tokio runtime.
    pub fn spawn(engine: KeyEngine, mailbox_size: usize) -> (Self, JoinHandle<()>) {
        let (mailbox, inbox) = mpsc::channel(mailbox_size);
        let actor = KeyGenActor { engine: Arc::new(engine), inbox };
        (KeyGenHandle { mailbox }, tokio::spawn(actor.run()))
    }

    /// Computes the key of `request`.
    pub async fn compute(&self, request: KeyRequest) -> Result<ActionKey, Error> {
        let request = Box::new(request);
        Ok(call(&self.mailbox, NAME, |reply| KeyGenMessage::Compute { request, reply }).await??)
    }

    /// The stat caches that changed, as files to write.
    pub async fn take_snapshots(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, ActorGone> {
        call(&self.mailbox, NAME, |reply| KeyGenMessage::TakeSnapshots { reply }).await
    }

    /// Drops the in-memory stat caches (after the cache dir was cleaned).
    pub fn forget_stat_caches(&self) {
        let _ = self.mailbox.try_send(KeyGenMessage::ForgetStatCaches);
    }

    /// Whether the actor has stopped.
    pub fn is_gone(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Stops accepting requests, finishes the keys being computed, and stops.
    pub async fn shutdown(&self) -> Result<(), ActorGone> {
        call(&self.mailbox, NAME, |reply| KeyGenMessage::Shutdown { reply }).await
    }
}

impl KeyGenActor {
    async fn run(mut self) {
        // Each key is computed on a blocking thread, which fans out to the pool only when the
        // inputs are many or large; these are joined before the actor exits.
        let mut jobs: JoinSet<()> = JoinSet::new();
        loop {
            let message = tokio::select! {
                message = self.inbox.recv() => message,
                Some(_) = jobs.join_next(), if !jobs.is_empty() => continue,
            };
            match message {
                Some(KeyGenMessage::Shutdown { reply }) => {
                    self.inbox.close();
                    while let Some(message) = self.inbox.recv().await {
                        self.handle(message, &mut jobs);
                    }
                    while jobs.join_next().await.is_some() {}
                    let _ = reply.send(());
                    return;
                }
                Some(message) => self.handle(message, &mut jobs),
                None => break,
            }
        }
        while jobs.join_next().await.is_some() {}
    }

    fn handle(&mut self, message: KeyGenMessage, jobs: &mut JoinSet<()>) {
        match message {
            KeyGenMessage::Compute { request, reply } => {
                let engine = Arc::clone(&self.engine);
                jobs.spawn_blocking(move || {
                    let _ = reply.send(engine.compute(&request));
                });
            }
            KeyGenMessage::TakeSnapshots { reply } => {
                let _ = reply.send(self.engine.take_stat_cache_snapshots());
            }
            KeyGenMessage::ForgetStatCaches => self.engine.forget_stat_caches(),
            KeyGenMessage::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }
}
