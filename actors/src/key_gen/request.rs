//! What a caller asks the key generator for: everything about a task that may affect its result.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{Digest, EnvFilter};

/// A task, as the key generator sees it. Paths are relative to `project_root` and use `/`.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// Absolute path of the project root; nothing under it leaks into the key.
    pub project_root: PathBuf,
    /// The task's name.
    pub task_name: String,
    /// The command or script text.
    pub command: String,
    /// Arguments appended to the command.
    pub args: Vec<String>,
    /// The working directory relative to the root (`""` for the root). Input globs are relative
    /// to it.
    pub working_dir: String,
    /// The environment the task will run with; only what passes `env_filter` reaches the key.
    pub env: BTreeMap<String, String>,
    /// The task's (or the global) include/exclude lists.
    pub env_filter: EnvFilter,
    /// Input globs (the task's `inputs` plus `extraInputs`).
    pub inputs: Vec<String>,
    /// Globs of files that never count as inputs (`ignoreInputs`). A pattern without `/` matches
    /// a file name at any depth.
    pub ignore: Vec<String>,
    /// A user-given key that replaces the input files.
    pub cache_key: Option<String>,
    /// Declared output globs.
    pub outputs: Vec<String>,
    /// `customKeyComponents`.
    pub custom: BTreeMap<String, String>,
    /// Digests of the task's dependencies.
    pub dependencies: BTreeMap<String, Digest>,
}

impl KeyRequest {
    /// A request for `task_name` running `command` in `project_root`, with no inputs, no env and
    /// no dependencies; fill in the rest by field.
    pub fn new(project_root: impl Into<PathBuf>, task_name: &str, command: &str) -> Self {
        KeyRequest {
            project_root: project_root.into(),
            task_name: task_name.to_owned(),
            command: command.to_owned(),
            args: Vec::new(),
            working_dir: String::new(),
            env: BTreeMap::new(),
            env_filter: EnvFilter::new(&[], &[]),
            inputs: Vec::new(),
            ignore: Vec::new(),
            cache_key: None,
            outputs: Vec::new(),
            custom: BTreeMap::new(),
            dependencies: BTreeMap::new(),
        }
    }
}
