//! loom models of the single-flight state machine: one leader per key at a time, every waiter
//! woken with the leader's value or with `Abandoned`, nothing left in the in-flight map; and a
//! deliberately broken variant the same model must catch.
#![cfg(cuenv_loom)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use cuenv::single_flight::broken::RacySingleFlight;
use cuenv::single_flight::{Abandoned, Join, SingleFlight};
use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// What the "one leader" model needs from an implementation.
trait Flights: Send + Sync + 'static {
    type Guard: Send;
    fn create() -> Arc<Self>;
    /// `Some(guard)` when the caller leads.
    fn lead(&self, key: u8) -> Option<Self::Guard>;
}

impl Flights for SingleFlight<u8, u32> {
    type Guard = cuenv::single_flight::Leader<u8, u32>;
    fn create() -> Arc<Self> {
        Arc::new(SingleFlight::new())
    }
    fn lead(&self, key: u8) -> Option<Self::Guard> {
        match self.join(key) {
            Join::Leader(leader) => Some(leader),
            Join::Follower(_) => None,
        }
    }
}

impl Flights for RacySingleFlight<u8> {
    type Guard = ();
    fn create() -> Arc<Self> {
        Arc::new(RacySingleFlight::default())
    }
    fn lead(&self, key: u8) -> Option<()> {
        self.join(key).then_some(())
    }
}

/// Two callers join the same key while neither flight has ended: exactly one may lead.
fn one_leader_model<F: Flights>() {
    loom::model(|| {
        let flights = F::create();
        let leaders = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (flights, leaders) = (Arc::clone(&flights), Arc::clone(&leaders));
                thread::spawn(move || {
                    let guard = flights.lead(1);
                    if guard.is_some() {
                        leaders.fetch_add(1, Ordering::SeqCst);
                    }
                    guard
                })
            })
            .collect();
        let guards: Vec<_> = callers.into_iter().map(|caller| caller.join().unwrap()).collect();
        assert_eq!(leaders.load(Ordering::SeqCst), 1, "two callers led the same key");
        drop(guards);
    });
}

#[test]
fn exactly_one_caller_leads() {
    one_leader_model::<SingleFlight<u8, u32>>();
}

#[test]
fn the_model_catches_check_then_insert_without_the_lock() {
    let outcome = catch_unwind(AssertUnwindSafe(one_leader_model::<RacySingleFlight<u8>>));
    assert!(outcome.is_err(), "the broken variant passed the model: the model has no teeth");
}

/// The leader completes while a follower waits (or arrives late and leads a fresh flight):
/// everyone ends with the value and the map is empty.
#[test]
fn waiters_get_the_value_and_nothing_stays_in_flight() {
    loom::model(|| {
        let flights: SingleFlight<u8, u32> = SingleFlight::new();
        let Join::Leader(leader) = flights.join(1) else { panic!("first caller must lead") };
        let follower = {
            let flights = flights.clone();
            thread::spawn(move || match flights.join(1) {
                Join::Follower(wait) => block_on(wait),
                Join::Leader(late) => {
                    late.complete(7);
                    Ok(7)
                }
            })
        };
        let own = leader.wait();
        leader.complete(7);
        assert_eq!(block_on(own), Ok(7));
        assert_eq!(follower.join().unwrap(), Ok(7));
        assert_eq!(flights.in_flight(), 0);
    });
}

/// The leader is dropped without a value (its task panicked or was cancelled): waiters are
/// woken with `Abandoned`, never left hanging, and the key can be led again.
#[test]
fn an_abandoned_leader_wakes_every_waiter() {
    loom::model(|| {
        let flights: SingleFlight<u8, u32> = SingleFlight::new();
        let Join::Leader(leader) = flights.join(1) else { panic!("first caller must lead") };
        let own = leader.wait();
        let follower = {
            let flights = flights.clone();
            thread::spawn(move || match flights.join(1) {
                Join::Follower(wait) => block_on(wait),
                Join::Leader(retry) => {
                    retry.complete(8);
                    Ok(8)
                }
            })
        };
        let leader_task = thread::spawn(move || drop(leader));
        leader_task.join().unwrap();
        assert_eq!(block_on(own), Err(Abandoned));
        let seen = follower.join().unwrap();
        assert!(seen == Err(Abandoned) || seen == Ok(8), "{seen:?}");
        assert_eq!(flights.in_flight(), 0);
    });
}
