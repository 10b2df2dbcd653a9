//! Refuses a run in which two tasks that may run at the same time declare outputs that can name
//! the same file: they would overwrite each other, and their cached results would disagree.
//!
//! The check is on the globs, before anything runs. Two patterns are disjoint when their literal
//! base directories are unrelated, when a literal path does not match the other glob, or when
//! both end in different literal suffixes (`dist/**/*.js` and `dist/**/*.css`); otherwise they
//! are reported as overlapping.

use std::cell::OnceCell;
use std::collections::BTreeSet;

use cuenv_actors::key_gen::{ignore_glob, is_glob, join_normalised};
use globset::{GlobBuilder, GlobMatcher};

use super::plan::Plan;
use crate::error::Error;
use crate::task::TaskFile;

/// An output pattern joined to its task's working directory. Its glob is compiled only when a
/// comparison needs it: most pairs are told apart by their literal bases alone.
struct Output {
    pattern: String,
    base: String,
    is_glob: bool,
    matcher: OnceCell<Option<GlobMatcher>>,
}

impl Output {
    fn new(pattern: String) -> Self {
        let globbed = is_glob(&pattern);
        let base = if globbed {
            pattern.split('/').take_while(|part| !is_glob(part)).collect::<Vec<_>>().join("/")
        } else {
            pattern.clone()
        };
        Output { pattern, base, is_glob: globbed, matcher: OnceCell::new() }
    }

    fn matches(&self, path: &str) -> bool {
        let matcher = self.matcher.get_or_init(|| {
            GlobBuilder::new(&self.pattern)
                .literal_separator(true)
                .build()
                .ok()
                .map(|glob| glob.compile_matcher())
        });
        matcher.as_ref().is_some_and(|matcher| matcher.is_match(path))
    }
}

/// The task's outputs joined to its working directory. A task file's outputs stay inside the
/// project (checked when it is read); one that does not is refused when the task runs.
fn outputs_of(file: &TaskFile, task: &str) -> Vec<Output> {
    let config = &file.tasks[task];
    let working_dir = config.working_dir.as_deref().unwrap_or_default();
    config
        .outputs
        .iter()
        .filter_map(|raw| join_normalised(working_dir, raw))
        .map(Output::new)
        .collect()
}

/// Every output of the plan's tasks, with the task's position, sorted by literal base: the index
/// [`related`] searches.
fn outputs_by_base(file: &TaskFile, plan: &Plan) -> Vec<(usize, Output)> {
    let mut outputs: Vec<(usize, Output)> = plan
        .order
        .iter()
        .enumerate()
        .flat_map(|(task, name)| outputs_of(file, name).into_iter().map(move |out| (task, out)))
        .collect();
    outputs.sort_by(|a, b| a.1.base.cmp(&b.1.base));
    outputs
}

/// The files a task's key reads (`inputs` and `extraInputs`), joined like outputs; none when a
/// `cacheKey` stands in for them. An input that cannot be joined (it leaves the project) is
/// kept as the whole project, so it overlaps everything.
fn inputs_of(file: &TaskFile, task: &str) -> Vec<Output> {
    let config = &file.tasks[task];
    if config.cache_key.is_some() {
        return Vec::new();
    }
    let working_dir = config.working_dir.as_deref().unwrap_or_default();
    config
        .inputs
        .iter()
        .chain(&config.cache_config.extra_inputs)
        .map(|raw| Output::new(join_normalised(working_dir, raw).unwrap_or_else(|| "**".into())))
        .collect()
}

/// For each task of the plan (by position), whether its inputs may include a file that one of
/// its dependencies, direct or not, declares as an output. A task for which this is `false`
/// has the same key before its dependencies run as after, so its key can be computed early.
///
/// Outputs are sorted by literal base, so each input is compared only with the outputs whose
/// base is under its own or above it (near-linear for one directory per package), and only
/// then is the owner checked against the task's ancestors.
pub(crate) fn reads_upstream_outputs(file: &TaskFile, plan: &Plan) -> Vec<bool> {
    let outputs = outputs_by_base(file, plan);
    let ancestors = plan.ancestors();
    plan.order
        .iter()
        .enumerate()
        .map(|(position, name)| {
            inputs_of(file, name).iter().any(|input| {
                related(&outputs, &input.base).any(|(task, output)| {
                    ancestors.depends(position, *task) && overlap(input, output)
                })
            })
        })
        .collect()
}

/// The outputs (sorted by base) whose base is `base`, lies under it, or lies above it.
fn related<'a>(
    outputs: &'a [(usize, Output)],
    base: &'a str,
) -> impl Iterator<Item = &'a (usize, Output)> + 'a {
    let from = outputs.partition_point(|(_, out)| out.base.as_str() < base);
    let under = outputs[from..]
        .iter()
        .take_while(move |(_, out)| out.base.starts_with(base))
        .filter(move |(_, out)| within(&out.base, base));
    // Each proper ancestor directory of `base`, the project root included.
    let parents = std::iter::once("")
        .chain(base.match_indices('/').map(move |(at, _)| &base[..at]))
        .filter(move |parent| *parent != base);
    let above = parents.flat_map(move |parent| {
        let start = outputs.partition_point(|(_, out)| out.base.as_str() < parent);
        outputs[start..].iter().take_while(move |(_, out)| out.base == parent)
    });
    under.chain(above)
}

/// Whether `inner` is `outer` or lies below it.
fn within(inner: &str, outer: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
}

fn literal_suffix(pattern: &str) -> &str {
    let last = pattern.rsplit('/').next().unwrap_or(pattern);
    last.rsplit(['*', '?', ']', '}']).next().unwrap_or("")
}

fn overlap(a: &Output, b: &Output) -> bool {
    if !within(&a.base, &b.base) && !within(&b.base, &a.base) {
        return false;
    }
    match (a.is_glob, b.is_glob) {
        (false, false) => true,
        (false, true) => b.matches(&a.pattern) || within(&b.base, &a.pattern),
        (true, false) => a.matches(&b.pattern) || within(&a.base, &b.pattern),
        (true, true) => {
            let (x, y) = (literal_suffix(&a.pattern), literal_suffix(&b.pattern));
            x.is_empty() || y.is_empty() || x.ends_with(y) || y.ends_with(x)
        }
    }
}

/// The task's `ignoreInputs`, joined like its inputs.
fn ignored_of(file: &TaskFile, task: &str) -> Vec<Output> {
    let config = &file.tasks[task];
    let working_dir = config.working_dir.as_deref().unwrap_or_default();
    config
        .cache_config
        .ignore_inputs
        .iter()
        .filter_map(|raw| join_normalised(working_dir, &ignore_glob(raw)))
        .map(Output::new)
        .collect()
}

/// A declared output of `task` that its own inputs may match, with that input, unless an
/// `ignoreInputs` pattern may cover it. Such outputs are part of the task's key: the first run
/// after they appear executes the task again (its key now includes them).
pub(crate) fn own_output_among_inputs(file: &TaskFile, task: &str) -> Option<(String, String)> {
    let config = &file.tasks[task];
    let working_dir = config.working_dir.as_deref().unwrap_or_default();
    let ignored = ignored_of(file, task);
    // As written (relative to the working directory), beside their joined form.
    let joined =
        |raw: &String| Some((raw.clone(), Output::new(join_normalised(working_dir, raw)?)));
    let inputs: Vec<(String, Output)> = if config.cache_key.is_some() {
        Vec::new()
    } else {
        config.inputs.iter().chain(&config.cache_config.extra_inputs).filter_map(joined).collect()
    };
    config
        .outputs
        .iter()
        .filter_map(joined)
        .filter(|(_, output)| !ignored.iter().any(|ignore| overlap(ignore, output)))
        .find_map(|(raw_output, output)| {
            let (raw_input, _) = inputs.iter().find(|(_, input)| overlap(input, &output))?;
            Some((raw_output, raw_input.clone()))
        })
}

/// A cached task whose inputs may include an output of a task it does not depend on.
pub(crate) struct StrayRead {
    pub(crate) reader: String,
    pub(crate) input: String,
    pub(crate) writer: String,
    pub(crate) output: String,
    /// Whether the writer depends on the reader (it runs after it); otherwise they may run at
    /// the same time.
    pub(crate) writer_after: bool,
}

/// For each cached task that does not depend (directly or not) on a task whose declared outputs
/// its inputs may include: the first such task, with that input and output (as joined to their
/// working directories). The reader's key then depends on what the other task last wrote (so it
/// changes, and the reader executes again, whenever that does).
pub(crate) fn reads_outputs_of_unrelated_tasks(file: &TaskFile, plan: &Plan) -> Vec<StrayRead> {
    let outputs = outputs_by_base(file, plan);
    let ancestors = plan.ancestors();
    plan.order
        .iter()
        .enumerate()
        .filter(|(_, name)| file.tasks[*name].cache)
        .filter_map(|(reader, name)| {
            let ignored = ignored_of(file, name);
            inputs_of(file, name).iter().find_map(|input| {
                let (writer, output) =
                    related(&outputs, &input.base).find(|(writer, output)| {
                        *writer != reader
                            && !ancestors.depends(reader, *writer)
                            && overlap(input, output)
                            && !ignored.iter().any(|ignore| overlap(ignore, output))
                    })?;
                Some(StrayRead {
                    reader: name.clone(),
                    input: shown(&input.pattern).to_owned(),
                    writer: plan.order[*writer].clone(),
                    output: shown(&output.pattern).to_owned(),
                    writer_after: ancestors.depends(*writer, reader),
                })
            })
        })
        .collect()
}

/// A project-relative pattern as a user reads it: the project root itself is `.`.
fn shown(pattern: &str) -> &str {
    if pattern.is_empty() { "." } else { pattern }
}

/// What an output pattern writes, in a sentence: the project root is "the whole project".
fn written(pattern: &str) -> &str {
    if pattern.is_empty() { "the whole project" } else { pattern }
}

/// Fails with every overlapping pair of concurrently runnable tasks.
///
/// Outputs are sorted by their literal base, so only outputs whose bases are prefix-related
/// (one under the other) are compared: near-linear for the usual one-directory-per-package
/// layout, instead of comparing every pair of tasks.
pub(crate) fn check(file: &TaskFile, plan: &Plan) -> Result<(), Error> {
    let outputs = outputs_by_base(file, plan);
    let ancestors = plan.ancestors();
    let mut reported = BTreeSet::new();
    let mut problems = Vec::new();
    for (index, (a, x)) in outputs.iter().enumerate() {
        // Every later base that starts with this one follows it directly in sorted order.
        for (b, y) in
            outputs[index + 1..].iter().take_while(|(_, y)| y.base.starts_with(x.base.as_str()))
        {
            let (first, second) = ((*a).min(*b), (*a).max(*b));
            let ordered = ancestors.depends(first, second) || ancestors.depends(second, first);
            if a == b || ordered || !overlap(x, y) {
                continue;
            }
            if reported.insert((first, second)) {
                let (name_a, name_b) = (&plan.order[first], &plan.order[second]);
                problems.push(format!(
                    "  tasks \"{name_a}\" and \"{name_b}\" may run at the same time but both write {} (outputs \"{}\" and \"{}\")",
                    written(if x.is_glob { &y.pattern } else { &x.pattern }),
                    shown(&x.pattern),
                    shown(&y.pattern)
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Plan(format!(
        "{}: overlapping outputs (make one task depend on the other, or give each its own output paths):\n{}",
        file.path.display(),
        problems.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(pattern: &str) -> Output {
        Output::new(pattern.to_owned())
    }

    #[test]
    fn overlaps_are_found_and_disjoint_patterns_pass() {
        let cases = [
            ("dist/**", "dist/app.js", true),
            ("dist", "dist/app.js", true),
            ("dist/**/*.js", "dist/**/*.css", false),
            ("dist/**/*.js", "dist/**", true),
            ("pkg-a/dist/**", "pkg-b/dist/**", false),
            ("out/a.txt", "out/b.txt", false),
            ("out/a.txt", "out/a.txt", true),
            ("*.txt", "report.txt", true),
            ("*.txt", "report.log", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(overlap(&output(a), &output(b)), expected, "{a} vs {b}");
            assert_eq!(overlap(&output(b), &output(a)), expected, "{b} vs {a}");
        }
    }
}

#[cfg(test)]
mod plan_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runner::RunOptions;
    use crate::task::{TaskConfig, TaskFileFormat};

    fn task(outputs: &[&str], dependencies: &[&str]) -> TaskConfig {
        TaskConfig {
            command: Some("true".into()),
            outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
            dependencies: dependencies.iter().map(|s| (*s).to_owned()).collect(),
            ..TaskConfig::default()
        }
    }

    fn file_and_plan(tasks: BTreeMap<String, TaskConfig>) -> (TaskFile, Result<Plan, Error>) {
        let file = TaskFile {
            path: "cuenv.toml".into(),
            root: "/p".into(),
            format: TaskFileFormat::Toml,
            tasks,
        };
        let plan = Plan::new(&file, &RunOptions::every_task());
        (file, plan)
    }

    fn checked(tasks: BTreeMap<String, TaskConfig>) -> Result<(), Error> {
        let (file, plan) = file_and_plan(tasks);
        check(&file, &plan?)
    }

    #[test]
    fn reads_of_upstream_outputs_are_found_through_the_whole_ancestry() {
        let with =
            |inputs: &[&str], outputs: &[&str], deps: &[&str], dir: Option<&str>| TaskConfig {
                inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
                working_dir: dir.map(str::to_owned),
                ..task(outputs, deps)
            };
        let tasks = BTreeMap::from([
            ("gen".to_owned(), with(&["schema/**"], &["gen/**"], &[], None)),
            ("lib".to_owned(), with(&["src/**"], &["dist/**"], &["gen"], Some("lib"))),
            // Reads the generated code two levels up: must wait.
            ("app".to_owned(), with(&["src/**", "gen/*.rs"], &["out"], &["lib"], None)),
            // Its own sources only: the key is known before its dependencies run.
            ("docs".to_owned(), with(&["docs/**"], &["site/**"], &["lib"], None)),
            // A cache key stands in for the inputs.
            (
                "pinned".to_owned(),
                TaskConfig { cache_key: Some("v1".into()), ..with(&["**"], &[], &["gen"], None) },
            ),
            // An input outside the project could be anything.
            ("outside".to_owned(), with(&["../../x"], &[], &["gen"], Some("lib"))),
            // Under an upstream output directory, and beside one whose name starts the same.
            ("under".to_owned(), with(&["lib/dist/x/*.js"], &[], &["lib"], None)),
            ("beside".to_owned(), with(&["lib/dist-old/**", "libs/**"], &[], &["lib"], None)),
        ]);
        let (file, plan) = file_and_plan(tasks);
        let plan = plan.unwrap();
        let reads = reads_upstream_outputs(&file, &plan);
        let of = |name: &str| reads[plan.order.iter().position(|n| n == name).unwrap()];
        assert!(of("app") && of("outside") && of("under"));
        assert!(!of("gen") && !of("lib") && !of("docs") && !of("pinned") && !of("beside"));
    }

    #[test]
    fn only_tasks_that_can_run_together_are_reported() {
        let tasks = BTreeMap::from([
            ("a".to_owned(), task(&["dist/**"], &[])),
            ("b".to_owned(), task(&["dist/*.txt"], &[])),
            ("c".to_owned(), task(&["dist/c.txt"], &["a"])),
            ("d".to_owned(), task(&["other/**"], &[])),
        ]);
        let message = checked(tasks).unwrap_err().to_string();
        assert!(message.contains("tasks \"a\" and \"b\""), "{message}");
        assert!(message.contains("tasks \"b\" and \"c\""), "{message}");
        assert!(!message.contains("\"a\" and \"c\""), "c depends on a: {message}");
        assert!(!message.contains("\"d\""), "{message}");
        let fine = BTreeMap::from([
            ("a".to_owned(), task(&["pkg-a/dist/**"], &[])),
            ("b".to_owned(), task(&["pkg-b/dist/**"], &[])),
        ]);
        assert!(checked(fine).is_ok());
    }
}
