//! `actor_roundtrip`: what one request/reply to an actor costs, with the project's actor shape
//! (a bounded `mpsc` mailbox and a `oneshot` reply, as `cuenv_actors::actor::call` does) against
//! an actix actor, to check the claim that actix is 27-30x slower.
//!
//! The workload is the same everywhere: a `u64` in, `u64 + 1` out, 10,000 sequential round
//! trips per iteration; figures are per round trip.
//!
//! Every caller is a spawned task, as the manager's callers are, unless the name says
//! `block_on` (the caller is the future `Runtime::block_on` drives, whose every wake-up goes
//! through the runtime's driver: a syscall).
//!
//! - `tokio/current_thread`: actor and caller on one current-thread runtime (same thread).
//! - `tokio/multi_thread_2`: actor and caller on a 2-worker runtime.
//! - `tokio/own_thread_from_*`: the actor alone on a current-thread runtime on its own thread,
//!   the caller on another runtime: the topology actix forces, for a like-for-like ratio.
//! - `actix/from_current_thread`, `actix/from_multi_thread_2`: an actix actor in its own
//!   `System` on its own thread (actix actors need their own system), called with
//!   `Addr::send` from a tokio runtime, which is how an embedding scheduler would use it.
//! - `actix/in_system`: caller and actor inside one actix `System` (actix's best case).
//!
//! Run: `cargo bench --bench actor_roundtrip`. A table of ratios actix / tokio follows
//! criterion's output.

#![allow(missing_docs, reason = "criterion's macros generate undocumented items")]

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler, Message};
use criterion::{Criterion, Throughput};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{mpsc, oneshot};

const ROUND_TRIPS: u64 = 10_000;

/// Total time and iterations measured per benchmark, for the ratio table.
static MEASURED: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

fn note(name: &'static str, elapsed: Duration, iterations: u64) -> Duration {
    let mut measured = MEASURED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = measured.entry(name).or_default();
    entry.0 += elapsed;
    entry.1 += iterations;
    elapsed
}

// ---------------------------------------------------------------------------------------------
// The tokio actor, shaped like the project's: handle, message, actor, run, handle.

/// A cloneable handle to the counter actor.
#[derive(Clone)]
struct CounterHandle {
    /// The actor's bounded mailbox; the actor exits when every sender is gone.
    mailbox: mpsc::Sender<CounterMessage>,
}

enum CounterMessage {
    Increment { n: u64, reply: oneshot::Sender<u64> },
}

struct CounterActor {
    inbox: mpsc::Receiver<CounterMessage>,
}

impl CounterHandle {
    /// Starts the actor on the current tokio runtime.
    fn spawn() -> Self {
        let (mailbox, inbox) = mpsc::channel(256);
        tokio::spawn(CounterActor { inbox }.run());
        CounterHandle { mailbox }
    }

    async fn increment(&self, n: u64) -> u64 {
        let (reply, answer) = oneshot::channel();
        let sent = self.mailbox.send(CounterMessage::Increment { n, reply }).await;
        sent.unwrap_or_else(|_| panic!("counter actor gone"));
        answer.await.unwrap_or_else(|_| panic!("counter actor dropped the reply"))
    }
}

impl CounterActor {
    async fn run(mut self) {
        while let Some(message) = self.inbox.recv().await {
            self.handle(message);
        }
    }

    fn handle(&mut self, message: CounterMessage) {
        match message {
            CounterMessage::Increment { n, reply } => {
                let _ = reply.send(n + 1);
            }
        }
    }
}

async fn tokio_round_trips(counter: CounterHandle) -> u64 {
    let mut n = 0;
    for _ in 0..ROUND_TRIPS {
        n = counter.increment(black_box(n)).await;
    }
    assert_eq!(n, ROUND_TRIPS);
    n
}

// ---------------------------------------------------------------------------------------------
// The actix actor.

struct ActixCounter;

impl Actor for ActixCounter {
    type Context = Context<Self>;
}

struct Increment(u64);

impl Message for Increment {
    type Result = u64;
}

impl Handler<Increment> for ActixCounter {
    type Result = u64;

    fn handle(&mut self, message: Increment, _: &mut Context<Self>) -> u64 {
        message.0 + 1
    }
}

async fn actix_round_trips(counter: Addr<ActixCounter>) -> u64 {
    let mut n = 0;
    for _ in 0..ROUND_TRIPS {
        n = counter.send(Increment(black_box(n))).await.unwrap_or_else(|_| panic!("actix gone"));
    }
    assert_eq!(n, ROUND_TRIPS);
    n
}

/// An actix `System` running on its own thread, with one counter actor.
struct ActixThread {
    counter: Addr<ActixCounter>,
    system: actix::System,
    thread: JoinHandle<()>,
}

impl ActixThread {
    fn start() -> Self {
        let (started, receive) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async {
                let _ = started.send((ActixCounter.start(), actix::System::current()));
            });
            system.run().unwrap_or_else(|error| panic!("actix system: {error}"));
        });
        let (counter, system) = receive.recv().unwrap_or_else(|_| panic!("actix did not start"));
        ActixThread { counter, system, thread }
    }

    fn stop(self) {
        self.system.stop();
        let _ = self.thread.join();
    }
}

/// A tokio counter actor alone on a current-thread runtime on its own thread.
struct TokioThread {
    counter: CounterHandle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl TokioThread {
    fn start() -> Self {
        let (started, receive) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            current_thread().block_on(async {
                let _ = started.send(CounterHandle::spawn());
                let _ = stopped.await;
            });
        });
        let counter = receive.recv().unwrap_or_else(|_| panic!("actor thread did not start"));
        TokioThread { counter, stop, thread }
    }

    fn stop(self) {
        drop(self.counter);
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Times `iterations` calls of `run` and notes them under `name`.
fn timed(name: &'static str, iterations: u64, mut run: impl FnMut() -> u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(run());
    }
    note(name, started.elapsed(), iterations)
}

/// Runs `caller` as a task on `runtime` (as the manager's callers are) and waits for it.
fn spawned(runtime: &Runtime, caller: impl Future<Output = u64> + Send + 'static) -> u64 {
    let caller = runtime.spawn(caller);
    runtime.block_on(caller).unwrap_or_else(|error| panic!("caller: {error}"))
}

fn tokio_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tokio");
    group.throughput(Throughput::Elements(ROUND_TRIPS));

    let runtime = current_thread();
    let counter = runtime.block_on(async { CounterHandle::spawn() });
    group.bench_function("current_thread", |b| {
        b.iter_custom(|iterations| {
            timed("tokio/current_thread", iterations, || {
                spawned(&runtime, tokio_round_trips(counter.clone()))
            })
        });
    });
    group.bench_function("current_thread_block_on", |b| {
        b.iter_custom(|iterations| {
            timed("tokio/current_thread_block_on", iterations, || {
                runtime.block_on(tokio_round_trips(counter.clone()))
            })
        });
    });

    let runtime = multi_thread();
    let counter = runtime.block_on(async { CounterHandle::spawn() });
    group.bench_function("multi_thread_2", |b| {
        b.iter_custom(|iterations| {
            timed("tokio/multi_thread_2", iterations, || {
                spawned(&runtime, tokio_round_trips(counter.clone()))
            })
        });
    });

    let actor = TokioThread::start();
    for (name, caller) in [
        ("tokio/own_thread_from_current_thread", current_thread()),
        ("tokio/own_thread_from_multi_thread_2", multi_thread()),
    ] {
        group.bench_function(name.trim_start_matches("tokio/"), |b| {
            b.iter_custom(|iterations| {
                timed(name, iterations, || {
                    spawned(&caller, tokio_round_trips(actor.counter.clone()))
                })
            });
        });
    }
    actor.stop();
    group.finish();
}

fn actix_benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("actix");
    group.throughput(Throughput::Elements(ROUND_TRIPS));
    let actix = ActixThread::start();
    for (name, caller) in [
        ("actix/from_current_thread", current_thread()),
        ("actix/from_multi_thread_2", multi_thread()),
    ] {
        group.bench_function(name.trim_start_matches("actix/"), |b| {
            b.iter_custom(|iterations| {
                timed(name, iterations, || {
                    spawned(&caller, actix_round_trips(actix.counter.clone()))
                })
            });
        });
    }
    actix.stop();

    let system = actix::System::new();
    let counter = system.block_on(async { ActixCounter.start() });
    group.bench_function("in_system", |b| {
        b.iter_custom(|iterations| {
            timed("actix/in_system", iterations, || {
                // `actix::spawn` needs the system's context, which `block_on` enters.
                let caller = async { actix::spawn(actix_round_trips(counter.clone())).await };
                system.block_on(caller).unwrap_or_else(|error| panic!("caller: {error}"))
            })
        });
    });
    group.finish();
}

#[allow(clippy::print_stdout, reason = "the ratio table is the bench's report")]
fn print_ratios() {
    let measured = MEASURED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let per_trip = |name: &str| {
        measured.get(name).filter(|(_, iterations)| *iterations > 0).map(|(total, iterations)| {
            total.as_secs_f64() * 1e9 / (*iterations as f64 * ROUND_TRIPS as f64)
        })
    };
    println!("\nper round trip (mean over every measured iteration, warm-up included)");
    for name in measured.keys() {
        if let Some(ns) = per_trip(name) {
            println!("  {name:<38} {ns:>9.0} ns");
        }
    }
    let pairs = [
        // As the issue compares: actix on its own thread against a tokio actor in-runtime.
        ("actix/from_current_thread", "tokio/current_thread"),
        ("actix/from_multi_thread_2", "tokio/multi_thread_2"),
        // Like for like: both actors on their own thread, called across threads.
        ("actix/from_current_thread", "tokio/own_thread_from_current_thread"),
        ("actix/from_multi_thread_2", "tokio/own_thread_from_multi_thread_2"),
        // Both in one single-threaded runtime.
        ("actix/in_system", "tokio/current_thread"),
    ];
    println!("ratios actix / tokio");
    for (actix, tokio) in pairs {
        if let (Some(a), Some(t)) = (per_trip(actix), per_trip(tokio)) {
            println!("  {actix:<26} / {tokio:<38} {:>6.1}x", a / t);
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    tokio_benches(&mut criterion);
    actix_benches(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
