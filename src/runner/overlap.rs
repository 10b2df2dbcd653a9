//! Refuses a run in which two tasks that may run at the same time declare outputs that can name
//! the same file: they would overwrite each other, and their cached results would disagree.
//!
//! The check is on the globs, before anything runs. Two patterns are disjoint when their literal
//! base directories are unrelated, when a literal path does not match the other glob, or when
//! both end in different literal suffixes (`dist/**/*.js` and `dist/**/*.css`); otherwise they
//! are reported as overlapping.

use globset::GlobBuilder;

use super::plan::Plan;
use crate::error::Error;
use crate::task::TaskFile;

/// An output pattern joined to its task's working directory.
struct Output {
    pattern: String,
    base: String,
    glob: Option<globset::GlobMatcher>,
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}'])
}

fn outputs_of(file: &TaskFile, task: &str) -> Vec<Output> {
    let config = &file.tasks[task];
    let working_dir = config.working_dir.clone().unwrap_or_default();
    config
        .outputs
        .iter()
        .map(|raw| {
            let pattern = normalise(&working_dir, raw);
            let literal: Vec<&str> = pattern.split('/').take_while(|part| !is_glob(part)).collect();
            let glob = is_glob(&pattern)
                .then(|| {
                    GlobBuilder::new(&pattern)
                        .literal_separator(true)
                        .build()
                        .ok()
                        .map(|g| g.compile_matcher())
                })
                .flatten();
            let base = if glob.is_some() { literal.join("/") } else { pattern.clone() };
            Output { pattern, base, glob }
        })
        .collect()
}

fn normalise(working_dir: &str, pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in working_dir.split('/').chain(pattern.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
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
    match (&a.glob, &b.glob) {
        (None, None) => true,
        (None, Some(glob)) => glob.is_match(&a.pattern) || within(&b.base, &a.pattern),
        (Some(glob), None) => glob.is_match(&b.pattern) || within(&a.base, &b.pattern),
        (Some(_), Some(_)) => {
            let (x, y) = (literal_suffix(&a.pattern), literal_suffix(&b.pattern));
            x.is_empty() || y.is_empty() || x.ends_with(y) || y.ends_with(x)
        }
    }
}

/// Fails with every overlapping pair of concurrently runnable tasks.
pub(crate) fn check(file: &TaskFile, plan: &Plan) -> Result<(), Error> {
    let outputs: std::collections::BTreeMap<&str, Vec<Output>> =
        plan.order.iter().map(|name| (name.as_str(), outputs_of(file, name))).collect();
    let mut problems = Vec::new();
    for (a, b) in plan.concurrent_pairs() {
        for x in &outputs[a] {
            if let Some(y) = outputs[b].iter().find(|y| overlap(x, y)) {
                problems.push(format!(
                    "  tasks \"{a}\" and \"{b}\" may run at the same time but both write {} (outputs \"{}\" and \"{}\")",
                    if x.glob.is_none() { &x.pattern } else { &y.pattern },
                    x.pattern,
                    y.pattern
                ));
                break;
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
        let glob = is_glob(pattern)
            .then(|| {
                GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .ok()
                    .map(|g| g.compile_matcher())
            })
            .flatten();
        let literal: Vec<&str> = pattern.split('/').take_while(|part| !is_glob(part)).collect();
        let base = if glob.is_some() { literal.join("/") } else { pattern.to_owned() };
        Output { pattern: pattern.to_owned(), base, glob }
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
