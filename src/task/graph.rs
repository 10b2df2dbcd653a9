//! The dependency graph of a task file: unknown dependencies, cycles, and the order tasks run in.
//!
//! Checking the graph when the file is read means the runner can rely on a DAG. Everything is
//! iterative and ordered by task name, so huge or hostile files neither overflow the stack nor
//! produce messages that change from run to run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{TaskConfig, TaskFile, TaskFileError};
use crate::fields::{Problems, nearest};

type Tasks = BTreeMap<String, TaskConfig>;

/// Reports dependencies on tasks that do not exist, then every dependency cycle.
pub(super) fn check(tasks: &Tasks, problems: &mut Problems) {
    unknown_dependencies(tasks, problems);
    for cycle in cycles(tasks) {
        let start = cycle[0];
        let printed: Vec<&str> = cycle.iter().chain([&start]).copied().collect();
        problems.push(
            format!("tasks.{start}.dependencies"),
            format!("dependency cycle: {}", printed.join(" -> ")),
        );
    }
}

fn unknown_dependencies(tasks: &Tasks, problems: &mut Problems) {
    for (name, task) in tasks {
        let mut seen = BTreeSet::new();
        for dependency in &task.dependencies {
            if tasks.contains_key(dependency) || !seen.insert(dependency) {
                continue;
            }
            let others: Vec<&str> =
                tasks.keys().map(String::as_str).filter(|other| other != name).collect();
            let mut message = format!("task {name:?} depends on unknown task {dependency:?}");
            if let Some(near) = nearest(dependency, &others) {
                message.push_str(&format!("; did you mean {near:?}?"));
            }
            problems.push(format!("tasks.{name}.dependencies"), message);
        }
    }
}

/// One cycle per self-dependency and per strongly connected component of two or more tasks,
/// each starting at its smallest task name, sorted by that name.
fn cycles(tasks: &Tasks) -> Vec<Vec<&str>> {
    let names: Vec<&str> = tasks.keys().map(String::as_str).collect();
    let edges = edges(tasks, &names);
    let mut found: Vec<Vec<usize>> = (0..names.len())
        .filter(|&node| edges[node].contains(&node))
        .map(|node| vec![node])
        .collect();
    for component in Tarjan::components(&edges) {
        if component.len() > 1 {
            found.push(shortest_cycle(&edges, &component));
        }
    }
    found.sort();
    found.into_iter().map(|cycle| cycle.into_iter().map(|node| names[node]).collect()).collect()
}

/// Each task's known dependencies as sorted, deduplicated indices into `names`.
fn edges(tasks: &Tasks, names: &[&str]) -> Vec<Vec<usize>> {
    tasks
        .values()
        .map(|task| {
            let mut out: Vec<usize> = task
                .dependencies
                .iter()
                .filter_map(|dep| names.binary_search(&dep.as_str()).ok())
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect()
}

/// The shortest cycle through the smallest node of a strongly connected `component` (found by
/// breadth-first search inside it), starting at that node.
fn shortest_cycle(edges: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component.iter().copied().min().unwrap_or_default();
    let mut member = vec![false; edges.len()];
    component.iter().for_each(|&node| member[node] = true);
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &edges[node] {
            if next == start && node != start {
                let mut path = vec![node];
                while let Some(&previous) = parent.get(path.last().unwrap_or(&start)) {
                    path.push(previous);
                }
                path.reverse();
                return path;
            }
            if member[next] && next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// Tarjan's strongly connected components, with an explicit stack instead of recursion.
struct Tarjan<'e> {
    edges: &'e [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next_index: usize,
    components: Vec<Vec<usize>>,
}

impl<'e> Tarjan<'e> {
    fn components(edges: &'e [Vec<usize>]) -> Vec<Vec<usize>> {
        let n = edges.len();
        let mut tarjan = Tarjan {
            edges,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next_index: 0,
            components: Vec::new(),
        };
        for root in 0..n {
            if tarjan.index[root].is_none() {
                tarjan.visit(root);
            }
        }
        tarjan.components
    }

    fn enter(&mut self, node: usize) {
        self.index[node] = Some(self.next_index);
        self.low[node] = self.next_index;
        self.next_index += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
    }

    fn visit(&mut self, root: usize) {
        self.enter(root);
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some((node, edge)) = calls.last_mut() {
            let node = *node;
            if let Some(&next) = self.edges[node].get(*edge) {
                *edge += 1;
                match self.index[next] {
                    None => {
                        self.enter(next);
                        calls.push((next, 0));
                    }
                    Some(index) if self.on_stack[next] => {
                        self.low[node] = self.low[node].min(index)
                    }
                    Some(_) => {}
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                self.low[parent] = self.low[parent].min(self.low[node]);
            }
            self.leave(node);
        }
    }

    /// Pops `node`'s component once all its edges are done, if `node` is the component's root.
    fn leave(&mut self, node: usize) {
        if Some(self.low[node]) != self.index[node] {
            return;
        }
        let mut component = Vec::new();
        while let Some(member) = self.stack.pop() {
            self.on_stack[member] = false;
            component.push(member);
            if member == node {
                break;
            }
        }
        self.components.push(component);
    }
}

/// The requested tasks and all their transitive dependencies, dependencies first, ties by name.
pub(super) fn closure(file: &TaskFile, requested: &[String]) -> Result<Vec<String>, TaskFileError> {
    if let Some(name) = requested.iter().find(|name| !file.tasks.contains_key(name.as_str())) {
        return Err(unknown_task(file, name));
    }
    let mut problems = Problems::default();
    check(&file.tasks, &mut problems);
    if !problems.0.is_empty() {
        return Err(TaskFileError::Invalid { file: file.path.clone(), problems: problems.0 });
    }
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    let mut pending: Vec<&str> = requested.iter().map(String::as_str).collect();
    while let Some(name) = pending.pop() {
        if needed.insert(name) {
            let dependencies = file.tasks.get(name).map(|task| task.dependencies.as_slice());
            pending.extend(dependencies.unwrap_or_default().iter().map(String::as_str));
        }
    }
    Ok(topological(&file.tasks, &needed))
}

/// Kahn's algorithm over `needed` (closed under dependencies and acyclic), smallest name first.
fn topological(tasks: &Tasks, needed: &BTreeSet<&str>) -> Vec<String> {
    let mut waiting: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &name in needed {
        let deps: BTreeSet<&str> = tasks
            .get(name)
            .into_iter()
            .flat_map(|task| &task.dependencies)
            .map(String::as_str)
            .collect();
        for &dep in &deps {
            dependents.entry(dep).or_default().push(name);
        }
        waiting.insert(name, deps);
    }
    let mut ready: BTreeSet<&str> =
        waiting.iter().filter(|(_, deps)| deps.is_empty()).map(|(name, _)| *name).collect();
    let mut order = Vec::with_capacity(needed.len());
    while let Some(name) = ready.pop_first() {
        order.push(name.to_owned());
        for &dependent in dependents.get(name).into_iter().flatten() {
            if let Some(deps) = waiting.get_mut(dependent) {
                deps.remove(name);
                if deps.is_empty() {
                    ready.insert(dependent);
                }
            }
        }
    }
    order
}

fn unknown_task(file: &TaskFile, name: &str) -> TaskFileError {
    let names: Vec<&str> = file.tasks.keys().map(String::as_str).collect();
    TaskFileError::UnknownTask {
        file: file.path.clone(),
        name: name.to_owned(),
        suggestion: nearest(name, &names).map(str::to_owned),
        available: names.iter().map(|name| (*name).to_owned()).collect(),
    }
}
