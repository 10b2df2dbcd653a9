//! The command line, as clap parses it (`LowArgs`), and the checked settings built from it.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cuenv::config::CacheMode;

/// Run monorepo tasks with a content-addressed cache: a task whose inputs did not change is
/// replayed (outputs restored, logs shown) instead of executed.
#[derive(Debug, Parser)]
#[command(name = "cuenv", version, propagate_version = true)]
pub(crate) struct LowArgs {
    /// The task file (cuenv.toml, cuenv.json or env.cue); default: the first one found in the
    /// current directory or a parent.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The cache configuration (JSON); default: $CUENV_CACHE_CONFIG, else
    /// $XDG_CONFIG_HOME/cuenv/cache.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) cache_config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run tasks and their dependencies.
    Run(RunArgs),
    /// Inspect and manage the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Tasks to run (their dependencies run first).
    pub(crate) tasks: Vec<String>,
    /// Run every task of the task file.
    #[arg(long)]
    pub(crate) all: bool,
    /// At most N tasks at once (default: the number of CPUs).
    #[arg(short, long, value_name = "N")]
    pub(crate) jobs: Option<NonZeroUsize>,
    /// After a failure, keep running every task that does not depend on it.
    #[arg(long = "continue")]
    pub(crate) keep_going: bool,
    /// Override the cache mode for this run.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub(crate) cache_mode: Option<CacheMode>,
    /// Do not use the cache for this run (same as --cache-mode off).
    #[arg(long, conflicts_with = "cache_mode")]
    pub(crate) no_cache: bool,
    /// Show each task's key and whether it would hit; run nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --dry-run: print JSON, with every task's full key manifest.
    #[arg(long, requires = "dry_run")]
    pub(crate) json: bool,
    /// Arguments for the named tasks.
    #[arg(last = true)]
    pub(crate) args: Vec<String>,
}

fn parse_mode(text: &str) -> Result<CacheMode, String> {
    text.parse().map_err(|error: cuenv::config::UnknownValueError| error.to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Check the cache configuration and the task file; list every problem.
    Validate,
    /// Self-test the cache directory (and the remote cache, when configured).
    Test,
    /// Hit rate, bytes stored, time saved, per day.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evict entries by the configured policy.
    Gc {
        /// Evict until the cache is at most this big (default: the configured max_size).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Also evict entries not used for this long (e.g. 7d, 12h, 30m).
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
    },
    /// Remove everything from the cache directory.
    Clean {
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Show a task's key, and why it misses: what differs from its last stored result.
    Explain {
        /// The task.
        task: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `7d`, `12h`, `30m`, `90s` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 7d, 12h, 30m, 90s"))?;
    let unit = match text[digits..].trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use s, m, h, d or w)"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(number.saturating_mul(unit)))
}
