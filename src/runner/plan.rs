//! The run plan: which tasks run, what each waits for, and what a failure takes down with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cuenv_actors::Digest;

use super::RunOptions;
use crate::error::Error;
use crate::task::TaskFile;

/// Tasks of one run and their dependency edges, in topological order.
pub(crate) struct Plan {
    /// Every task of the run, dependencies first.
    pub(crate) order: Vec<String>,
    /// Each task's place in `order`.
    positions: HashMap<String, usize>,
    /// Each task's dependencies.
    dependencies: BTreeMap<String, Vec<String>>,
    /// Each task's dependents within the run.
    dependents: BTreeMap<String, Vec<String>>,
    /// Dependencies not yet completed, per waiting task.
    waiting_on: BTreeMap<String, usize>,
    /// Tasks whose dependencies are all complete, not yet started (by position in `order`).
    ready: BTreeSet<(usize, String)>,
    /// Tasks not started and not ready.
    blocked: BTreeSet<String>,
}

impl Plan {
    /// The plan for `options` over `file`.
    pub(crate) fn new(file: &TaskFile, options: &RunOptions) -> Result<Self, Error> {
        let requested: Vec<String> =
            if options.all { file.tasks.keys().cloned().collect() } else { options.tasks.clone() };
        if file.tasks.is_empty() {
            return Err(Error::Plan(format!("{} defines no tasks", file.path.display())));
        }
        if requested.is_empty() {
            let available: Vec<&str> = file.tasks.keys().map(String::as_str).collect();
            return Err(Error::Plan(format!(
                "no task named; give task names or --all (tasks in {}: {})",
                file.path.display(),
                crate::task::listed(&available, available.len())
            )));
        }
        let order = file.closure(&requested)?;
        let in_run: BTreeSet<&String> = order.iter().collect();
        let mut dependencies = BTreeMap::new();
        let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in &order {
            let deps: Vec<String> = file.tasks[name]
                .dependencies
                .iter()
                .filter(|dep| in_run.contains(dep))
                .cloned()
                .collect();
            for dep in &deps {
                dependents.entry(dep.clone()).or_default().push(name.clone());
            }
            dependencies.insert(name.clone(), deps);
        }
        let positions = order.iter().enumerate().map(|(at, name)| (name.clone(), at)).collect();
        let mut plan = Plan {
            order,
            positions,
            dependencies,
            dependents,
            waiting_on: BTreeMap::new(),
            ready: BTreeSet::new(),
            blocked: BTreeSet::new(),
        };
        for (position, name) in plan.order.iter().enumerate() {
            let count = plan.dependencies[name].len();
            if count == 0 {
                plan.ready.insert((position, name.clone()));
            } else {
                plan.waiting_on.insert(name.clone(), count);
                plan.blocked.insert(name.clone());
            }
        }
        Ok(plan)
    }

    /// The next task to start, earliest in topological order.
    pub(crate) fn next_ready(&mut self) -> Option<String> {
        self.ready.pop_first().map(|(_, name)| name)
    }

    /// The digests of `name`'s dependencies.
    pub(crate) fn dependency_digests(
        &self,
        name: &str,
        digests: &BTreeMap<String, Digest>,
    ) -> BTreeMap<String, Digest> {
        self.dependencies[name]
            .iter()
            .filter_map(|dep| digests.get(dep).map(|digest| (dep.clone(), *digest)))
            .collect()
    }

    /// Where `name` comes in the run's order (last when it is not part of the run).
    pub(crate) fn position(&self, name: &str) -> usize {
        self.positions.get(name).copied().unwrap_or(usize::MAX)
    }

    /// The tasks of the run that `name` depends on directly.
    pub(crate) fn dependencies_of(&self, name: &str) -> &[String] {
        self.dependencies.get(name).map_or(&[], Vec::as_slice)
    }

    /// The tasks of the run that depend on `name` directly.
    pub(crate) fn dependents_of(&self, name: &str) -> &[String] {
        self.dependents.get(name).map_or(&[], Vec::as_slice)
    }

    /// Marks `name` done; its dependents whose dependencies are all done become ready.
    pub(crate) fn completed(&mut self, name: &str) {
        for dependent in self.dependents.get(name).cloned().unwrap_or_default() {
            let Some(count) = self.waiting_on.get_mut(&dependent) else { continue };
            *count -= 1;
            if *count == 0 && self.blocked.remove(&dependent) {
                let position = self.position(&dependent);
                self.ready.insert((position, dependent));
            }
        }
    }

    /// Marks `name` failed; returns its transitive dependents, which will not run.
    pub(crate) fn failed(&mut self, name: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        let mut stack = self.dependents.get(name).cloned().unwrap_or_default();
        while let Some(dependent) = stack.pop() {
            if self.blocked.remove(&dependent) {
                stack.extend(self.dependents.get(&dependent).cloned().unwrap_or_default());
                skipped.push(dependent);
            }
        }
        skipped.sort();
        skipped
    }

    /// Tasks never started (ready or blocked), after the run stopped.
    pub(crate) fn remaining(&mut self) -> Vec<String> {
        let mut left: Vec<String> =
            std::mem::take(&mut self.ready).into_iter().map(|(_, name)| name).collect();
        left.extend(std::mem::take(&mut self.blocked));
        left
    }

    /// For each task (by position in `order`), the set of its transitive dependencies. Two
    /// tasks may run at the same time when neither is in the other's.
    pub(crate) fn ancestors(&self) -> Ancestry {
        let position: BTreeMap<&str, usize> =
            self.order.iter().enumerate().map(|(index, name)| (name.as_str(), index)).collect();
        let words = self.order.len().div_ceil(64);
        let mut ancestors: Vec<Vec<u64>> = Vec::with_capacity(self.order.len());
        // `order` is topological: every dependency's set is complete before its dependents'.
        for name in &self.order {
            let mut set = vec![0u64; words];
            for dependency in &self.dependencies[name] {
                let at = position[dependency.as_str()];
                set[at / 64] |= 1 << (at % 64);
                for (word, theirs) in set.iter_mut().zip(&ancestors[at]) {
                    *word |= theirs;
                }
            }
            ancestors.push(set);
        }
        Ancestry(ancestors)
    }
}

/// Each task's transitive dependencies, as a bitset over positions in the plan's order.
pub(crate) struct Ancestry(Vec<Vec<u64>>);

impl Ancestry {
    /// Whether the task at `task` depends, directly or not, on the one at `on`.
    pub(crate) fn depends(&self, task: usize, on: usize) -> bool {
        self.0[task][on / 64] & (1 << (on % 64)) != 0
    }
}
