//! Remote prefetch: with a remote cache, each task's key is computed, and its result fetched
//! into the local store, as soon as its dependencies' keys are known, not after they were
//! restored. Remote round trips then overlap across the graph instead of adding up along its
//! longest chain.
//!
//! Only tasks whose inputs cannot include a file that one of their dependencies declares as an
//! output take part (see `overlap::reads_upstream_outputs`): their key is the same before their
//! dependencies run as after. A prefetch decides nothing. When the task runs, its key is
//! computed again from the files as they are then and looked up as usual; the prefetch only
//! made that lookup local. A task whose prefetch is still going waits for it, so one result is
//! never downloaded twice.
//!
//! Prefetching starts with the run's first remote hit. Until then every result came from the
//! local store (or the remote did not have it), and computing keys ahead would only compute
//! them twice: a full local hit with a remote configured costs what it costs without one.
//!
//! Each prefetch has two phases, each a task in its own `JoinSet`: the key (whose digest then
//! unlocks the dependents' keys), then the fetch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use cuenv_actors::Digest;
use cuenv_actors::key_gen::ActionKey;
use tokio::task::{Id, JoinSet};

use super::plan::Plan;
use super::{Context, overlap, task};

/// The prefetch state of one run.
pub(super) struct Prefetch {
    context: Arc<Context>,
    /// By task: position in the plan's order, and whether it may be prefetched (cached with a
    /// remote to read; once armed, also not reading any upstream output).
    tasks: BTreeMap<String, (usize, bool)>,
    /// Digests of keys computed early, by task.
    early: BTreeMap<String, Digest>,
    /// Set by the run's first remote hit; nothing is prefetched before.
    armed: bool,
    /// Tasks handed to the run (never prefetched after that).
    ran: BTreeSet<String>,
    /// Tasks whose prefetch started (finished or not).
    started: BTreeSet<String>,
    /// Tasks whose prefetch has not finished (queued included).
    unfinished: BTreeSet<String>,
    /// Tasks whose prefetch waits for room among the key computations, by position.
    queued: BTreeSet<(usize, String)>,
    /// Tasks ready to run that wait for their prefetch.
    deferred: BTreeSet<String>,
    /// Deferred tasks whose prefetch finished: to run next.
    resumed: VecDeque<String>,
    keys: JoinSet<Option<Box<ActionKey>>>,
    fetches: JoinSet<()>,
    /// The task each phase in flight is for.
    names: HashMap<Id, String>,
    /// The most key computations at once. Fetches are not limited here: each waits for the
    /// remote client's in-flight limit, and holds only its key meanwhile.
    limit: usize,
}

/// What finished.
pub(super) enum Event {
    /// A key was computed (or could not be).
    Keyed(String, Option<Box<ActionKey>>),
    /// A fetch ended.
    Fetched(String),
}

impl Prefetch {
    /// The prefetch state for `plan`, or `None` when no task of it can use one.
    pub(super) fn new(context: &Arc<Context>, plan: &Plan, limit: usize) -> Option<Self> {
        let file = &context.file;
        let wanted = |name: &String| context.manager.prefetches(&file.tasks[name]);
        if !plan.order.iter().any(wanted) {
            return None;
        }
        // Which of these read an upstream output is worked out when prefetching starts.
        let tasks = plan
            .order
            .iter()
            .enumerate()
            .map(|(position, name)| (name.clone(), (position, wanted(name))))
            .collect();
        Some(Prefetch {
            context: Arc::clone(context),
            tasks,
            early: BTreeMap::new(),
            armed: false,
            ran: BTreeSet::new(),
            started: BTreeSet::new(),
            unfinished: BTreeSet::new(),
            queued: BTreeSet::new(),
            deferred: BTreeSet::new(),
            resumed: VecDeque::new(),
            keys: JoinSet::new(),
            fetches: JoinSet::new(),
            names: HashMap::new(),
            limit,
        })
    }

    /// Whether `name` may run now; if not, it is held until its prefetch is done (a task
    /// that could be prefetched but was not yet starts its prefetch here).
    pub(super) fn may_run(
        &mut self,
        plan: &Plan,
        digests: &BTreeMap<String, Digest>,
        name: &str,
    ) -> bool {
        // Its dependencies are all done, so all their digests are known (or never will be).
        self.consider(plan, digests, name);
        if self.unfinished.contains(name) {
            self.deferred.insert(name.to_owned());
            return false;
        }
        self.ran.insert(name.to_owned());
        true
    }

    /// A task deferred by `may_run` whose prefetch has finished.
    pub(super) fn next_resumed(&mut self) -> Option<String> {
        self.resumed.pop_front()
    }

    /// Whether a deferred task is waiting to run.
    pub(super) fn has_resumed(&self) -> bool {
        !self.resumed.is_empty()
    }

    /// Whether anything is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.keys.is_empty() && self.fetches.is_empty()
    }

    /// The next phase to finish. Pends forever when nothing is in flight, so it can sit in a
    /// `select!` beside the run's own tasks. A phase that panicked ends like one that found
    /// nothing.
    pub(super) async fn next(&mut self) -> Event {
        if self.is_idle() {
            return std::future::pending().await;
        }
        let mut name_of = |id: Id| self.names.remove(&id).unwrap_or_default();
        tokio::select! {
            Some(joined) = self.keys.join_next_with_id() => match joined {
                Ok((id, key)) => Event::Keyed(name_of(id), key),
                Err(error) => Event::Keyed(name_of(error.id()), None),
            },
            Some(joined) = self.fetches.join_next_with_id() => match joined {
                Ok((id, ())) => Event::Fetched(name_of(id)),
                Err(error) => Event::Fetched(name_of(error.id())),
            },
            else => std::future::pending().await,
        }
    }

    /// Takes in what finished: a digest unlocks dependents' keys; a fetch (or a key with
    /// nothing to fetch) ends the task's prefetch.
    pub(super) fn handle(&mut self, plan: &Plan, digests: &BTreeMap<String, Digest>, event: Event) {
        let name = match event {
            Event::Keyed(name, key) => {
                let fetching = key.is_some();
                if let Some(key) = key {
                    self.early.insert(name.clone(), key.digest);
                    let manager = self.context.manager.clone();
                    let fetch = self.fetches.spawn(async move { manager.prefetch(&key).await });
                    self.names.insert(fetch.id(), name.clone());
                    self.unlocked(plan, digests, &name);
                }
                // A key computation ended: another may start.
                while self.keys.len() < self.limit {
                    let Some((_, next)) = self.queued.pop_first() else { break };
                    self.start(plan, digests, next);
                }
                if fetching {
                    return;
                }
                name
            }
            Event::Fetched(name) => name,
        };
        self.unfinished.remove(&name);
        if self.deferred.remove(&name) {
            self.resumed.push_back(name);
        }
    }

    /// A task completed (with `digests` holding its final digest): its dependents may now
    /// have every dependency digest. The first remote hit starts prefetching for every task
    /// not handed to the run yet.
    pub(super) fn completed(
        &mut self,
        plan: &Plan,
        digests: &BTreeMap<String, Digest>,
        name: &str,
        remote_hit: bool,
    ) {
        if remote_hit && !self.armed {
            self.armed = true;
            let reads = overlap::reads_upstream_outputs(&self.context.file, plan);
            for (position, eligible) in self.tasks.values_mut() {
                *eligible &= !reads[*position];
            }
            for task in &plan.order {
                self.consider(plan, digests, task);
            }
            return;
        }
        self.unlocked(plan, digests, name);
    }

    /// Stops everything in flight, waits for it to end, and gives back the tasks that were
    /// held for their prefetch (they will not run).
    pub(super) async fn stop(&mut self) -> Vec<String> {
        self.queued.clear();
        self.keys.shutdown().await;
        self.fetches.shutdown().await;
        self.names.clear();
        self.unfinished.clear();
        let mut held: Vec<String> = std::mem::take(&mut self.deferred).into_iter().collect();
        held.extend(self.resumed.drain(..));
        held
    }

    fn unlocked(&mut self, plan: &Plan, digests: &BTreeMap<String, Digest>, name: &str) {
        for dependent in plan.dependents_of(name) {
            self.consider(plan, digests, dependent);
        }
    }

    /// Starts (or queues) `name`'s prefetch if it may have one and every dependency's digest
    /// is known, final or early.
    fn consider(&mut self, plan: &Plan, digests: &BTreeMap<String, Digest>, name: &str) {
        let Some(&(position, true)) = self.tasks.get(name) else { return };
        if !self.armed || self.ran.contains(name) || self.started.contains(name) {
            return;
        }
        let known = |dep: &String| digests.contains_key(dep) || self.early.contains_key(dep);
        if !plan.dependencies_of(name).iter().all(known) {
            return;
        }
        // From here on the task's prefetch is under way, whether its key waits for room or not.
        self.started.insert(name.to_owned());
        self.unfinished.insert(name.to_owned());
        if self.keys.len() >= self.limit {
            self.queued.insert((position, name.to_owned()));
            return;
        }
        self.start(plan, digests, name.to_owned());
    }

    /// Spawns the key computation of `name`, whose prefetch `consider` has begun.
    fn start(&mut self, plan: &Plan, digests: &BTreeMap<String, Digest>, name: String) {
        let dependencies: BTreeMap<String, Digest> = plan
            .dependencies_of(&name)
            .iter()
            .filter_map(|dep| {
                let digest = digests.get(dep).or_else(|| self.early.get(dep))?;
                Some((dep.clone(), *digest))
            })
            .collect();
        let context = Arc::clone(&self.context);
        let task = name.clone();
        let key = self.keys.spawn(async move {
            task::early_key(&context, &task, &dependencies).await.map(Box::new)
        });
        self.names.insert(key.id(), name);
    }
}
