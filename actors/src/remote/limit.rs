//! The in-flight limit: at most `max_concurrent` RPCs at once, fewer while the server pushes
//! back.
//!
//! A server answers `RESOURCE_EXHAUSTED` when it has more requests than workers (BuildGrid's
//! gRPC thread pool is five per CPU by default, so 10 on a 2-core machine). Retrying at the
//! same width only meets the same refusal, so the limit adapts like a congestion window:
//!
//! - a refusal halves the limit (never below one), once per window: refusals of calls
//!   admitted before the last cut are the same burst and cut nothing more;
//! - every `limit` successes in a row add one back, up to `max_concurrent`.
//!
//! Permits are a tokio semaphore. Cutting the limit forgets idle permits at once; permits
//! held by running calls become a debt, paid by forgetting them as they come back. So at any
//! moment `available + held - debt == limit`.

use std::sync::Mutex;

use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

/// The adaptive in-flight limit of one client.
#[derive(Debug)]
pub(crate) struct InFlight {
    permits: Semaphore,
    max: usize,
    /// A std mutex: it is held only to adjust numbers, never across an `.await`.
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    limit: usize,
    /// Held permits to forget, rather than release, when they come back.
    debt: usize,
    /// Successes since the limit last changed.
    successes: usize,
    /// Bumped by each cut; a slot remembers the epoch it was admitted in.
    epoch: u64,
}

/// What a refusal did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// The limit was cut, by this refusal or an earlier one of the same burst: retrying at
    /// once, under the smaller window, is the right response.
    Narrowed,
    /// The call was admitted under the current limit and still refused: back off.
    AtLimit,
}

/// A permit for one attempt; dropping it releases the permit (or pays the debt).
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    owner: &'a InFlight,
    permit: Option<SemaphorePermit<'a>>,
    epoch: u64,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        InFlight {
            permits: Semaphore::new(max),
            max,
            window: Mutex::new(Window { limit: max, debt: 0, successes: 0, epoch: 0 }),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a permit.
    pub(crate) async fn acquire(&self) -> Result<Slot<'_>, AcquireError> {
        let permit = self.permits.acquire().await?;
        let epoch = self.window().epoch;
        Ok(Slot { owner: self, permit: Some(permit), epoch })
    }

    /// The current limit.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.window().limit
    }

    /// Notes a call the server answered without pushing back; widens the window by one
    /// after `limit` of them.
    pub(crate) fn succeeded(&self) {
        let mut window = self.window();
        if window.limit >= self.max {
            return;
        }
        window.successes += 1;
        if window.successes < window.limit {
            return;
        }
        window.successes = 0;
        window.limit += 1;
        if window.debt > 0 {
            window.debt -= 1;
        } else {
            self.permits.add_permits(1);
        }
    }

    /// Notes that the server refused `slot`'s call as overloaded.
    pub(crate) fn overloaded(&self, slot: &Slot<'_>) -> Pushback {
        let mut window = self.window();
        if slot.epoch != window.epoch {
            return Pushback::Narrowed;
        }
        if window.limit == 1 {
            return Pushback::AtLimit;
        }
        let cut = window.limit - (window.limit / 2).max(1);
        window.limit -= cut;
        window.successes = 0;
        window.epoch += 1;
        let forgotten = self.permits.forget_permits(cut);
        window.debt += cut - forgotten;
        tracing::debug!(limit = window.limit, "remote cache is overloaded; fewer calls in flight");
        Pushback::Narrowed
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut window = self.owner.window();
        if window.debt > 0 {
            window.debt -= 1;
            permit.forget();
        }
        // Otherwise the permit is released when it drops here, after the lock.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Permits that can be taken right now.
    fn idle(in_flight: &InFlight) -> usize {
        in_flight.permits.available_permits()
    }

    /// Takes `n` permits.
    async fn hold(in_flight: &InFlight, n: usize) -> Vec<Slot<'_>> {
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(in_flight.acquire().await.unwrap());
        }
        slots
    }

    #[tokio::test]
    async fn a_refusal_halves_the_limit_once_per_burst() {
        let in_flight = InFlight::new(16);
        let slots = hold(&in_flight, 10).await;
        assert_eq!(idle(&in_flight), 6);
        // Ten calls of one burst refused: one cut, 16 -> 8; six idle permits forgotten at
        // once, two more owed by the running calls.
        for slot in &slots {
            assert_eq!(in_flight.overloaded(slot), Pushback::Narrowed);
        }
        assert_eq!(in_flight.limit(), 8);
        assert_eq!(idle(&in_flight), 0);
        drop(slots);
        assert_eq!(idle(&in_flight), 8, "two returning permits paid the debt");
        // A call admitted under the new limit and refused cuts again.
        let slot = in_flight.acquire().await.unwrap();
        assert_eq!(in_flight.overloaded(&slot), Pushback::Narrowed);
        assert_eq!(in_flight.limit(), 4);
        drop(slot);
        assert_eq!(idle(&in_flight), 4);
    }

    #[tokio::test]
    async fn the_limit_never_drops_below_one_and_then_asks_for_backoff() {
        let in_flight = InFlight::new(4);
        for expected in [2, 1] {
            let slot = in_flight.acquire().await.unwrap();
            assert_eq!(in_flight.overloaded(&slot), Pushback::Narrowed);
            assert_eq!(in_flight.limit(), expected);
        }
        let slot = in_flight.acquire().await.unwrap();
        assert_eq!(in_flight.overloaded(&slot), Pushback::AtLimit);
        assert_eq!(in_flight.limit(), 1);
        drop(slot);
        assert_eq!(idle(&in_flight), 1);
    }

    #[tokio::test]
    async fn successes_widen_the_window_back_to_the_maximum() {
        let in_flight = InFlight::new(8);
        let slots = hold(&in_flight, 8).await;
        in_flight.overloaded(&slots[0]);
        assert_eq!(in_flight.limit(), 4);
        // All eight permits are held, so four are owed; widening cancels one of that debt.
        for _ in 0..4 {
            in_flight.succeeded();
        }
        assert_eq!(in_flight.limit(), 5);
        drop(slots);
        assert_eq!(idle(&in_flight), 5);
        for _ in 0..100 {
            in_flight.succeeded();
        }
        assert_eq!(in_flight.limit(), 8);
        assert_eq!(idle(&in_flight), 8);
    }

    #[tokio::test]
    async fn a_cut_limit_really_bounds_concurrency() {
        let in_flight = InFlight::new(4);
        let first = in_flight.acquire().await.unwrap();
        in_flight.overloaded(&first);
        assert_eq!(in_flight.limit(), 2);
        let second = in_flight.acquire().await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), in_flight.acquire());
        assert!(third.await.is_err(), "a third call waits while the limit is two");
        drop((first, second));
        let _a = in_flight.acquire().await.unwrap();
        let _b = in_flight.acquire().await.unwrap();
        assert_eq!(idle(&in_flight), 0);
    }
}
