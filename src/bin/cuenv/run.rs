//! `cuenv run`.

use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::Arc;

use cuenv::EnhancedCacheManager;
use cuenv::config::{CacheMode, GlobalCacheConfig};
use cuenv::runner::{self, RunOptions};
use cuenv::task::TaskFile;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::Setup;
use crate::args::RunArgs;

pub(crate) async fn run(setup: &Setup, args: &RunArgs) -> anyhow::Result<u8> {
    let file = Arc::new(setup.task_file()?);
    let mut config = setup.config.clone();
    if args.no_cache {
        config.default_mode = CacheMode::Off;
    } else if let Some(mode) = args.cache_mode {
        config.default_mode = mode;
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    let options = RunOptions {
        tasks: args.tasks.clone(),
        all: args.all,
        jobs: if args.dry_run { jobs } else { fit_open_files(jobs, file.tasks.len()) },
        keep_going: args.keep_going,
        args: args.args.clone(),
        no_color: setup.env.contains_key("NO_COLOR"),
    };
    refuse_env_keys_cannot_spell(&config, &file, &args.tasks, args.all)?;
    let manager = EnhancedCacheManager::new_with_flags(config, setup.flags).await?;
    let env = Arc::new(setup.env.clone());
    if args.dry_run {
        let entries = runner::dry_run(&manager, &file, &env, &options).await;
        manager.shutdown().await?;
        print_dry_run(&entries?, args.json)?;
        return Ok(0);
    }
    let (cancel_tx, cancel) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let Ok(mut stops) = Stops::new() else { return };
        let quit_at_once = stops.next().await;
        if !quit_at_once {
            let _ = cancel_tx.send(true);
            // A second one: the user will not wait for tasks to stop or for the cache to
            // flush. Leave at once, taking the tasks along; every cache write is a temp file
            // renamed into place, so what is cut short is a temp file, never a damaged entry.
            stops.next().await;
        }
        runner::kill_every_task();
        eprintln!(
            "{}: stopped without waiting",
            if quit_at_once { "quit" } else { "interrupted again" }
        );
        std::process::exit(130);
    });
    let report = runner::run(&manager, file, env, options, cancel).await;
    // Flush what completed (results, statistics, stat caches) whatever the outcome; a second
    // Ctrl-C still cuts this short.
    let shutdown = manager.shutdown().await;
    signals.abort();
    let _ = signals.await;
    let report = report?;
    shutdown?;
    Ok(report.exit_code())
}

/// The signals that stop a run: Ctrl-C and SIGTERM; SIGHUP too, since a closed terminal or a
/// dropped ssh session must not leave the tasks running as orphans, nor the results that
/// completed unflushed; and SIGQUIT (Ctrl-\\), which means now.
struct Stops {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Stops {
    fn new() -> std::io::Result<Self> {
        Ok(Stops {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Waits for the next one; `true` if it was SIGQUIT.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interrupt.recv() => false,
            _ = self.terminate.recv() => false,
            _ = self.hangup.recv() => false,
            _ = self.quit.recv() => true,
        }
    }
}

/// Open files that one running task may hold: its stdout and stderr pipes, their write ends
/// and the exec-status pipe while it starts, a log spilled to a file per stream, and the files
/// of a store in progress.
const FILES_PER_TASK: u64 = 8;
/// Open files kept for the rest: the store, the stat cache, the statistics, a remote connection.
const FILES_RESERVED: u64 = 64;

/// `jobs`, or fewer if this process may not open enough files for that many tasks at once
/// (`tasks` in the file bound how many ever run at once). The soft limit on open files is
/// raised, up to the hard limit, when `jobs` needs it; only when that is not enough do fewer
/// tasks run at once, with a note. Without this, a high `--jobs` under a low limit (macOS
/// starts at 256) fails task after task with "Too many open files".
fn fit_open_files(jobs: NonZeroUsize, tasks: usize) -> NonZeroUsize {
    let at_once = jobs.get().min(tasks.max(1)) as u64;
    let needed = at_once.saturating_mul(FILES_PER_TASK).saturating_add(FILES_RESERVED);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= needed
    {
        return jobs;
    }
    let raised = libc::rlimit { rlim_cur: needed.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct; a soft limit up to the hard one is always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit.rlim_cur = raised.rlim_cur;
    }
    if limit.rlim_cur >= needed {
        return jobs;
    }
    let fitting = limit.rlim_cur.saturating_sub(FILES_RESERVED) / FILES_PER_TASK;
    let fitting = NonZeroUsize::new(usize::try_from(fitting).unwrap_or(usize::MAX))
        .unwrap_or(NonZeroUsize::MIN);
    eprintln!(
        "note: {at_once} tasks at once would need about {needed} open files, and this process may open {} (`ulimit -n`): running at most {fitting} at once",
        limit.rlim_cur
    );
    fitting
}

/// An error when a variable whose name or value is not UTF-8 would be part of the key of a task
/// of the closure of `tasks` (of every task with `all`): left out of the key, it could change
/// the task unseen.
pub(crate) fn refuse_env_keys_cannot_spell(
    config: &GlobalCacheConfig,
    file: &TaskFile,
    tasks: &[String],
    all: bool,
) -> anyhow::Result<()> {
    let unspellable = cuenv::config::unspellable_env();
    if unspellable.is_empty() {
        return Ok(());
    }
    let requested: Vec<String> =
        if all { file.tasks.keys().cloned().collect() } else { tasks.to_vec() };
    // An unknown task name is the plan's to report.
    let in_run = file.closure(&requested).unwrap_or_default();
    let tasks = in_run.iter().filter_map(|name| Some((name, file.tasks.get(name)?)));
    if let Some((variable, task)) = cuenv::env_left_out_of_a_key(config, tasks, &unspellable) {
        anyhow::bail!(
            "environment variable {variable} is not valid UTF-8, yet task \"{task}\"'s key would include it (env_include); unset it, or exclude it (env_exclude, or the task's envExclude)"
        );
    }
    Ok(())
}

fn print_dry_run(entries: &[runner::DryRunEntry], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, entries)?;
        writeln!(out)?;
        return Ok(());
    }
    let width = entries.iter().map(|entry| entry.task.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:<width$}  {:<16}  CACHE", "TASK", "KEY")?;
    for entry in entries {
        writeln!(
            out,
            "{:<width$}  {:<16}  {}",
            entry.task,
            &entry.digest.to_hex()[..16],
            entry.cache
        )?;
    }
    Ok(())
}
