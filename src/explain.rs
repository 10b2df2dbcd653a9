//! Why a task misses: the differences between the key manifest it has now and the one its last
//! stored result was made with (`cuenv cache explain`).

use std::collections::BTreeMap;
use std::fmt;

use cuenv_actors::key_gen::{InputFile, InputPart, KeyManifest};
use serde::Serialize;

/// How one named thing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Present now, not before.
    Added,
    /// Present before, not now.
    Removed,
    /// Present in both, different.
    Changed,
}

/// One difference between two manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// An environment variable that reaches the key.
    Env {
        /// Its name.
        name: String,
        /// How it changed.
        change: Change,
    },
    /// An input file.
    Input {
        /// Its path.
        path: String,
        /// How it changed.
        change: Change,
        /// What about it changed (content, mode).
        detail: String,
    },
    /// A dependency's digest.
    Dependency {
        /// The dependency.
        name: String,
        /// How it changed.
        change: Change,
    },
    /// Any other key field (command, args, outputs, working dir, custom components, version,
    /// platform, cache key).
    Config {
        /// The field.
        field: String,
        /// Before.
        before: String,
        /// Now.
        now: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Env { name, change } => write!(f, "env var {name}: {}", word(change)),
            Difference::Input { path, change, detail } => {
                write!(f, "input {path}: {}", word(change))?;
                if detail.is_empty() { Ok(()) } else { write!(f, " ({detail})") }
            }
            Difference::Dependency { name, change } => {
                write!(f, "dependency {name}: {}", word(change))
            }
            Difference::Config { field, before, now } => {
                write!(f, "{field}: {before:?} -> {now:?}")
            }
        }
    }
}

fn word(change: &Change) -> &'static str {
    match change {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Changed => "changed",
    }
}

/// The names added or changed (in `now`'s order), then those removed.
fn diff_maps<K: Ord + Clone, V: PartialEq>(
    before: &BTreeMap<K, V>,
    now: &BTreeMap<K, V>,
) -> Vec<(K, Change)> {
    let mut out = Vec::new();
    for (name, value) in now {
        match before.get(name) {
            None => out.push((name.clone(), Change::Added)),
            Some(old) if old != value => out.push((name.clone(), Change::Changed)),
            Some(_) => {}
        }
    }
    out.extend(
        before
            .keys()
            .filter(|name| !now.contains_key(*name))
            .map(|name| (name.clone(), Change::Removed)),
    );
    out
}

fn input_detail(before: &InputFile, now: &InputFile) -> String {
    let mut parts = Vec::new();
    if before.hash != now.hash {
        parts.push("content".to_owned());
    }
    if before.kind != now.kind {
        parts.push(format!("{:?} -> {:?}", before.kind, now.kind).to_lowercase());
    }
    parts.join(", ")
}

fn inputs(before: &KeyManifest, now: &KeyManifest, out: &mut Vec<Difference>) {
    match (&before.inputs, &now.inputs) {
        (InputPart::Files(old), InputPart::Files(new)) => {
            let old: BTreeMap<&str, &InputFile> =
                old.iter().map(|f| (f.path.as_str(), f)).collect();
            let new: BTreeMap<&str, &InputFile> =
                new.iter().map(|f| (f.path.as_str(), f)).collect();
            for (path, change) in diff_maps(&old, &new) {
                let detail = match change {
                    Change::Changed => input_detail(old[path], new[path]),
                    Change::Added | Change::Removed => String::new(),
                };
                out.push(Difference::Input { path: path.to_owned(), change, detail });
            }
        }
        (old, new) if old != new => out.push(Difference::Config {
            field: "inputs".to_owned(),
            before: describe_inputs(old),
            now: describe_inputs(new),
        }),
        _ => {}
    }
}

fn describe_inputs(part: &InputPart) -> String {
    match part {
        InputPart::Files(files) => format!("{} input files", files.len()),
        InputPart::CacheKey(key) => format!("cacheKey {key}"),
    }
}

/// Every difference from `before` to `now`, grouped: config fields, env, inputs, dependencies.
pub fn diff(before: &KeyManifest, now: &KeyManifest) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut field = |name: &str, old: String, new: String| {
        if old != new {
            out.push(Difference::Config { field: name.to_owned(), before: old, now: new });
        }
    };
    field("format", before.format.to_string(), now.format.to_string());
    field("task", before.task.clone(), now.task.clone());
    field("command", before.command.clone(), now.command.clone());
    field("args", before.args.join(" "), now.args.join(" "));
    field("workingDir", before.working_dir.clone(), now.working_dir.clone());
    field("outputs", before.outputs.join(", "), now.outputs.join(", "));
    field("customKeyComponents", format!("{:?}", before.custom), format!("{:?}", now.custom));
    field("cuenv version", before.cuenv_version.clone(), now.cuenv_version.clone());
    field("platform", before.platform.clone(), now.platform.clone());
    out.extend(
        diff_maps(&before.env, &now.env)
            .into_iter()
            .map(|(name, change)| Difference::Env { name, change }),
    );
    inputs(before, now, &mut out);
    out.extend(
        diff_maps(&before.dependencies, &now.dependencies)
            .into_iter()
            .map(|(name, change)| Difference::Dependency { name, change }),
    );
    out
}
