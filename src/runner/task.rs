//! One task of a run: through the cache manager, with the process runner as its execution.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cuenv_actors::Digest;
use cuenv_actors::disk::LogSource;
use cuenv_actors::key_gen::ActionKey;
use cuenv_actors::result::TaskOutput;

use super::output::{Printer, Stream};
use super::process::{self, Ended, Spawn};
use super::{Context, TaskStatus};
use crate::error::Error;
use crate::key::TaskInvocation;
use crate::manager::{ExecuteOptions, Execution, Source, Tier};

/// Runs task `name`; returns its status, digest and the time a hit saved.
pub(super) async fn execute(
    context: &Arc<Context>,
    name: &str,
    dependencies: &BTreeMap<String, Digest>,
    needs_digest: bool,
) -> Result<(TaskStatus, Option<Digest>, u64), Error> {
    let invocation = invocation(context, name, dependencies);
    let (task, args) = (invocation.task, invocation.args);
    let spawn = Spawn {
        task: name.to_owned(),
        shell: Arc::clone(&context.shell),
        shell_text: task.shell_text().to_owned(),
        args: args.to_vec(),
        cwd: task.working_dir_path(&context.file.root),
        timeout: task.cache_config.timeout.map(Duration::from_secs),
    };
    let (printer, cancel) = (Arc::clone(&context.printer), context.cancel.clone());
    let slots = Arc::clone(&context.slots);
    let execute_fn = move || async move {
        // The slot is held while the process runs, and only then.
        let _slot = slots.acquire_owned().await.map_err(io::Error::other)?;
        let _shown = printer.executing(&spawn.task);
        // Timed from here, so a task that waited for its slot does not record the wait as
        // time a hit saves.
        let started = Instant::now();
        match process::run(&spawn, &printer, cancel).await? {
            (Ended::Exited(exit_code), stdout, stderr) => {
                Ok(TaskOutput { exit_code, stdout, stderr, ran_for: Some(started.elapsed()) })
            }
            (Ended::TimedOut, ..) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {} s; its process group was killed",
                    spawn.timeout.unwrap_or_default().as_secs()
                ),
            )),
            (Ended::Cancelled, ..) => {
                Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"))
            }
        }
    };
    let options = ExecuteOptions { store_in_background: true };
    // Ctrl-C ends the wait at once, wherever it is: a lookup (a slow remote answers within its
    // deadline only) or the execution (whose process group the runner kills; its leader task
    // finishes on its own and shutdown joins it).
    let mut cancel = context.cancel.clone();
    let execution = tokio::select! {
        execution = context.manager.execute_with(invocation, options, execute_fn) => execution?,
        Ok(_) = cancel.wait_for(|cancelled| *cancelled) => {
            return Err(Error::Execute {
                task: name.to_owned(),
                source: Arc::new(io::Error::new(io::ErrorKind::Interrupted, "interrupted")),
            });
        }
    };
    let digest = match execution.digest {
        Some(digest) => Some(digest),
        None if needs_digest => Some(context.manager.compute_key(invocation).await?.digest),
        None => None,
    };
    let status = report(context, name, &execution).await;
    let saved = if matches!(execution.source, Source::Hit(_)) { execution.duration_ms } else { 0 };
    Ok((status, digest, saved))
}

/// Task `name` of this run with its dependencies' digests. Arguments after `--` go to the
/// tasks named on the command line only.
fn invocation<'a>(
    context: &'a Context,
    name: &'a str,
    dependencies: &'a BTreeMap<String, Digest>,
) -> TaskInvocation<'a> {
    TaskInvocation {
        task_name: name,
        task: &context.file.tasks[name],
        project_root: &context.file.root,
        env: &context.env,
        args: context.options.args_for(name),
        dependencies,
    }
}

/// Task `name`'s key as its files are now, given its dependencies' digests; `None` if it
/// cannot be computed (the run reports why when the task runs).
pub(super) async fn early_key(
    context: &Context,
    name: &str,
    dependencies: &BTreeMap<String, Digest>,
) -> Option<ActionKey> {
    context.manager.compute_key(invocation(context, name, dependencies)).await.ok()
}

async fn report(context: &Context, name: &str, execution: &Execution) -> TaskStatus {
    let printer = &context.printer;
    if let (Source::Hit(tier), Some(entry)) = (execution.source, &execution.entry) {
        let short = execution.digest.map(|d| d.short()).unwrap_or_default();
        printer.note(name, &format!("cache hit ({}), replaying logs {short}", tier_name(tier)));
        match context.manager.log_sources(entry).await {
            Some((stdout, stderr)) => replay(printer, name, stdout, stderr).await,
            None => printer.note(name, "the cached logs are no longer available"),
        }
    }
    if execution.source == Source::Shared {
        printer.note(name, "ran once for identical concurrent requests");
    }
    if execution.exit_code != 0 {
        return TaskStatus::Failed(exit_reason(execution.exit_code));
    }
    match execution.source {
        Source::Hit(tier) => TaskStatus::Cached(tier),
        Source::Shared => TaskStatus::Shared,
        Source::Executed | Source::Uncached => TaskStatus::Executed,
    }
}

/// Replays a hit's logs: from memory right here, from their blobs on a blocking thread (a large
/// log is copied a piece at a time, never read whole).
async fn replay(printer: &Arc<Printer>, name: &str, stdout: LogSource, stderr: LogSource) {
    let logs = [(Stream::Stdout, stdout), (Stream::Stderr, stderr)];
    let replayed = if logs.iter().all(|(_, log)| matches!(log, LogSource::Bytes(_))) {
        Ok(replay_logs(printer, name, logs))
    } else {
        let (printer, name) = (Arc::clone(printer), name.to_owned());
        tokio::task::spawn_blocking(move || replay_logs(&printer, &name, logs))
            .await
            .map_err(io::Error::other)
    };
    if let Ok(Err(error)) | Err(error) = replayed {
        tracing::warn!(%error, "could not replay a cached log");
    }
}

fn replay_logs(printer: &Printer, name: &str, logs: [(Stream, LogSource); 2]) -> io::Result<()> {
    for (stream, log) in logs {
        match log {
            LogSource::Bytes(bytes) => printer.output(name, stream, &bytes),
            LogSource::File(mut file) => printer.replay_file(name, stream, &mut file)?,
        }
    }
    Ok(())
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Memory => "memory",
        Tier::Disk => "local",
        Tier::Remote => "remote",
    }
}

/// `exit code N`, naming the signal when N is how a shell reports a death by one (128 + the
/// signal's number): a crash or a kill (the OOM killer's SIGKILL is 137) reads as such.
fn exit_reason(code: i32) -> String {
    const SIGNALS: [(i32, &str); 12] = [
        (1, "SIGHUP"),
        (2, "SIGINT"),
        (3, "SIGQUIT"),
        (4, "SIGILL"),
        (6, "SIGABRT"),
        (7, "SIGBUS"),
        (8, "SIGFPE"),
        (9, "SIGKILL"),
        (11, "SIGSEGV"),
        (13, "SIGPIPE"),
        (14, "SIGALRM"),
        (15, "SIGTERM"),
    ];
    match SIGNALS.iter().find(|(number, _)| code == 128 + number) {
        Some((_, name)) => format!("exit code {code} (terminated by {name})"),
        None => format!("exit code {code}"),
    }
}
