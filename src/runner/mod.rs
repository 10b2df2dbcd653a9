//! `cuenv run`: a task graph run in dependency order, at most `jobs` task processes at once,
//! each task through the cache manager (hits replay their logs and restore their outputs).
//!
//! A task's key includes the digests of its dependencies, so a change upstream re-runs
//! everything downstream, and only that. After a failure no new task starts (running ones
//! finish) unless `keep_going`, in which case only the failed task's dependents are skipped.

mod dry_run;
mod output;
mod overlap;
mod plan;
mod prefetch;
mod process;

pub use process::kill_every_task;
mod task;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cuenv_actors::Digest;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::CacheMode;
use crate::error::Error;
use crate::manager::{EnhancedCacheManager, Tier};
use crate::task::TaskFile;
pub use dry_run::{DryRunEntry, dry_run};

use output::Printer;
use plan::Plan;

/// What `cuenv run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The tasks named on the command line.
    pub tasks: Vec<String>,
    /// Run every task of the file.
    pub all: bool,
    /// At most this many tasks at once.
    pub jobs: NonZeroUsize,
    /// Keep running what does not depend on a failure.
    pub keep_going: bool,
    /// Arguments after `--`, passed to the named tasks.
    pub args: Vec<String>,
    /// Never colour output.
    pub no_color: bool,
}

impl RunOptions {
    /// The arguments task `name` is given: those after `--` when it was named (or `--all`),
    /// none when it only runs as a dependency.
    pub fn args_for(&self, name: &str) -> &[String] {
        let requested = self.all || self.tasks.iter().any(|task| task == name);
        if requested { &self.args } else { &[] }
    }

    /// Every task of the file, one at a time, nothing passed on: for a plan that is looked at,
    /// not run.
    pub fn every_task() -> Self {
        RunOptions {
            tasks: Vec::new(),
            all: true,
            jobs: NonZeroUsize::MIN,
            keep_going: false,
            args: Vec::new(),
            no_color: true,
        }
    }
}

/// How one task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Executed and exited 0.
    Executed,
    /// Replayed from the cache.
    Cached(Tier),
    /// Executed by an identical concurrent request in this process.
    Shared,
    /// Executed and exited non-zero, or could not run.
    Failed(String),
    /// The task is misconfigured in a way only visible when it is about to run (a literal
    /// input that does not exist, an input outside the project): a configuration error.
    Invalid(String),
    /// Not run: a dependency failed, or the run stopped after a failure.
    Skipped,
    /// Killed by Ctrl-C.
    Interrupted,
}

/// One task's part of the run.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// The task.
    pub name: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Its action digest, if it was computed.
    pub digest: Option<Digest>,
    /// Time the cache saved (the recorded duration of a hit).
    pub saved_ms: u64,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Every task, in the order they finished.
    pub tasks: Vec<TaskReport>,
    /// Wall time.
    pub wall: Duration,
    /// Whether Ctrl-C stopped the run.
    pub interrupted: bool,
}

impl RunReport {
    /// The first failed task, if any.
    pub fn first_failure(&self) -> Option<&TaskReport> {
        self.tasks
            .iter()
            .find(|task| matches!(task.status, TaskStatus::Failed(_) | TaskStatus::Invalid(_)))
    }

    /// The process exit code: 130 after Ctrl-C, 2 after a configuration error, 1 after a
    /// failure, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.tasks.iter().any(|t| matches!(t.status, TaskStatus::Invalid(_))) {
            2
        } else if self.first_failure().is_some()
            || self.tasks.iter().any(|t| t.status == TaskStatus::Skipped)
        {
            1
        } else {
            0
        }
    }
}

/// State shared by every task of one run.
pub(crate) struct Context {
    pub(crate) manager: EnhancedCacheManager,
    pub(crate) file: Arc<TaskFile>,
    pub(crate) env: Arc<BTreeMap<String, String>>,
    pub(crate) options: RunOptions,
    pub(crate) printer: Arc<Printer>,
    pub(crate) cancel: watch::Receiver<bool>,
    /// One permit per task process allowed to run at once (`--jobs`). Keys, lookups and
    /// replays take no permit: a hit has no process, so hits never wait behind executions.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// The shell every task runs in.
    pub(crate) shell: Arc<std::path::Path>,
}

/// Checks that the run can be planned: every task exists, and no two tasks that may run at the
/// same time declare overlapping outputs.
pub fn check(file: &TaskFile, options: &RunOptions) -> Result<(), Error> {
    let plan = Plan::new(file, options)?;
    overlap::check(file, &plan)
}

/// Advice on a valid task file, one line per cached task whose key depends on no file (no
/// inputs, no dependencies, no `cacheKey`), or whose inputs may include outputs: its own (they
/// are part of its key, so the run after they first appear executes it again), or those of a
/// task it does not depend on (its key follows what that task last wrote).
pub fn notes(file: &TaskFile) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, task) in file.tasks.iter().filter(|(_, task)| task.cache) {
        // A task with dependencies but no inputs (a bundle, a check of checks) follows them.
        let keyed_by_nothing = task.inputs.is_empty()
            && task.cache_config.extra_inputs.is_empty()
            && task.cache_key.is_none()
            && task.dependencies.is_empty();
        if keyed_by_nothing {
            notes.push(format!(
                "task \"{name}\" is cached but declares no inputs and no dependencies, so no file is part of its key and it hits however the project's files change; declare the files it reads in inputs, or set cacheKey if its result depends on none"
            ));
        }
        if let Some((output, input)) = overlap::own_output_among_inputs(file, name) {
            notes.push(format!(
                "task \"{name}\": its output \"{output}\" falls under its input \"{input}\", so its key includes what it wrote and the next run executes it again; list the output in cacheConfig.ignoreInputs unless the task reads it (as an in-place formatter does)"
            ));
        }
    }
    if let Ok(plan) = Plan::new(file, &RunOptions::every_task()) {
        for stray in overlap::reads_outputs_of_unrelated_tasks(file, &plan) {
            let overlap::StrayRead { reader, input, writer, output, writer_after } = stray;
            notes.push(if writer_after {
                format!(
                    "task \"{reader}\": its input \"{input}\" may include the output \"{output}\" of task \"{writer}\", which runs after it, so its key includes what \"{writer}\" wrote the run before and it executes again whenever that changes; list the output in cacheConfig.ignoreInputs"
                )
            } else {
                format!(
                    "task \"{reader}\": its input \"{input}\" may include the output \"{output}\" of task \"{writer}\", which it does not depend on, so its key follows whatever \"{writer}\" last wrote and the two may run at the same time; make it depend on \"{writer}\", or list the output in cacheConfig.ignoreInputs"
                )
            });
        }
    }
    notes
}

/// Runs the requested tasks and their dependencies.
pub async fn run(
    manager: &EnhancedCacheManager,
    file: Arc<TaskFile>,
    env: Arc<BTreeMap<String, String>>,
    options: RunOptions,
    cancel: watch::Receiver<bool>,
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let plan = Plan::new(&file, &options)?;
    overlap::check(&file, &plan)?;
    warn_of_unread_arguments(&file, &plan, &options);
    let printer =
        Arc::new(Printer::new(plan.order.clone(), plan.order.len() > 1, options.no_color));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.jobs.get()));
    let context = Arc::new(Context {
        manager: manager.clone(),
        file,
        env,
        options,
        printer: Arc::clone(&printer),
        cancel,
        slots,
        shell: process::shell(),
    });
    let tasks = schedule(&context, plan).await;
    printer.finish();
    let interrupted = *context.cancel.borrow();
    let report = RunReport { tasks, wall: started.elapsed(), interrupted };
    // Stores finish in the background; what they warn of (a result not stored) comes before the
    // summary, which ends the output.
    context.manager.settle().await;
    summarize(&printer, &report);
    Ok(report)
}

/// Arguments after `--` reach a task as its shell's positional parameters; a task whose text
/// never reads them would run as if none were given (under another key), so that is said.
fn warn_of_unread_arguments(file: &TaskFile, plan: &Plan, options: &RunOptions) {
    let unread: Vec<&str> = plan
        .order
        .iter()
        .filter(|name| {
            !options.args_for(name).is_empty() && !file.tasks[name.as_str()].reads_arguments()
        })
        .map(String::as_str)
        .collect();
    if !unread.is_empty() {
        let tasks = crate::task::listed(&unread, plan.order.len());
        tracing::warn!(
            tasks,
            "the arguments after -- reach a task as its shell's positional parameters, and these tasks never read them; write \"$@\" where they belong in the command (for example: cargo test \"$@\")"
        );
    }
}

/// The scheduling loop: starts every ready task (up to a bound that keeps memory flat), each
/// of which takes an execution slot only if it has to run its process.
async fn schedule(context: &Arc<Context>, mut plan: Plan) -> Vec<TaskReport> {
    let limit = in_flight_limit(context.options.jobs);
    let mut running: JoinSet<TaskReport> = JoinSet::new();
    let mut reports: Vec<TaskReport> = Vec::new();
    let mut digests: BTreeMap<String, Digest> = BTreeMap::new();
    let mut prefetch = prefetch::Prefetch::new(context, &plan, limit);
    let mut cancel = context.cancel.clone();
    let mut stopping = false;
    loop {
        stopping |= *context.cancel.borrow();
        while !stopping && running.len() < limit {
            let resumed = prefetch.as_mut().and_then(prefetch::Prefetch::next_resumed);
            let Some(name) = resumed.or_else(|| plan.next_ready()) else { break };
            if let Some(prefetch) = &mut prefetch
                && !prefetch.may_run(&plan, &digests, &name)
            {
                continue;
            }
            let dependencies = plan.dependency_digests(&name, &digests);
            // A dependent's key needs this task's digest only if the dependent is cached.
            let needs_digest = plan.dependents_of(&name).iter().any(|dependent| {
                context.manager.get_task_cache_mode(&context.file.tasks[dependent])
                    != CacheMode::Off
            });
            running.spawn(run_task(Arc::clone(context), name, dependencies, needs_digest));
        }
        if stopping && let Some(prefetch) = &mut prefetch {
            for name in prefetch.stop().await {
                let status = held_status(context);
                reports.push(TaskReport { name, status, digest: None, saved_ms: 0 });
            }
        }
        context.printer.progress(reports.len());
        let joined = match &mut prefetch {
            Some(prefetch) if !prefetch.is_idle() => tokio::select! {
                Some(joined) = running.join_next() => joined,
                event = prefetch.next() => {
                    prefetch.handle(&plan, &digests, event);
                    continue;
                }
                // Ctrl-C stops the prefetches at once (the loop's top sees it).
                Ok(()) = cancel.changed() => continue,
            },
            _ => match running.join_next().await {
                Some(joined) => joined,
                None if prefetch.as_ref().is_some_and(|p| p.has_resumed()) => continue,
                None => break,
            },
        };
        let report = joined.unwrap_or_else(|panic| TaskReport {
            name: String::new(),
            status: TaskStatus::Failed(format!("internal error: {panic}")),
            digest: None,
            saved_ms: 0,
        });
        let succeeded = matches!(
            report.status,
            TaskStatus::Executed | TaskStatus::Cached(_) | TaskStatus::Shared
        );
        if succeeded {
            if let Some(digest) = report.digest {
                digests.insert(report.name.clone(), digest);
            }
            plan.completed(&report.name);
            if let Some(prefetch) = &mut prefetch {
                let remote_hit = report.status == TaskStatus::Cached(Tier::Remote);
                prefetch.completed(&plan, &digests, &report.name, remote_hit);
            }
        } else {
            stopping |= !context.options.keep_going;
            for skipped in plan.failed(&report.name) {
                reports.push(TaskReport {
                    name: skipped,
                    status: TaskStatus::Skipped,
                    digest: None,
                    saved_ms: 0,
                });
            }
        }
        reports.push(report);
    }
    let interrupted = *context.cancel.borrow();
    if let Some(prefetch) = &mut prefetch {
        for name in prefetch.stop().await {
            reports.push(TaskReport {
                name,
                status: held_status(context),
                digest: None,
                saved_ms: 0,
            });
        }
    }
    for name in plan.remaining() {
        let status = if interrupted { TaskStatus::Interrupted } else { TaskStatus::Skipped };
        reports.push(TaskReport { name, status, digest: None, saved_ms: 0 });
    }
    reports
}

/// Runs one task through the cache and reports how it ended.
async fn run_task(
    context: Arc<Context>,
    name: String,
    dependencies: BTreeMap<String, Digest>,
    needs_digest: bool,
) -> TaskReport {
    let outcome = task::execute(&context, &name, &dependencies, needs_digest).await;
    let (status, digest, saved_ms) = match outcome {
        Ok(done) => done,
        Err(error) => {
            // Every line that shows the reason names the task already.
            let text = error.to_string();
            let reason = match text.strip_prefix(&format!("task \"{name}\": ")) {
                Some(rest) => rest.to_owned(),
                None => text,
            };
            let status = if *context.cancel.borrow() {
                TaskStatus::Interrupted
            } else if is_configuration_error(&error) {
                TaskStatus::Invalid(reason)
            } else {
                TaskStatus::Failed(reason)
            };
            (status, None, 0)
        }
    };
    match &status {
        TaskStatus::Failed(reason) => context.printer.note(&name, &format!("failed: {reason}")),
        TaskStatus::Invalid(reason) => context.printer.note(&name, &format!("error: {reason}")),
        TaskStatus::Interrupted => context.printer.note(&name, "interrupted"),
        _ => {}
    }
    TaskReport { name, status, digest, saved_ms }
}

/// How a task held for its prefetch ends when the run stops before it starts.
fn held_status(context: &Context) -> TaskStatus {
    if *context.cancel.borrow() { TaskStatus::Interrupted } else { TaskStatus::Skipped }
}

/// Tasks being looked up, replayed or executed at once.
fn in_flight_limit(jobs: NonZeroUsize) -> usize {
    jobs.get().saturating_mul(8).max(64)
}

/// Errors that name a mistake in the task file rather than a failure of the task.
fn is_configuration_error(error: &Error) -> bool {
    use cuenv_actors::key_gen::KeyError;
    match error {
        Error::Runtime(runtime) => matches!(
            &**runtime,
            cuenv_actors::Error::Key(
                KeyError::MissingInput { .. }
                    | KeyError::InvalidGlob { .. }
                    | KeyError::OutsideRoot { .. }
            )
        ),
        _ => false,
    }
}

/// Failures named one per line in the summary; the rest are counted.
const MAX_FAILURES_LISTED: usize = 10;

fn summarize(printer: &Printer, report: &RunReport) {
    let count =
        |wanted: fn(&TaskStatus) -> bool| report.tasks.iter().filter(|t| wanted(&t.status)).count();
    let cached = count(|s| matches!(s, TaskStatus::Cached(_)));
    let executed = count(|s| matches!(s, TaskStatus::Executed | TaskStatus::Shared));
    let failed = count(|s| matches!(s, TaskStatus::Failed(_) | TaskStatus::Invalid(_)));
    let skipped = count(|s| matches!(s, TaskStatus::Skipped | TaskStatus::Interrupted));
    let saved: u64 = report.tasks.iter().map(|t| t.saved_ms).sum();
    let total = report.tasks.len();
    printer.summary("");
    printer.summary(&format!(
        " Tasks:  {total} total: {executed} executed, {cached} cached, {failed} failed{}",
        if skipped > 0 { format!(", {skipped} not run") } else { String::new() }
    ));
    let full = if total > 0 && cached == total { "  (all cached)" } else { "" };
    printer.summary(&format!(
        " Time:   {} (cache saved {}){full}",
        human(report.wall),
        human(Duration::from_millis(saved))
    ));
    // Every failure, in the order they happened (several with `--continue`), up to a screenful.
    let failures: Vec<String> = report
        .tasks
        .iter()
        .filter_map(|task| match &task.status {
            TaskStatus::Failed(reason) => {
                Some(format!(" Failed: task \"{}\": {reason}", task.name))
            }
            TaskStatus::Invalid(reason) => {
                Some(format!(" Error:  task \"{}\": {reason}", task.name))
            }
            _ => None,
        })
        .collect();
    for line in failures.iter().take(MAX_FAILURES_LISTED) {
        printer.summary(line);
    }
    if failures.len() > MAX_FAILURES_LISTED {
        printer.summary(&format!(" … and {} more", failures.len() - MAX_FAILURES_LISTED));
    }
    if report.interrupted {
        printer.summary(" Interrupted: running tasks were stopped; completed results are saved");
    }
}

fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.2} s", duration.as_secs_f64()) }
}
