//! What every actor shares: the request/reply call over a bounded mailbox and a oneshot.

use tokio::sync::{mpsc, oneshot};

use crate::error::ActorGone;

/// Sends the message `make` builds around a fresh reply channel and waits for the answer. A
/// closed mailbox or a dropped reply (the actor panicked or stopped) is [`ActorGone`], never a
/// hang.
pub(crate) async fn call<M, R>(
    mailbox: &mpsc::Sender<M>,
    actor: &'static str,
    make: impl FnOnce(oneshot::Sender<R>) -> M,
) -> Result<R, ActorGone> {
    let (reply, answer) = oneshot::channel();
    mailbox.send(make(reply)).await.map_err(|_| ActorGone { actor })?;
    answer.await.map_err(|_| ActorGone { actor })
}
