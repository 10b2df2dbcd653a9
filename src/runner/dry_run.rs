//! `cuenv run --dry-run`: every task's key and whether it would hit, without running anything.

use std::collections::BTreeMap;

use cuenv_actors::Digest;
use cuenv_actors::key_gen::KeyManifest;
use serde::Serialize;

use super::RunOptions;
use super::plan::Plan;
use crate::error::Error;
use crate::key::TaskInvocation;
use crate::manager::EnhancedCacheManager;
use crate::task::TaskFile;

/// One task of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunEntry {
    /// The task.
    pub task: String,
    /// Its action digest.
    pub digest: Digest,
    /// `hit`, `miss`, or `disabled` (the task is not cached).
    pub cache: &'static str,
    /// Every key component.
    pub manifest: KeyManifest,
}

/// The keys of every task the run would execute, in order, with hit or miss.
pub async fn dry_run(
    manager: &EnhancedCacheManager,
    file: &TaskFile,
    env: &BTreeMap<String, String>,
    options: &RunOptions,
) -> Result<Vec<DryRunEntry>, Error> {
    let plan = Plan::new(file, options)?;
    let mut digests: BTreeMap<String, Digest> = BTreeMap::new();
    let mut entries = Vec::new();
    for name in &plan.order {
        let task = &file.tasks[name];
        let requested = options.all || options.tasks.contains(name);
        let dependencies = plan.dependency_digests(name, &digests);
        let invocation = TaskInvocation {
            task_name: name,
            task,
            project_root: &file.root,
            env,
            args: if requested { &options.args } else { &[] },
            dependencies: &dependencies,
        };
        let key = manager.compute_key(invocation).await?;
        let cache = if !manager.get_task_cache_mode(task).reads() {
            "disabled"
        } else if manager.get_cached_result(&key.digest).await.is_some() {
            "hit"
        } else {
            "miss"
        };
        digests.insert(name.clone(), key.digest);
        entries.push(DryRunEntry {
            task: name.clone(),
            digest: key.digest,
            cache,
            manifest: key.manifest,
        });
    }
    Ok(entries)
}
