//! From a task as the user wrote it to the key generator's request.

use std::collections::BTreeMap;
use std::path::Path;

use cuenv_actors::key_gen::KeyRequest;
use cuenv_actors::{Digest, EnvFilter};

use crate::config::GlobalCacheConfig;
use crate::task::TaskConfig;

/// Everything about one run of a task that its key depends on.
#[derive(Debug, Clone, Copy)]
pub struct TaskInvocation<'a> {
    /// The task's name.
    pub task_name: &'a str,
    /// The task.
    pub task: &'a TaskConfig,
    /// The project root: inputs are resolved and outputs restored under it.
    pub project_root: &'a Path,
    /// The environment the task runs with.
    pub env: &'a BTreeMap<String, String>,
    /// Arguments appended to the command.
    pub args: &'a [String],
    /// Digests of the task's dependencies, by name.
    pub dependencies: &'a BTreeMap<String, Digest>,
}

/// The key request of `invocation` under `config`: the task's env lists replace the global
/// ones; `extraInputs` add to `inputs`; `ignoreInputs` filter them.
pub fn key_request(config: &GlobalCacheConfig, invocation: &TaskInvocation<'_>) -> KeyRequest {
    let task = invocation.task;
    let mut request =
        KeyRequest::new(invocation.project_root, invocation.task_name, task.shell_text());
    request.args = invocation.args.to_vec();
    request.working_dir = task.working_dir.clone().unwrap_or_default();
    request.env_filter = env_filter(config, task);
    // Only what passes the filter can reach the key: the rest of the environment is not
    // copied into every task's request.
    request.env = request.env_filter.filter(invocation.env);
    request.inputs = task.inputs.iter().chain(&task.cache_config.extra_inputs).cloned().collect();
    request.ignore = task.cache_config.ignore_inputs.clone();
    request.cache_key = task.cache_key.clone();
    request.outputs = task.outputs.clone();
    request.custom = task.cache_config.custom_key_components.clone();
    request.dependencies = invocation.dependencies.clone();
    request
}

/// The first of `unspellable` (variables whose name or value is not UTF-8, which the env a key
/// sees cannot hold) that the env filter of one of `tasks` keeps, with that task: such a
/// variable would change what the task does without changing its key.
pub fn env_left_out_of_a_key<'a>(
    config: &GlobalCacheConfig,
    tasks: impl IntoIterator<Item = (&'a String, &'a TaskConfig)>,
    unspellable: &[String],
) -> Option<(String, String)> {
    if unspellable.is_empty() {
        return None;
    }
    tasks.into_iter().find_map(|(name, task)| {
        let filter = env_filter(config, task);
        let variable = unspellable.iter().find(|variable| filter.keeps(variable))?;
        Some((variable.clone(), name.clone()))
    })
}

/// The env filter of `task`: its own lists where it has them, else the global ones.
fn env_filter(config: &GlobalCacheConfig, task: &TaskConfig) -> EnvFilter {
    let include = task.cache_config.env_include.as_ref().unwrap_or(&config.env_include);
    let exclude = task.cache_config.env_exclude.as_ref().unwrap_or(&config.env_exclude);
    EnvFilter::new(include, exclude)
}
