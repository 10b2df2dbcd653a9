//! The in-memory shape of a task file: what the runner and the cache key need to know about
//! each task, after every default has been applied and every path normalised.
//!
//! These types are plain data so the rest of cuenv never sees the file format a task came from;
//! reading and checking them lives in `parse.rs` and `graph.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which syntax a task file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskFileFormat {
    /// `cuenv.toml`.
    Toml,
    /// `cuenv.json`.
    Json,
    /// `env.cue`, evaluated with `cue export --out json`.
    Cue,
}

impl TaskFileFormat {
    /// The file name that [`TaskFile::discover`](super::TaskFile::discover) looks for.
    pub fn file_name(self) -> &'static str {
        match self {
            TaskFileFormat::Toml => "cuenv.toml",
            TaskFileFormat::Json => "cuenv.json",
            TaskFileFormat::Cue => "env.cue",
        }
    }

    /// The format a file name's extension stands for (`.toml`, `.json`, `.cue`), if any.
    pub fn from_path(path: &Path) -> Option<TaskFileFormat> {
        match path.extension()?.to_str()? {
            "toml" => Some(TaskFileFormat::Toml),
            "json" => Some(TaskFileFormat::Json),
            "cue" => Some(TaskFileFormat::Cue),
            _ => None,
        }
    }

    /// All formats, in the order discovery prefers them.
    pub(crate) const ALL: [TaskFileFormat; 3] =
        [TaskFileFormat::Toml, TaskFileFormat::Json, TaskFileFormat::Cue];
}

/// One task as the user configured it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskConfig {
    /// Free text shown by `cuenv task list`.
    pub description: Option<String>,
    /// A one-line command, run with `sh -c`. Exactly one of `command` and `script` is set.
    pub command: Option<String>,
    /// A multi-line script, also run with `sh`.
    pub script: Option<String>,
    /// Globs of the files the task reads, relative to the project root (or to `working_dir`).
    pub inputs: Vec<String>,
    /// Globs of the files the task writes, relative to the same base as `inputs`.
    pub outputs: Vec<String>,
    /// Names of the tasks that must run first.
    pub dependencies: Vec<String>,
    /// Whether results are cached; `true` when the file does not say.
    pub cache: bool,
    /// A user-given key that replaces the part of the cache key derived from the inputs.
    pub cache_key: Option<String>,
    /// Per-task cache settings (`cacheConfig`).
    pub cache_config: TaskCacheConfig,
    /// Directory the task runs in, relative to the root, normalised (`/` separators, no `.` or
    /// `..`); `None` means the root itself.
    pub working_dir: Option<String>,
}

impl Default for TaskConfig {
    /// An empty task with caching on, as a task file that names no field would give.
    fn default() -> Self {
        TaskConfig {
            description: None,
            command: None,
            script: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            dependencies: Vec::new(),
            cache: true,
            cache_key: None,
            cache_config: TaskCacheConfig::default(),
            working_dir: None,
        }
    }
}

impl TaskConfig {
    /// The shell text to run: `command`, else `script`, else an empty string.
    pub fn shell_text(&self) -> &str {
        self.command.as_deref().or(self.script.as_deref()).unwrap_or("")
    }

    /// Whether the task's shell text may read the arguments given after `--`, which reach it as
    /// the shell's positional parameters: it expands `$@`, `$*`, `$#` or `$1`..`$9` (bare or in
    /// braces), shifts or parses them, or sources a file (which sees them too).
    pub fn reads_arguments(&self) -> bool {
        let text = self.shell_text();
        let expands = text.match_indices('$').any(|(at, _)| {
            let rest = text[at + 1..].trim_start_matches('{');
            rest.starts_with(|c: char| matches!(c, '@' | '*' | '#' | '1'..='9'))
        });
        let mut words =
            text.split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '('));
        expands || words.any(|word| matches!(word, "shift" | "getopts" | "source" | "."))
    }

    /// The directory the task runs in: `root` joined with `working_dir`.
    pub fn working_dir_path(&self, root: &Path) -> PathBuf {
        match &self.working_dir {
            Some(dir) => root.join(dir),
            None => root.to_path_buf(),
        }
    }
}

/// Per-task cache settings, read from a task's `cacheConfig` table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCacheConfig {
    /// Environment variable patterns hashed into the key; replaces the global include list.
    pub env_include: Option<Vec<String>>,
    /// Environment variable patterns left out of the key; replaces the global exclude list.
    pub env_exclude: Option<Vec<String>>,
    /// More input globs, added to `inputs`.
    pub extra_inputs: Vec<String>,
    /// Globs of files left out of the inputs.
    pub ignore_inputs: Vec<String>,
    /// Extra `name = value` pairs hashed into the key.
    pub custom_key_components: BTreeMap<String, String>,
    /// Longest the task may run, in seconds.
    pub timeout: Option<u64>,
    /// Largest output this task may store in the cache, in bytes.
    pub max_size: Option<u64>,
}
