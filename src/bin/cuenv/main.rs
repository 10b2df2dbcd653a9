//! The `cuenv` command: `run` and `cache …`. The one place that uses `anyhow` and decides exit
//! codes: 0 success, 1 a task failed (or `cache validate`/`cache test` found problems), 2 bad
//! configuration or usage, 130 interrupted.

// The binary is the one place that talks to the terminal directly.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod args;
mod cache;
mod run;
mod selftest;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use cuenv::config::{CacheFeatureFlags, EnvMap, GlobalCacheConfig, process_env};
use cuenv::task::TaskFile;

use args::{Command, LowArgs};

/// What every command needs: the process env, the global config and the feature flags.
pub(crate) struct Setup {
    pub(crate) env: EnvMap,
    pub(crate) config: GlobalCacheConfig,
    pub(crate) flags: CacheFeatureFlags,
    pub(crate) args: LowArgs,
}

impl Setup {
    fn load(args: LowArgs) -> anyhow::Result<Self> {
        let env = process_env();
        let config = GlobalCacheConfig::load(args.cache_config.as_deref(), &env)?;
        let flags = CacheFeatureFlags::from_env(&env)?;
        Ok(Setup { env, config, flags, args })
    }

    /// The task file: `--config`, else found from the current directory upward.
    pub(crate) fn task_file(&self) -> anyhow::Result<TaskFile> {
        let path_env = std::env::var_os("PATH");
        Ok(match &self.args.config {
            Some(path) => TaskFile::load(path, path_env.as_deref())?,
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                TaskFile::discover(&cwd, path_env.as_deref())?
            }
        })
    }
}

fn main() -> ExitCode {
    init_logging();
    let args = LowArgs::parse();
    // Blocking threads (hashing, file reads and writes) beyond a few per core only add
    // switching; keys and lookups queue instead.
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Two per core: against four, a full hit of the 100-package benchmark took 17.9 vs
        // 18.6 ms and 17.4 vs 18.1 ms (60 interleaved runs each), a cold run 243.3 vs 248.9 ms.
        .max_blocking_threads(cores * 2)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(code) => ExitCode::from(code),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_line(&error));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, `: `-separated. Many messages already end with their
/// cause's text; such a cause is not repeated.
pub(crate) fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn dispatch(args: LowArgs) -> anyhow::Result<u8> {
    let setup = Setup::load(args)?;
    match &setup.args.command {
        Command::Run(run_args) => run::run(&setup, run_args).await,
        Command::Cache { command } => cache::cache(&setup, command).await,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUENV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .without_time()
        .init();
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
