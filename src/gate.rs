//! The shutdown handshake: work enters through a gate; closing it refuses new work and waits
//! until everything that entered has left.
//!
//! Every accepted request holds a [`Pass`] until its result is stored; `shutdown` closes the
//! gate and awaits [`WorkGate::drained`], then stops the actors. So shutdown never cuts off an
//! accepted write, and no work starts after shutdown began. Like single flight, it uses only
//! `crate::sync` types so `loom-tests` can check it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, lock};

struct State {
    closed: bool,
    active: usize,
    waiters: Vec<Waker>,
}

/// Admits work until closed; counts what is inside. Cloning gives another handle to the same
/// gate.
#[derive(Clone)]
pub struct WorkGate {
    state: Arc<Mutex<State>>,
}

/// Proof of admission; dropping it leaves the gate.
pub struct Pass {
    state: Arc<Mutex<State>>,
}

/// Resolves when the gate is closed and empty.
pub struct Drained {
    state: Arc<Mutex<State>>,
}

impl Default for WorkGate {
    fn default() -> Self {
        WorkGate {
            state: Arc::new(Mutex::new(State { closed: false, active: 0, waiters: Vec::new() })),
        }
    }
}

impl WorkGate {
    /// Admits one unit of work, or `None` once the gate is closed.
    pub fn enter(&self) -> Option<Pass> {
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        state.active += 1;
        Some(Pass { state: Arc::clone(&self.state) })
    }

    /// Refuses all later work. Idempotent.
    pub fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// Closes the gate and resolves when everything admitted has left.
    pub fn drained(&self) -> Drained {
        self.close();
        Drained { state: Arc::clone(&self.state) }
    }

    /// Work inside the gate.
    pub fn active(&self) -> usize {
        lock(&self.state).active
    }
}

impl Pass {
    /// Another pass for the same gate (the spawned half of a request), even if the gate closed
    /// meanwhile: the request was admitted before.
    pub fn share(&self) -> Pass {
        lock(&self.state).active += 1;
        Pass { state: Arc::clone(&self.state) }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let waiters = {
            let mut state = lock(&self.state);
            state.active -= 1;
            if state.closed && state.active == 0 {
                std::mem::take(&mut state.waiters)
            } else {
                Vec::new()
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

impl Future for Drained {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.active == 0 {
            return Poll::Ready(());
        }
        if !state.waiters.iter().any(|waker| waker.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
