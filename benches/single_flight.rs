//! `single_flight`: what a waiter on someone else's execution costs, through the real manager
//! and in the `SingleFlight` state machine alone.
//!
//! - `manager/one_key/N` (N = 1, 100, 10,000): N concurrent `execute` calls for one fresh key
//!   on a 2-worker runtime; the execution waits until all N have joined (the statistics count
//!   N misses: the leader's and one per follower), so there is one execution and N - 1 shared
//!   results, which the bench checks. Each call also computes its key (KeyGen), looks up memory
//!   and disk, and is a spawned task. Overhead per waiter = (T(N) - T(1)) / (N - 1): what each
//!   extra caller adds to one cached miss. The execution polls the statistics every
//!   millisecond, so up to 1 ms of T(N) is that poll's slack. The statistics can lose samples
//!   under load; a flight whose count stalls for 50 ms goes ahead (the report counts these).
//! - `manager/distinct_keys/64`: 64 concurrent calls on 64 fresh keys (64 executions and
//!   stores, checked against the statistics); throughput in executions per second.
//! - `alone/*/N`: the `SingleFlight` struct alone: N joins, N waits polled once (registering
//!   a waker), one complete, N waits polled to ready. `distinct_wakers` gives every waiter its
//!   own waker (as N tasks would), `shared_waker` one waker for all; `tasks` spawns N tokio
//!   tasks on a current-thread runtime that await their wait, all parked before the complete.
//!
//! Run: `cargo bench --bench single_flight`. Target on a 2-core machine: <= 2 us per waiter for
//! the coordination itself (`alone`); the manager figure adds a key, two lookups and a task per
//! caller. A per-waiter table follows criterion's output.

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use cuenv::config::{CacheFeatureFlags, GlobalCacheConfig};
use cuenv::single_flight::{Join, SingleFlight, Wait};
use cuenv::task::TaskConfig;
use cuenv::{Counters, EnhancedCacheManager, Source, TaskOutput};
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinSet;

const WAITERS: [u64; 3] = [1, 100, 10_000];
const DISTINCT: u64 = 64;

/// Total time and iterations measured per benchmark, for the per-waiter table.
static MEASURED: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

fn note(name: String, elapsed: Duration, iterations: u64) -> Duration {
    let mut measured = MEASURED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = measured.entry(name).or_default();
    entry.0 += elapsed;
    entry.1 += iterations;
    elapsed
}

fn mean(name: &str) -> Option<Duration> {
    let measured = MEASURED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (total, iterations) = measured.get(name).filter(|(_, iterations)| *iterations > 0)?;
    Some(*total / u32::try_from(*iterations).unwrap_or(u32::MAX))
}

// ---------------------------------------------------------------------------------------------
// Through the manager.

/// A manager on a temp cache dir (fsync off: the store is not what is measured) and an empty
/// project.
struct Bench {
    runtime: Runtime,
    manager: EnhancedCacheManager,
    root: PathBuf,
    next_key: AtomicU64,
    _dirs: [tempfile::TempDir; 2],
}

impl Bench {
    fn start() -> Self {
        let runtime = Builder::new_multi_thread().worker_threads(2).enable_all().build();
        let runtime = runtime.unwrap_or_else(|error| panic!("runtime: {error}"));
        let cache = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let root = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let mut config = GlobalCacheConfig::defaults_from(&Default::default());
        config.cache_dir = cache.path().to_owned();
        config.storage.fsync = false;
        let manager = runtime
            .block_on(EnhancedCacheManager::new_with_flags(config, CacheFeatureFlags::default()))
            .unwrap_or_else(|error| panic!("manager: {error}"));
        Bench {
            runtime,
            manager,
            root: root.path().to_owned(),
            next_key: AtomicU64::new(0),
            _dirs: [cache, root],
        }
    }

    fn task(&self) -> Arc<TaskConfig> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        Arc::new(TaskConfig { command: Some(format!("bench {key}")), ..TaskConfig::default() })
    }

    async fn counters(&self) -> Counters {
        self.manager.statistics().await.unwrap_or_else(|error| panic!("statistics: {error}"))
    }

    /// One call for `task`; its execution (if it leads) waits until `misses` are counted.
    fn call(
        &self,
        task: &Arc<TaskConfig>,
        misses: Option<u64>,
    ) -> impl Future<Output = Source> + use<> {
        let (manager, task, root) = (self.manager.clone(), Arc::clone(task), self.root.clone());
        async move {
            let gate = manager.clone();
            let execute = move || async move {
                if let Some(misses) = misses {
                    joined(&gate, misses).await;
                }
                Ok::<_, std::io::Error>(TaskOutput::new(0, "", ""))
            };
            let env = HashMap::new();
            let execution = manager.execute_task_with_cache("bench", &task, &root, &env, execute);
            execution.await.unwrap_or_else(|error| panic!("execute: {error}")).source
        }
    }

    /// N concurrent calls on one fresh key; returns the time and checks one execution.
    async fn one_key(&self, n: u64) -> Duration {
        let before = self.counters().await;
        let task = self.task();
        let started = Instant::now();
        let mut callers = JoinSet::new();
        for _ in 0..n {
            callers.spawn(self.call(&task, Some(before.misses + n)));
        }
        let sources = callers.join_all().await;
        let elapsed = started.elapsed();
        let executed = sources.iter().filter(|source| **source == Source::Executed).count();
        let shared = sources.iter().filter(|source| **source == Source::Shared).count() as u64;
        assert_eq!((executed, shared), (1, n - 1), "one execution, every other call shared it");
        assert_eq!(self.counters().await.executions - before.executions, 1);
        elapsed
    }

    /// `DISTINCT` concurrent calls on as many fresh keys; checks every one executed and stored.
    async fn distinct_keys(&self) -> Duration {
        let before = self.counters().await;
        let started = Instant::now();
        let mut callers = JoinSet::new();
        for _ in 0..DISTINCT {
            callers.spawn(self.call(&self.task(), None));
        }
        let sources = callers.join_all().await;
        let elapsed = started.elapsed();
        assert!(sources.iter().all(|source| *source == Source::Executed));
        let after = self.counters().await;
        assert_eq!(after.executions - before.executions, DISTINCT);
        assert_eq!(after.writes - before.writes, DISTINCT);
        elapsed
    }
}

/// Flights whose statistics never counted every join, and the misses they lacked in all.
static UNDERCOUNTED: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Waits until the statistics count `misses`: every caller of the flight has joined it. The
/// statistics drop samples when the stats actor's mailbox is full (see the report), so a count
/// that stalls for `STALL` is taken as final; the bench still checks every caller shared.
async fn joined(manager: &EnhancedCacheManager, misses: u64) {
    const STALL: Duration = Duration::from_millis(50);
    let mut last = (0, Instant::now());
    loop {
        let counted = manager.statistics().await.map_or(misses, |counters| counters.misses);
        if counted >= misses {
            return;
        }
        if counted != last.0 {
            last = (counted, Instant::now());
        } else if last.1.elapsed() > STALL {
            let mut undercounted = UNDERCOUNTED.lock().unwrap_or_else(|p| p.into_inner());
            undercounted.0 += 1;
            undercounted.1 += misses - counted;
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn manager_benches(criterion: &mut Criterion) {
    let bench = Bench::start();
    let mut group = criterion.benchmark_group("manager");
    group.sampling_mode(SamplingMode::Flat);
    for n in WAITERS {
        group.throughput(Throughput::Elements(n));
        group.bench_function(format!("one_key/{n}"), |b| {
            b.iter_custom(|iterations| {
                let elapsed = (0..iterations)
                    .map(|_| bench.runtime.block_on(bench.one_key(n)))
                    .sum::<Duration>();
                note(format!("manager/one_key/{n}"), elapsed, iterations)
            });
        });
    }
    group.throughput(Throughput::Elements(DISTINCT));
    group.bench_function(format!("distinct_keys/{DISTINCT}"), |b| {
        b.iter_custom(|iterations| {
            let elapsed = (0..iterations)
                .map(|_| bench.runtime.block_on(bench.distinct_keys()))
                .sum::<Duration>();
            note(format!("manager/distinct_keys/{DISTINCT}"), elapsed, iterations)
        });
    });
    group.finish();
    bench.runtime.block_on(bench.manager.shutdown()).unwrap_or_else(|e| panic!("shutdown: {e}"));
}

// ---------------------------------------------------------------------------------------------
// The state machine alone.

/// A waker that only records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// N joins, N waits registered with `wakers` (cycled), one complete, N waits to ready.
fn flight_alone(n: u64, wakers: &[Waker]) -> u64 {
    let flights: SingleFlight<u64, u64> = SingleFlight::new();
    let Join::Leader(leader) = flights.join(7) else { unreachable!("the first join leads") };
    let mut waits = Vec::with_capacity(n as usize);
    waits.push(leader.wait());
    for _ in 1..n {
        let Join::Follower(wait) = flights.join(7) else { unreachable!("a later join follows") };
        waits.push(wait);
    }
    for (wait, waker) in waits.iter_mut().zip(wakers.iter().cycle()) {
        let pending = Pin::new(wait).poll(&mut Context::from_waker(waker)).is_pending();
        assert!(pending);
    }
    leader.complete(42);
    let mut sum = 0;
    for (wait, waker) in waits.iter_mut().zip(wakers.iter().cycle()) {
        match Pin::new(wait).poll(&mut Context::from_waker(waker)) {
            Poll::Ready(Ok(value)) => sum += value,
            _ => unreachable!("a completed flight is ready"),
        }
    }
    assert_eq!(flights.in_flight(), 0);
    sum
}

/// N tokio tasks awaiting one flight on a current-thread runtime.
async fn flight_tasks(n: u64) -> u64 {
    let flights: SingleFlight<u64, u64> = SingleFlight::new();
    let Join::Leader(leader) = flights.join(7) else { unreachable!("the first join leads") };
    let parked = Arc::new(AtomicU64::new(0));
    let park = |wait: Wait<u64>| {
        let parked = Arc::clone(&parked);
        async move {
            // Counted in the same poll that registers the waker, just before it.
            parked.fetch_add(1, Ordering::Relaxed);
            wait.await
        }
    };
    let mut waiters = JoinSet::new();
    waiters.spawn(park(leader.wait()));
    for _ in 1..n {
        let Join::Follower(wait) = flights.join(7) else { unreachable!("a later join follows") };
        waiters.spawn(park(wait));
    }
    while parked.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
    leader.complete(42);
    waiters.join_all().await.into_iter().map(|value| value.unwrap_or(0)).sum()
}

fn alone_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("alone");
    group.measurement_time(Duration::from_secs(2));
    let max = WAITERS.iter().copied().max().unwrap_or(1) as usize;
    let distinct: Vec<Waker> =
        (0..max).map(|_| Waker::from(Arc::new(Flag(AtomicBool::new(false))))).collect();
    let shared = [Waker::from(Arc::new(Flag(AtomicBool::new(false))))];
    let runtime = Builder::new_current_thread().build();
    let runtime = runtime.unwrap_or_else(|error| panic!("runtime: {error}"));
    for n in WAITERS {
        group.throughput(Throughput::Elements(n));
        for (kind, wakers) in [("distinct_wakers", &distinct[..]), ("shared_waker", &shared[..])] {
            let name = format!("alone/{kind}/{n}");
            group.bench_function(format!("{kind}/{n}"), |b| {
                b.iter_custom(|iterations| {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        assert_eq!(black_box(flight_alone(n, wakers)), 42 * n);
                    }
                    note(name.clone(), started.elapsed(), iterations)
                });
            });
        }
        group.bench_function(format!("tasks/{n}"), |b| {
            b.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    assert_eq!(black_box(runtime.block_on(flight_tasks(n))), 42 * n);
                }
                note(format!("alone/tasks/{n}"), started.elapsed(), iterations)
            });
        });
    }
    group.finish();
}

#[allow(clippy::print_stdout, reason = "the per-waiter table is the bench's report")]
fn print_report() {
    let us = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("\nmean per iteration, warm-up included; per waiter = iteration / N");
    for kind in ["alone/distinct_wakers", "alone/shared_waker", "alone/tasks", "manager/one_key"] {
        for n in WAITERS {
            if let Some(total) = mean(&format!("{kind}/{n}")) {
                let per = us(total) / n as f64;
                println!("  {kind:<22} N={n:<6} {:>12.1} us  {per:>9.3} us/waiter", us(total));
            }
        }
    }
    if let Some(single) = mean("manager/one_key/1") {
        println!("manager: overhead per waiter = (T(N) - T(1)) / (N - 1)");
        for n in WAITERS.into_iter().filter(|n| *n > 1) {
            if let Some(total) = mean(&format!("manager/one_key/{n}")) {
                let per = (us(total) - us(single)) / (n - 1) as f64;
                println!("  N={n:<6} {per:>9.3} us/waiter (T(1) = {:.1} us)", us(single));
            }
        }
    }
    let undercounted = *UNDERCOUNTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if undercounted.0 > 0 {
        println!(
            "statistics lost {} misses in {} flights (stats mailbox full); those flights \
             waited for a stalled count",
            undercounted.1, undercounted.0
        );
    }
    if let Some(total) = mean(&format!("manager/distinct_keys/{DISTINCT}")) {
        let rate = DISTINCT as f64 / total.as_secs_f64();
        println!("manager: {DISTINCT} distinct keys: {rate:.0} executions/s ({:.1} us)", us(total));
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    alone_benches(&mut criterion);
    manager_benches(&mut criterion);
    criterion.final_summary();
    print_report();
}
