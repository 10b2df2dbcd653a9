//! Task files: finding the `cuenv.toml`, `cuenv.json` or `env.cue` that defines a project's
//! tasks, reading it into [`TaskConfig`]s, and checking it before anything runs.
//!
//! Every mistake in a task file is reported at once, naming the file, the task and the field,
//! so a user fixes a file in one pass instead of one error per run. The dependency graph is
//! checked here too (unknown tasks, cycles), which lets the runner assume a valid DAG.

mod graph;
mod load;
mod model;
mod parse;
mod units;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

pub(crate) use load::find_executable;
pub use model::{TaskCacheConfig, TaskConfig, TaskFileFormat};

use crate::fields::Problem;

/// A task file that has been read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    /// The file that was read (absolute).
    pub path: PathBuf,
    /// The directory holding the file: the project root that globs are relative to.
    pub root: PathBuf,
    /// The syntax the file is written in.
    pub format: TaskFileFormat,
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskConfig>,
}

/// Why a task file could not be found, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    /// No task file in the start directory or any parent.
    #[error(
        "no task file found: looked for {} in {} and every parent directory",
        names.join(", "),
        start.display()
    )]
    NotFound {
        /// Where the search started.
        start: PathBuf,
        /// The file names searched for.
        names: Vec<&'static str>,
    },
    /// More than one task file in the same directory.
    #[error(
        "{}: found more than one task file ({}); keep only one",
        dir.display(),
        names.join(", ")
    )]
    Ambiguous {
        /// The directory holding them.
        dir: PathBuf,
        /// The task file names found there.
        names: Vec<&'static str>,
    },
    /// A `--config` path whose extension names no task file format.
    #[error("{}: unknown task file format; expected a .toml, .json or .cue file", path.display())]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
    },
    /// The file (or the current directory) could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `env.cue` could not be evaluated: no `cue` binary, or `cue export` failed.
    #[error("{}: {message}", file.display())]
    Cue {
        /// The CUE file.
        file: PathBuf,
        /// What went wrong, including `cue`'s own error output.
        message: String,
    },
    /// The file was read but its content is wrong; every problem found is listed.
    #[error("{}:{}", file.display(), ProblemLines(problems))]
    Invalid {
        /// The task file.
        file: PathBuf,
        /// Each problem, located by field path (`tasks.build.inputs[2]`).
        problems: Vec<Problem>,
    },
    /// A task asked for on the command line is not defined.
    #[error("{}: {}", file.display(), unknown_task_message(name, suggestion.as_deref(), available))]
    UnknownTask {
        /// The task file.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The nearest defined name, if one is close.
        suggestion: Option<String>,
        /// Every defined task name.
        available: Vec<String>,
    },
}

/// Writes each problem on its own indented line.
struct ProblemLines<'a>(&'a [Problem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|problem| write!(f, "\n  {problem}"))
    }
}

fn unknown_task_message(name: &str, suggestion: Option<&str>, available: &[String]) -> String {
    let mut message = format!("unknown task {name:?}");
    if let Some(near) = suggestion {
        message.push_str(&format!("; did you mean {near:?}?"));
    }
    if available.is_empty() {
        message.push_str("; the file defines no tasks");
        return message;
    }
    // A big monorepo defines thousands of tasks: list a screenful, preferring the names that
    // contain the one asked for (`build` finds `pkg-a:build`).
    let all: Vec<&str> = available.iter().map(String::as_str).collect();
    let containing: Vec<&str> = if all.len() > LISTED_TASKS {
        let lowered = name.to_lowercase();
        all.iter().copied().filter(|task| task.to_lowercase().contains(&lowered)).collect()
    } else {
        Vec::new()
    };
    let (label, names) = if containing.is_empty() {
        ("available tasks".to_owned(), all)
    } else {
        (format!("tasks containing {name:?}"), containing)
    };
    message.push_str(&format!("; {label}: {}", listed(&names, available.len())));
    message
}

/// How many task names an error lists at most.
const LISTED_TASKS: usize = 20;

/// The first [`LISTED_TASKS`] of `names`, then how many more there are (of `total` tasks): a
/// big monorepo's thousands of names would make an error line of tens of kilobytes.
pub(crate) fn listed(names: &[&str], total: usize) -> String {
    let shown = &names[..names.len().min(LISTED_TASKS)];
    let mut text = shown.join(", ");
    if names.len() > shown.len() {
        text.push_str(&format!(" and {} more (of {total} tasks)", names.len() - shown.len()));
    }
    text
}

impl TaskFile {
    /// Finds the task file for `start_dir`: the first of `cuenv.toml`, `cuenv.json` and
    /// `env.cue` in `start_dir` or its nearest parent that has one, then reads and checks it.
    /// `path_env` is the `PATH` value searched for the `cue` binary.
    pub fn discover(start_dir: &Path, path_env: Option<&OsStr>) -> Result<TaskFile, TaskFileError> {
        let (path, format) = load::find(start_dir)?;
        load::read(path, format, path_env)
    }

    /// Reads and checks the task file at `path` (the CLI's `--config FILE`); the format comes
    /// from the extension and the project root is the file's directory.
    pub fn load(path: &Path, path_env: Option<&OsStr>) -> Result<TaskFile, TaskFileError> {
        let absolute = load::absolute(path)?;
        let format = TaskFileFormat::from_path(&absolute)
            .ok_or_else(|| TaskFileError::UnknownFormat { path: path.to_path_buf() })?;
        load::read(absolute, format, path_env)
    }

    /// The `requested` tasks plus everything they depend on, dependencies first; tasks with
    /// no order between them come by name.
    pub fn closure(&self, requested: &[String]) -> Result<Vec<String>, TaskFileError> {
        graph::closure(self, requested)
    }
}
