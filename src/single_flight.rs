//! Single flight: concurrent requests for the same key share one execution.
//!
//! The first caller of [`SingleFlight::join`] for a key becomes the [`Leader`]; later callers
//! get a [`Wait`] future for the same flight until the leader finishes. The state of a flight
//! moves `Running { wakers } → Done(value)` when the leader calls [`Leader::complete`], or
//! `Running → Abandoned` when the leader is dropped without completing (its task panicked or was
//! cancelled). Either way the key leaves the in-flight map and every waiter is woken, so nothing
//! hangs and nothing stale stays behind; a later `join` starts a fresh flight.
//!
//! The state machine uses only `crate::sync` types (no tokio), so `loom-tests` can check it
//! under every interleaving.
//!
//! # Concurrent calls on the same key
//! ```
//! use cuenv::single_flight::{Join, SingleFlight};
//!
//! let flights: SingleFlight<&str, u32> = SingleFlight::new();
//! let Join::Leader(leader) = flights.join("build") else { unreachable!() };
//! let Join::Follower(wait) = flights.join("build") else { unreachable!() };
//! leader.complete(42);
//! assert_eq!(futures_lite_block_on(wait), Ok(42));
//! assert_eq!(flights.in_flight(), 0);
//! # fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, lock};

/// The leader went away without a value (its task panicked or was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the execution this request was waiting for was abandoned")]
pub struct Abandoned;

enum State<V> {
    Running { wakers: Vec<Waker> },
    Done(V),
    Abandoned,
}

struct Flight<V> {
    state: Mutex<State<V>>,
}

type Flights<K, V> = Mutex<HashMap<K, Arc<Flight<V>>>>;

/// The in-flight requests, by key. Cloning gives another handle to the same flights.
pub struct SingleFlight<K, V> {
    /// Flights by key. Held only to look up, insert or remove a flight, never while waiting.
    flights: Arc<Flights<K, V>>,
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        SingleFlight { flights: Arc::clone(&self.flights) }
    }
}

/// The role a caller got from [`SingleFlight::join`].
pub enum Join<K: Hash + Eq + Clone, V: Clone> {
    /// The first caller: execute, then [`Leader::complete`].
    Leader(Leader<K, V>),
    /// A later caller: await the leader's value.
    Follower(Wait<V>),
}

/// The caller that executes for a key.
pub struct Leader<K: Hash + Eq + Clone, V: Clone> {
    owner: Arc<Flights<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    finished: bool,
}

/// Resolves to the leader's value, or [`Abandoned`].
pub struct Wait<V> {
    flight: Arc<Flight<V>>,
    /// This waiter's place in the flight's waker list, once it has one: re-polls replace their
    /// waker in place, so registering stays O(1) however many waiters there are.
    slot: Option<usize>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// No flights.
    pub fn new() -> Self {
        SingleFlight { flights: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Joins the flight of `key`, starting one if there is none. The check and the insert
    /// happen under one lock, so exactly one caller leads.
    pub fn join(&self, key: K) -> Join<K, V> {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key) {
            return Join::Follower(Wait { flight: Arc::clone(flight), slot: None });
        }
        let flight = Arc::new(Flight { state: Mutex::new(State::Running { wakers: Vec::new() }) });
        flights.insert(key.clone(), Arc::clone(&flight));
        drop(flights);
        Join::Leader(Leader { owner: Arc::clone(&self.flights), key, flight, finished: false })
    }

    /// Keys in flight.
    pub fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<K, V> {
    /// A future for this flight's value, like a follower's (the leader's own caller waits on
    /// it while the execution runs in its own task).
    pub fn wait(&self) -> Wait<V> {
        Wait { flight: Arc::clone(&self.flight), slot: None }
    }

    /// Publishes `value` to every waiter and ends the flight.
    pub fn complete(mut self, value: V) {
        self.finished = true;
        self.finish(State::Done(value));
    }

    fn finish(&self, end: State<V>) {
        {
            let mut flights = lock(&self.owner);
            if flights.get(&self.key).is_some_and(|flight| Arc::ptr_eq(flight, &self.flight)) {
                flights.remove(&self.key);
            }
        }
        let previous = std::mem::replace(&mut *lock(&self.flight.state), end);
        if let State::Running { wakers } = previous {
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(State::Abandoned);
        }
    }
}

impl<V: Clone> Future for Wait<V> {
    type Output = Result<V, Abandoned>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = lock(&this.flight.state);
        match &mut *state {
            State::Done(value) => Poll::Ready(Ok(value.clone())),
            State::Abandoned => Poll::Ready(Err(Abandoned)),
            State::Running { wakers } => {
                match this.slot {
                    Some(slot) if !wakers[slot].will_wake(cx.waker()) => {
                        wakers[slot] = cx.waker().clone()
                    }
                    Some(_) => {}
                    None => {
                        this.slot = Some(wakers.len());
                        wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// A deliberately broken single flight for the loom models: it checks for a flight and inserts
/// one under two separate locks, so two callers can both lead. Compiled only under the loom cfg.
#[cfg(cuenv_loom)]
pub mod broken {
    use std::collections::HashMap;
    use std::hash::Hash;

    use crate::sync::{Mutex, lock};

    /// Check-then-insert without holding the lock in between.
    pub struct RacySingleFlight<K> {
        flights: Mutex<HashMap<K, ()>>,
    }

    impl<K: Hash + Eq + Clone> Default for RacySingleFlight<K> {
        fn default() -> Self {
            RacySingleFlight { flights: Mutex::new(HashMap::new()) }
        }
    }

    impl<K: Hash + Eq + Clone> RacySingleFlight<K> {
        /// Whether the caller leads.
        pub fn join(&self, key: K) -> bool {
            let present = lock(&self.flights).contains_key(&key);
            if present {
                return false;
            }
            lock(&self.flights).insert(key, ());
            true
        }
    }
}
