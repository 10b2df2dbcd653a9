//! `cuenv cache validate|test|stats|gc|clean|explain`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use cuenv::config::{GlobalCacheConfig, format_size, parse_size};
use cuenv::manager::disk_settings;
use cuenv::runner::{self, RunOptions};
use cuenv::{Counters, EnhancedCacheManager, explain};
use cuenv_actors::disk::{DiskStore, GcTarget, Layout};
use cuenv_actors::key_gen::hash_pool;
use cuenv_actors::stats::{StatsStore, day_of, oldest_kept_day};
use serde::Serialize;

use crate::Setup;
use crate::args::{CacheCommand, parse_duration};

pub(crate) async fn cache(setup: &Setup, command: &CacheCommand) -> anyhow::Result<u8> {
    match command {
        CacheCommand::Validate => validate(setup),
        CacheCommand::Test => self_test(setup).await,
        CacheCommand::Stats { json } => stats(&setup.config, *json),
        CacheCommand::Gc { max_size, max_age } => {
            gc(&setup.config, max_size.as_deref(), max_age.as_deref())
        }
        CacheCommand::Clean { yes } => clean(&setup.config, *yes),
        CacheCommand::Explain { task, json } => explain_task(setup, task, *json).await,
    }
}

fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The global config was already loaded (and validated) by `Setup`; this checks the task file
/// and that the outputs of tasks that can run together do not overlap.
fn validate(setup: &Setup) -> anyhow::Result<u8> {
    say(&format!("ok: cache configuration (cache dir {})", setup.config.cache_dir.display()));
    let file = match setup.task_file() {
        Ok(file) => file,
        Err(error) => {
            say(&format!("error: {}", crate::error_line(&error)));
            return Ok(1);
        }
    };
    let options = RunOptions {
        tasks: Vec::new(),
        all: true,
        jobs: std::num::NonZeroUsize::MIN,
        keep_going: false,
        args: Vec::new(),
        no_color: true,
    };
    if file.tasks.is_empty() {
        say(&format!("ok: task file {} (no tasks)", file.path.display()));
        return Ok(0);
    }
    match runner::check(&file, &options) {
        Ok(()) => {
            say(&format!("ok: task file {} ({} tasks)", file.path.display(), file.tasks.len()));
            for note in runner::notes(&file) {
                say(&format!("note: {note}"));
            }
            Ok(0)
        }
        Err(error) => {
            say(&format!("error: {error}"));
            Ok(1)
        }
    }
}

fn open_store(config: &GlobalCacheConfig) -> anyhow::Result<DiskStore> {
    let settings = disk_settings(config, config.cache_dir.clone());
    let pool = hash_pool(1).context("cannot start a hashing thread")?;
    DiskStore::open(settings, pool)
        .with_context(|| format!("cannot open the cache directory {}", config.cache_dir.display()))
}

async fn self_test(setup: &Setup) -> anyhow::Result<u8> {
    let config = &setup.config;
    let mut checks = crate::selftest::local(config);
    if let Some(remote) = config.remote_cache.as_ref().filter(|_| setup.flags.remote_cache_enabled)
    {
        checks.push(crate::selftest::remote(remote, &config.cache_dir).await);
    }
    let mut failed = 0;
    for (name, outcome) in &checks {
        match outcome {
            Ok(detail) => say(&format!("PASS  {name}: {detail}")),
            Err(detail) => {
                failed += 1;
                say(&format!("FAIL  {name}: {detail}"));
            }
        }
    }
    if config.remote_cache.is_none() {
        say("SKIP  remote cache: not configured");
    } else if !setup.flags.remote_cache_enabled {
        say("SKIP  remote cache: switched off by CUENV_REMOTE_CACHE");
    }
    Ok(u8::from(failed > 0))
}

#[derive(Serialize)]
struct StatsReport {
    cache_dir: String,
    days: Vec<(String, Counters)>,
    total: Counters,
    hit_rate: f64,
    bytes_stored: u64,
    max_size: u64,
}

fn stats(config: &GlobalCacheConfig, json: bool) -> anyhow::Result<u8> {
    let layout = Layout::new(&config.cache_dir);
    let oldest = oldest_kept_day(SystemTime::now(), config.stats_retention_days);
    let days: Vec<(String, Counters)> = StatsStore::new(layout.stats())
        .days()
        .into_iter()
        .filter(|(day, _)| *day >= oldest)
        .collect();
    let mut total = Counters::default();
    days.iter().for_each(|(_, counters)| total.add(counters));
    let bytes_stored =
        if layout.store().exists() { open_store(config)?.approximate_usage() } else { 0 };
    let report = StatsReport {
        cache_dir: config.cache_dir.display().to_string(),
        hit_rate: total.hit_rate(),
        days,
        total,
        bytes_stored,
        max_size: config.max_size,
    };
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(0);
    }
    say(&format!("cache dir:   {}", report.cache_dir));
    say(&format!(
        "stored:      {} of {} max",
        format_size(report.bytes_stored),
        format_size(report.max_size)
    ));
    let t = &report.total;
    say(&format!(
        "lookups:     {} ({} hits: {} memory, {} disk, {} remote; {} misses; {} corrupt)",
        t.lookups,
        t.hits(),
        t.hits_memory,
        t.hits_disk,
        t.hits_remote,
        t.misses,
        t.corrupt
    ));
    say(&format!("hit rate:    {:.1}%", report.hit_rate * 100.0));
    say(&format!("time saved:  {:.1} s", t.time_saved_ms as f64 / 1000.0));
    say(&format!(
        "writes:      {} ({} written); executions: {}",
        t.writes,
        format_size(t.bytes_written),
        t.executions
    ));
    say(&format!("evictions:   {} ({} freed)", t.evictions, format_size(t.bytes_evicted)));
    if t.remote_uploads + t.remote_misses + t.remote_errors + t.hits_remote > 0 {
        say(&format!(
            "remote:      {} hits, {} misses, {} errors, {} uploads, {} up, {} down",
            t.hits_remote,
            t.remote_misses,
            t.remote_errors,
            t.remote_uploads,
            format_size(t.remote_bytes_up),
            format_size(t.remote_bytes_down)
        ));
    }
    say(&format!("per day (last {} days):", config.stats_retention_days));
    for (day, counters) in &report.days {
        say(&format!(
            "  {day}  lookups {:>6}  hits {:>6}  hit rate {:>5.1}%  saved {:>8.1} s",
            counters.lookups,
            counters.hits(),
            counters.hit_rate() * 100.0,
            counters.time_saved_ms as f64 / 1000.0
        ));
    }
    Ok(0)
}

fn gc(
    config: &GlobalCacheConfig,
    max_size: Option<&str>,
    max_age: Option<&str>,
) -> anyhow::Result<u8> {
    let max_size = match max_size {
        Some(text) => parse_size(text).map_err(|error| anyhow::anyhow!("--max-size: {error}"))?,
        None => config.max_size,
    };
    let max_age = max_age
        .map(parse_duration)
        .transpose()
        .map_err(|error| anyhow::anyhow!("--max-age: {error}"))?;
    let store = open_store(config)?;
    let report = store.gc(GcTarget { max_size, max_age })?;
    let stats = StatsStore::new(store.layout().stats());
    let delta = Counters {
        evictions: report.records_evicted,
        bytes_evicted: report.bytes_freed,
        ..Counters::default()
    };
    stats.merge(&day_of(SystemTime::now()), &delta)?;
    say(&format!(
        "evicted {} entries and {} blobs, freed {} ({} -> {}); swept {} temp files, removed {} damaged records",
        report.records_evicted,
        report.blobs_removed,
        format_size(report.bytes_freed),
        format_size(report.size_before),
        format_size(report.size_after),
        report.temps_swept,
        report.corrupt_removed
    ));
    if report.kept_recent > 0 {
        say(&format!(
            "kept {} entries written less than a minute ago (a writer may still be using them)",
            report.kept_recent
        ));
    }
    Ok(0)
}

fn clean(config: &GlobalCacheConfig, yes: bool) -> anyhow::Result<u8> {
    let dir = &config.cache_dir;
    if !dir.exists() {
        say(&format!("nothing to clean: {} does not exist", dir.display()));
        return Ok(0);
    }
    if !yes && std::io::stdin().is_terminal() {
        eprint!("remove everything under {}? [y/N] ", dir.display());
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            say("nothing removed");
            return Ok(1);
        }
    }
    let freed = dir_size(dir);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    for (n, path) in entries.into_iter().enumerate() {
        remove_entry(dir, &path, n).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    say(&format!("removed everything under {} ({} freed)", dir.display(), format_size(freed)));
    Ok(0)
}

/// Removes `path`, an entry of the cache directory `dir`. A directory is first renamed out of
/// the way (to a name no run uses, inside `dir`), so a run writing meanwhile makes its
/// directories afresh instead of adding files to the tree being removed, which would then
/// fail as not empty. A file that a writer still adds through a directory it had open is
/// removed on a second pass.
fn remove_entry(dir: &Path, path: &Path, n: usize) -> std::io::Result<()> {
    if !path.is_dir() {
        return match std::fs::remove_file(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    let doomed = dir.join(format!(".removing-{}-{n}", std::process::id()));
    let doomed = match std::fs::rename(path, &doomed) {
        Ok(()) => doomed,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // Renaming is only a precaution; remove in place.
        Err(_) => path.to_owned(),
    };
    let mut passes = 0;
    loop {
        passes += 1;
        match std::fs::remove_dir_all(&doomed) {
            Err(error) if error.kind() == std::io::ErrorKind::DirectoryNotEmpty && passes < 5 => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => return other,
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[derive(Serialize)]
struct Explanation {
    task: String,
    digest: String,
    cache: &'static str,
    last_stored: Option<String>,
    differences: Vec<explain::Difference>,
    /// For each changed dependency, what changed in it (recursively, upstream first).
    upstream: Vec<Upstream>,
    manifest: cuenv_actors::key_gen::KeyManifest,
}

#[derive(Serialize)]
struct Upstream {
    task: String,
    differences: Vec<explain::Difference>,
}

async fn explain_task(setup: &Setup, task: &str, json: bool) -> anyhow::Result<u8> {
    let file = setup.task_file()?;
    crate::run::refuse_env_keys_cannot_spell(&setup.config, &file, &[task.to_owned()], false)?;
    let options = RunOptions {
        tasks: vec![task.to_owned()],
        all: false,
        jobs: std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN),
        keep_going: false,
        args: Vec::new(),
        no_color: true,
    };
    let manager = EnhancedCacheManager::new_with_flags(setup.config.clone(), setup.flags).await?;
    let entries = runner::dry_run(&manager, &file, &setup.env, &options).await;
    let outcome = explanation(&manager, &file, task, entries).await;
    manager.shutdown().await?;
    let explanation = outcome?;
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &explanation)?;
        writeln!(out)?;
        return Ok(0);
    }
    print_explanation(&explanation)?;
    Ok(0)
}

async fn explanation(
    manager: &EnhancedCacheManager,
    file: &cuenv::task::TaskFile,
    task: &str,
    entries: Result<Vec<runner::DryRunEntry>, cuenv::Error>,
) -> anyhow::Result<Explanation> {
    let entries: BTreeMap<String, runner::DryRunEntry> =
        entries?.into_iter().map(|entry| (entry.task.clone(), entry)).collect();
    let entry = entries.get(task).context("task missing from its own plan")?;
    let project = cuenv::manager::project_id(&file.root);
    let (last_stored, differences) = differences_from_last(manager, &project, entry).await?;
    // Walk changed dependencies upstream, so the cause (an edited file two levels up) shows.
    let mut upstream = Vec::new();
    let mut queue: Vec<String> = changed_dependencies(&differences);
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = queue.pop() {
        let Some(dependency) = entries.get(&name).filter(|_| seen.insert(name.clone())) else {
            continue;
        };
        let (_, found) = differences_from_last(manager, &project, dependency).await?;
        queue.extend(changed_dependencies(&found));
        upstream.push(Upstream { task: name, differences: found });
    }
    Ok(Explanation {
        task: task.to_owned(),
        digest: entry.digest.to_hex(),
        cache: entry.cache,
        last_stored: last_stored.map(|digest| digest.to_hex()),
        differences,
        upstream,
        manifest: entry.manifest.clone(),
    })
}

fn changed_dependencies(differences: &[explain::Difference]) -> Vec<String> {
    differences
        .iter()
        .filter_map(|difference| match difference {
            explain::Difference::Dependency {
                name,
                change: explain::Change::Changed | explain::Change::Added,
            } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// The last stored digest of `entry`'s task (when it differs from the current one) and the
/// differences from its manifest.
async fn differences_from_last(
    manager: &EnhancedCacheManager,
    project: &str,
    entry: &runner::DryRunEntry,
) -> anyhow::Result<(Option<cuenv::Digest>, Vec<explain::Difference>)> {
    let last = manager.runtime().disk().last(project.to_owned(), entry.task.clone()).await?;
    let Some(digest) = last.filter(|digest| *digest != entry.digest) else {
        return Ok((None, Vec::new()));
    };
    let Some(previous) = manager.get_cached_result(&digest).await else {
        return Ok((None, Vec::new()));
    };
    Ok((Some(digest), explain::diff(&previous.manifest, &entry.manifest)))
}

fn print_explanation(explanation: &Explanation) -> anyhow::Result<()> {
    let manifest = &explanation.manifest;
    say(&format!("task:        {}", explanation.task));
    say(&format!("key:         {}", explanation.digest));
    say(&format!("cache:       {}", explanation.cache));
    say(&format!("command:     {}", manifest.command));
    say(&format!(
        "working dir: {}",
        if manifest.working_dir.is_empty() { "." } else { &manifest.working_dir }
    ));
    say(&format!("env:         {}", manifest.env.keys().cloned().collect::<Vec<_>>().join(", ")));
    say(&format!("inputs:      {} files", manifest.input_files().len()));
    for (name, digest) in &manifest.dependencies {
        say(&format!("dependency:  {name} {}", digest.short()));
    }
    match (&explanation.last_stored, explanation.cache) {
        (_, "hit") => say("it would be replayed from the cache"),
        (Some(last), _) => {
            say(&format!("misses; differences from the last stored result ({}):", &last[..12]));
            for difference in &explanation.differences {
                say(&format!("  {difference}"));
            }
            for upstream in &explanation.upstream {
                say(&format!("  in dependency {}:", upstream.task));
                for difference in &upstream.differences {
                    say(&format!("    {difference}"));
                }
            }
        }
        (None, _) => say("misses; no earlier result of this task is stored in this cache"),
    }
    Ok(())
}
