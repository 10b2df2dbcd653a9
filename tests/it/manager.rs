//! The cache manager: hits, modes, single flight (including cancellation and panics), feature
//! flags, shutdown, and two runtimes side by side.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cuenv::config::{CacheFeatureFlags, CacheMode, GlobalCacheConfig};
use cuenv::task::TaskConfig;
use cuenv::{EnhancedCacheManager, Error, Source, TaskOutput, Tier};
use tokio::sync::Notify;

use crate::support::files_under;

pub(crate) fn config(cache_dir: &Path) -> GlobalCacheConfig {
    let mut config = GlobalCacheConfig::defaults_from(&Default::default());
    config.cache_dir = cache_dir.to_owned();
    config
}

fn task(command: &str) -> TaskConfig {
    TaskConfig {
        command: Some(command.to_owned()),
        outputs: vec!["out.txt".into()],
        ..TaskConfig::default()
    }
}

async fn manager(cache_dir: &Path) -> EnhancedCacheManager {
    EnhancedCacheManager::new_with_flags(config(cache_dir), CacheFeatureFlags::default())
        .await
        .unwrap()
}

/// An execute_fn that counts its runs and writes `out.txt` into `root`.
fn counting(
    runs: &Arc<AtomicUsize>,
    root: &Path,
    exit_code: i32,
) -> impl FnOnce() -> std::future::Ready<Result<TaskOutput, std::io::Error>> + Send + 'static {
    let runs = Arc::clone(runs);
    let out = root.join("out.txt");
    move || {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(
            fs::write(&out, format!("run {run}"))
                .map(|()| TaskOutput::new(exit_code, "hello\n", "")),
        )
    }
}

struct Project {
    cache: tempfile::TempDir,
    root: tempfile::TempDir,
    runs: Arc<AtomicUsize>,
}

fn project() -> Project {
    Project {
        cache: tempfile::tempdir().unwrap(),
        root: tempfile::tempdir().unwrap(),
        runs: Arc::default(),
    }
}

/// One call of `task` named `name` through `manager` with a counting execute_fn.
async fn run_counted(
    manager: &EnhancedCacheManager,
    name: &str,
    task: &TaskConfig,
    p: &Project,
    exit_code: i32,
) -> cuenv::Execution {
    manager
        .execute_task_with_cache(
            name,
            task,
            p.root.path(),
            &env(),
            counting(&p.runs, p.root.path(), exit_code),
        )
        .await
        .unwrap()
}

fn env() -> HashMap<String, String> {
    HashMap::new()
}

#[tokio::test]
async fn a_hit_does_not_execute_again_and_restores_outputs() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let task = task("echo hello > out.txt");
    let first = run_counted(&manager, "build", &task, &p, 0).await;
    assert_eq!((first.source, first.stored, first.exit_code), (Source::Executed, true, 0));
    fs::remove_file(p.root.path().join("out.txt")).unwrap();
    let second = run_counted(&manager, "build", &task, &p, 0).await;
    assert_eq!(second.source, Source::Hit(Tier::Memory));
    assert_eq!(p.runs.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read_to_string(p.root.path().join("out.txt")).unwrap(), "run 1");
    let (stdout, _) = manager.logs(second.entry.as_ref().unwrap()).await.unwrap();
    assert_eq!(stdout, b"hello\n");
    manager.shutdown().await.unwrap();

    // A new manager (a new process, as far as the cache can tell) hits on disk.
    let again = self::manager(p.cache.path()).await;
    let third = run_counted(&again, "build", &task, &p, 0).await;
    assert_eq!(third.source, Source::Hit(Tier::Disk));
    assert_eq!(p.runs.load(Ordering::SeqCst), 1);
    let stats = again.statistics().await.unwrap();
    assert_eq!((stats.lookups, stats.hits_disk, stats.misses, stats.executions), (1, 1, 0, 0));
    again.shutdown().await.unwrap();
}

/// An execution that times its own work (it waited for something first) has that time
/// recorded, reported on a hit and counted as saved; one that does not is timed whole.
#[tokio::test]
async fn an_executions_own_timing_is_what_a_hit_reports_and_saves() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let task = task("build");
    let out = p.root.path().join("out.txt");
    let timed = move || async move {
        fs::write(&out, "x")?;
        let output = TaskOutput::new(0, "", "");
        Ok::<_, std::io::Error>(TaskOutput { ran_for: Some(Duration::from_secs(7)), ..output })
    };
    let first =
        manager.execute_task_with_cache("t", &task, p.root.path(), &env(), timed).await.unwrap();
    assert_eq!((first.source, first.duration_ms), (Source::Executed, 7000));
    let hit = run_counted(&manager, "t", &task, &p, 0).await;
    assert_eq!((hit.source, hit.duration_ms), (Source::Hit(Tier::Memory), 7000));
    assert_eq!(manager.statistics().await.unwrap().time_saved_ms, 7000);

    let untimed = TaskConfig { cache: false, ..task };
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::io::Error>(TaskOutput::new(0, "", ""))
    };
    let whole =
        manager.execute_task_with_cache("u", &untimed, p.root.path(), &env(), slow).await.unwrap();
    assert!(whole.duration_ms >= 50, "{whole:?}");
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_task_with_cache_false_always_executes() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let task = TaskConfig { cache: false, ..task("x") };
    assert!(!manager.is_caching_enabled(&task));
    assert_eq!(manager.get_task_cache_mode(&task), CacheMode::Off);
    for _ in 0..2 {
        let execution = run_counted(&manager, "t", &task, &p, 0).await;
        assert_eq!(execution.source, Source::Uncached);
    }
    assert_eq!(p.runs.load(Ordering::SeqCst), 2);
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn modes_read_write_and_off_behave_as_documented() {
    let p = project();
    let task = task("x");
    let run = |mode: CacheMode| {
        let mut config = config(p.cache.path());
        config.default_mode = mode;
        let (runs, root, task) = (Arc::clone(&p.runs), p.root.path().to_owned(), task.clone());
        async move {
            let manager =
                EnhancedCacheManager::new_with_flags(config, CacheFeatureFlags::default())
                    .await
                    .unwrap();
            let execution = manager
                .execute_task_with_cache("t", &task, &root, &env(), counting(&runs, &root, 0))
                .await
                .unwrap();
            manager.shutdown().await.unwrap();
            (execution.source, execution.stored)
        }
    };
    // read: executes on a miss and stores nothing.
    assert_eq!(run(CacheMode::Read).await, (Source::Executed, false));
    assert_eq!(run(CacheMode::Read).await, (Source::Executed, false));
    // off: executes, touches nothing.
    assert_eq!(run(CacheMode::Off).await, (Source::Uncached, false));
    // write: always executes, stores.
    assert_eq!(run(CacheMode::Write).await, (Source::Executed, true));
    assert_eq!(run(CacheMode::Write).await, (Source::Executed, true));
    // read: now hits what write stored.
    assert_eq!(run(CacheMode::Read).await, (Source::Hit(Tier::Disk), false));
    assert_eq!(run(CacheMode::ReadWrite).await, (Source::Hit(Tier::Disk), false));
    assert_eq!(p.runs.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn failures_are_not_cached_unless_configured() {
    let p = project();
    let task = task("exit 3");
    let manager = manager(p.cache.path()).await;
    for _ in 0..2 {
        let execution = run_counted(&manager, "t", &task, &p, 3).await;
        assert_eq!(
            (execution.source, execution.exit_code, execution.stored),
            (Source::Executed, 3, false)
        );
    }
    manager.shutdown().await.unwrap();
    let mut config = config(p.cache.path());
    config.cache_failures = true;
    let manager =
        EnhancedCacheManager::new_with_flags(config, CacheFeatureFlags::default()).await.unwrap();
    for expected in [Source::Executed, Source::Hit(Tier::Memory)] {
        let execution = run_counted(&manager, "t", &task, &p, 3).await;
        assert_eq!((execution.source, execution.exit_code), (expected, 3));
    }
    assert_eq!(p.runs.load(Ordering::SeqCst), 3);
    manager.shutdown().await.unwrap();
}

/// An execute_fn that waits for `release` before it finishes.
fn gated(
    runs: &Arc<AtomicUsize>,
    release: &Arc<Notify>,
    root: &Path,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<TaskOutput, std::io::Error>> + Send>>
+ Send
+ 'static {
    let (runs, release, out) = (Arc::clone(runs), Arc::clone(release), root.join("out.txt"));
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            fs::write(&out, "shared")?;
            Ok(TaskOutput::new(0, "once\n", ""))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_identical_calls_execute_once() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let release = Arc::new(Notify::new());
    let task = task("x");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (manager, task, root) = (manager.clone(), task.clone(), p.root.path().to_owned());
        let execute = gated(&p.runs, &release, &root);
        calls.spawn(async move {
            manager.execute_task_with_cache("t", &task, &root, &env(), execute).await
        });
    }
    // Let every call reach its lookup and join the flight, then release the execution.
    while p.runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    let mut sources = HashMap::new();
    while let Some(outcome) = calls.join_next().await {
        let execution = outcome.unwrap().unwrap();
        assert_eq!(execution.exit_code, 0);
        *sources.entry(format!("{:?}", execution.source)).or_insert(0) += 1;
    }
    assert_eq!(p.runs.load(Ordering::SeqCst), 1, "{sources:?}");
    assert_eq!(sources.get("Executed"), Some(&1), "{sources:?}");
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_leaders_future_cancels_nothing() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let release = Arc::new(Notify::new());
    let task = task("x");
    let spawn_call = |execute| {
        let (manager, task, root) = (manager.clone(), task.clone(), p.root.path().to_owned());
        tokio::spawn(async move {
            manager.execute_task_with_cache("t", &task, &root, &env(), execute).await
        })
    };
    let leader = spawn_call(gated(&p.runs, &release, p.root.path()));
    while p.runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let follower = spawn_call(gated(&p.runs, &release, p.root.path()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    release.notify_one();
    let execution = follower.await.unwrap().unwrap();
    assert_eq!((execution.source, execution.exit_code), (Source::Shared, 0));
    assert_eq!(p.runs.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read_to_string(p.root.path().join("out.txt")).unwrap(), "shared");
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_failing_execution_errors_every_waiter_and_can_be_retried() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let task = task("x");
    let release = Arc::new(Notify::new());
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..20 {
        let (manager, task, root, release) =
            (manager.clone(), task.clone(), p.root.path().to_owned(), Arc::clone(&release));
        calls.spawn(async move {
            manager
                .execute_task_with_cache("t", &task, &root, &env(), move || async move {
                    release.notified().await;
                    if index >= 0 {
                        panic!("the task runner blew up");
                    }
                    Ok::<_, std::io::Error>(TaskOutput::new(0, "", ""))
                })
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    while let Some(outcome) = calls.join_next().await {
        assert!(matches!(outcome.unwrap(), Err(Error::Abandoned { .. })));
    }
    // An execution error reaches the caller as such.
    let failed = manager
        .execute_task_with_cache("t", &task, p.root.path(), &env(), || async {
            Err::<TaskOutput, _>(std::io::Error::other("cannot spawn sh"))
        })
        .await
        .unwrap_err();
    assert_eq!(failed.to_string(), "task \"t\": cannot spawn sh");
    // Nothing stale is left: the next call executes and succeeds.
    let retried = run_counted(&manager, "t", &task, &p, 0).await;
    assert_eq!(retried.source, Source::Executed);
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn feature_flags_switch_to_legacy_and_to_process_private_storage() {
    let p = project();
    let task = task("x");
    let legacy =
        CacheFeatureFlags { enhanced_cache_enabled: false, ..CacheFeatureFlags::default() };
    let manager =
        EnhancedCacheManager::new_with_flags(config(p.cache.path()), legacy).await.unwrap();
    assert!(!manager.is_caching_enabled(&task));
    for _ in 0..2 {
        let execution = run_counted(&manager, "t", &task, &p, 0).await;
        assert_eq!(execution.source, Source::Uncached);
    }
    manager.shutdown().await.unwrap();

    let memory_only =
        CacheFeatureFlags { persistent_storage_enabled: false, ..CacheFeatureFlags::default() };
    let cache_dir = p.cache.path().join("configured");
    for expected in [Source::Executed, Source::Executed] {
        let manager =
            EnhancedCacheManager::new_with_flags(config(&cache_dir), memory_only).await.unwrap();
        let first = run_counted(&manager, "t", &task, &p, 0).await;
        assert_eq!(first.source, expected);
        let second = run_counted(&manager, "t", &task, &p, 0).await;
        assert_eq!(second.source, Source::Hit(Tier::Memory));
        manager.shutdown().await.unwrap();
    }
    assert!(!cache_dir.exists(), "memory-only storage must not touch the configured cache dir");
    assert_eq!(p.runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn two_runtimes_on_different_cache_dirs_live_side_by_side() {
    let (a, b) = (project(), project());
    let (first, second) = (manager(a.cache.path()).await, manager(b.cache.path()).await);
    let task = task("x");
    for (manager, p) in [(&first, &a), (&second, &b), (&first, &a), (&second, &b)] {
        run_counted(manager, "t", &task, p, 0).await;
    }
    assert_eq!((a.runs.load(Ordering::SeqCst), b.runs.load(Ordering::SeqCst)), (1, 1));
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_waits_for_admitted_work_and_refuses_new_work() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    let release = Arc::new(Notify::new());
    let task = task("x");
    let call = {
        let (manager, task, root) = (manager.clone(), task.clone(), p.root.path().to_owned());
        let execute = gated(&p.runs, &release, &root);
        tokio::spawn(async move {
            manager.execute_task_with_cache("t", &task, &root, &env(), execute).await
        })
    };
    while p.runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let shutdown = tokio::spawn({
        let manager = manager.clone();
        async move { manager.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!shutdown.is_finished(), "shutdown must wait for the admitted execution");
    let refused = manager
        .execute_task_with_cache(
            "t",
            &task,
            p.root.path(),
            &env(),
            counting(&p.runs, p.root.path(), 0),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::ShuttingDown));
    release.notify_one();
    assert!(call.await.unwrap().unwrap().stored);
    shutdown.await.unwrap().unwrap();
    // Everything accepted reached the disk: statistics and the result.
    let stats = cuenv_actors::stats::StatsStore::new(p.cache.path().join("stats/v1")).days();
    assert_eq!(stats.iter().map(|(_, counters)| counters.writes).sum::<u64>(), 1);
    let again = self::manager(p.cache.path()).await;
    let hit = run_counted(&again, "t", &task, &p, 0).await;
    assert_eq!(hit.source, Source::Hit(Tier::Disk));
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_manager_keeps_every_acknowledged_write() {
    let p = project();
    let task = task("x");
    {
        let manager = manager(p.cache.path()).await;
        let execution = run_counted(&manager, "t", &task, &p, 0).await;
        assert!(execution.stored);
    }
    let again = manager(p.cache.path()).await;
    let hit = run_counted(&again, "t", &task, &p, 0).await;
    assert_eq!(hit.source, Source::Hit(Tier::Disk));
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicked_actor_is_an_error_not_a_hang() {
    let p = project();
    let manager = manager(p.cache.path()).await;
    manager.runtime().memory().poison();
    let (task, env) = (task("x"), env());
    let call = manager.execute_task_with_cache(
        "t",
        &task,
        p.root.path(),
        &env,
        counting(&p.runs, p.root.path(), 0),
    );
    let error =
        tokio::time::timeout(Duration::from_secs(10), call).await.expect("no hang").unwrap_err();
    assert_eq!(error.to_string(), "the memory tier actor is gone (panicked or shut down)");
    assert_eq!(manager.runtime().health().gone, ["memory tier"]);
    assert!(manager.shutdown().await.is_err(), "shutdown reports the dead actor");
}

#[tokio::test]
async fn a_store_over_max_size_evicts_in_the_background() {
    let p = project();
    let big = |name: &str| TaskConfig { outputs: vec![format!("{name}.bin")], ..task(name) };
    let write_big = |root: &Path, name: &str| {
        let (root, name) = (root.to_owned(), name.to_owned());
        move || async move {
            fs::write(root.join(format!("{name}.bin")), vec![name.as_bytes()[0]; 40_000])?;
            Ok::<_, std::io::Error>(TaskOutput::new(0, "", ""))
        }
    };
    let first = manager(p.cache.path()).await;
    for name in ["a", "b", "c", "d"] {
        first
            .execute_task_with_cache(
                name,
                &big(name),
                p.root.path(),
                &env(),
                write_big(p.root.path(), name),
            )
            .await
            .unwrap();
    }
    first.shutdown().await.unwrap();
    // Those four are old now; the store is about 160 KB.
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for file in files_under(&p.cache.path().join("v1/ac"))
        .into_iter()
        .chain(files_under(&p.cache.path().join("v1/cas")))
    {
        fs::File::open(file).unwrap().set_modified(long_ago).unwrap();
    }
    let mut config = config(p.cache.path());
    config.max_size = 100_000;
    let second =
        EnhancedCacheManager::new_with_flags(config, CacheFeatureFlags::default()).await.unwrap();
    let stored = second
        .execute_task_with_cache(
            "e",
            &big("e"),
            p.root.path(),
            &env(),
            write_big(p.root.path(), "e"),
        )
        .await
        .unwrap();
    assert!(stored.stored);
    second.shutdown().await.unwrap();
    let records = files_under(&p.cache.path().join("v1/ac")).len();
    let bytes: u64 = files_under(&p.cache.path().join("v1"))
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    assert!(records < 5, "nothing was evicted: {records} records");
    assert!(bytes <= 100_000, "still {bytes} bytes");
    // The fresh result survived.
    let again = manager(p.cache.path()).await;
    let hit = again
        .execute_task_with_cache(
            "e",
            &big("e"),
            p.root.path(),
            &env(),
            write_big(p.root.path(), "e"),
        )
        .await
        .unwrap();
    assert_eq!(hit.source, Source::Hit(Tier::Disk));
    again.shutdown().await.unwrap();
}
