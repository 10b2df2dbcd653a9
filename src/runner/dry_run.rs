//! `cuenv run --dry-run`: every task's key and whether it would hit, without running anything.

use std::collections::{BTreeMap, HashMap};

use cuenv_actors::Digest;
use cuenv_actors::key_gen::{ActionKey, KeyManifest};
use serde::Serialize;
use tokio::task::JoinSet;

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

/// The keys of every task the run would execute, in order, with hit or miss. Keys are computed
/// side by side, each as soon as its dependencies' digests are known. The error, if any, is that
/// of the first failing task in the run's order (the one a one-at-a-time walk would stop at).
pub async fn dry_run(
    manager: &EnhancedCacheManager,
    file: &TaskFile,
    env: &BTreeMap<String, String>,
    options: &RunOptions,
) -> Result<Vec<DryRunEntry>, Error> {
    let mut plan = Plan::new(file, options)?;
    // Enough in flight to keep every hashing thread busy, few enough to hold little memory.
    let limit = options.jobs.get().saturating_mul(2);
    let mut digests: BTreeMap<String, Digest> = BTreeMap::new();
    let mut keyed: HashMap<String, (ActionKey, &'static str)> = HashMap::new();
    let mut first_failure: Option<(usize, Error)> = None;
    let mut running = JoinSet::new();
    loop {
        while running.len() < limit {
            let Some(name) = plan.next_ready() else { break };
            let task = &file.tasks[&name];
            let dependencies = plan.dependency_digests(&name, &digests);
            let invocation = TaskInvocation {
                task_name: &name,
                task,
                project_root: &file.root,
                env,
                args: options.args_for(&name),
                dependencies: &dependencies,
            };
            let key = manager.key_of(invocation);
            let reads = manager.get_task_cache_mode(task).reads();
            let manager = manager.clone();
            running.spawn(async move {
                let looked_up = async {
                    let key = key.await?;
                    let cache = if !reads {
                        "disabled"
                    } else if manager.get_cached_result(&key.digest).await.is_some() {
                        "hit"
                    } else {
                        "miss"
                    };
                    Ok::<_, Error>((key, cache))
                };
                (name, looked_up.await)
            });
        }
        let Some(joined) = running.join_next().await else { break };
        let (name, outcome) =
            joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        match outcome {
            Ok((key, cache)) => {
                digests.insert(name.clone(), key.digest);
                plan.completed(&name);
                keyed.insert(name, (key, cache));
            }
            // Its dependents never become ready; the rest goes on, so the failure reported is
            // the earliest in order whatever finished first.
            Err(error) => {
                let at = plan.position(&name);
                if first_failure.as_ref().is_none_or(|(earliest, _)| at < *earliest) {
                    first_failure = Some((at, error));
                }
            }
        }
    }
    if let Some((_, error)) = first_failure {
        return Err(error);
    }
    let entries = plan
        .order
        .iter()
        .filter_map(|name| {
            let (key, cache) = keyed.remove(name)?;
            Some(DryRunEntry {
                task: name.clone(),
                digest: key.digest,
                cache,
                manifest: key.manifest,
            })
        })
        .collect();
    Ok(entries)
}
