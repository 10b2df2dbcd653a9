//! `cuenv run`.

use std::io::Write;
use std::sync::Arc;

use cuenv::EnhancedCacheManager;
use cuenv::config::{CacheMode, GlobalCacheConfig};
use cuenv::runner::{self, RunOptions};
use cuenv::task::TaskFile;
use tokio::signal::unix::{SignalKind, signal};
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
    let options = RunOptions {
        tasks: args.tasks.clone(),
        all: args.all,
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
        }),
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
        let (Ok(mut interrupt), Ok(mut terminate)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let _ = cancel_tx.send(true);
        // A second one: the user will not wait for tasks to stop or for the cache to flush.
        // Leave at once, taking the tasks along; every cache write is a temp file renamed into
        // place, so what is cut short is a temp file, never a damaged entry.
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        runner::kill_every_task();
        eprintln!("interrupted again: stopped without waiting");
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
