//! Reads the JSON form of a task file (parsed JSON, converted TOML, or `cue export` output)
//! into [`TaskConfig`]s, checking each field on the way.
//!
//! Everything here works one task at a time; checks that need the whole file (dependencies,
//! cycles) live in `graph.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use cuenv_actors::key_gen::join_normalised;
use serde_json::Value;

use super::model::{TaskCacheConfig, TaskConfig, TaskFileFormat};
use super::units;
use crate::fields::{Fields, Problems, describe, join_path};

/// The tasks of a whole document. A TOML or JSON file may hold only `tasks`; CUE output may
/// hold other cuenv settings (`env`, `hooks`, ...), which are ignored here.
pub(super) fn document(
    value: &Value,
    format: TaskFileFormat,
    problems: &mut Problems,
) -> BTreeMap<String, TaskConfig> {
    let Some(mut root) = Fields::new("", value, problems) else {
        return BTreeMap::new();
    };
    let tasks = root.take("tasks");
    if format != TaskFileFormat::Cue {
        root.finish(problems);
    }
    match tasks {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => {
            map.iter().map(|(name, value)| (name.clone(), task(name, value, problems))).collect()
        }
        Some(other) => {
            problems.push("tasks", format!("expected a table of tasks, found {}", describe(other)));
            BTreeMap::new()
        }
    }
}

/// One task; a task that is not a table reads as the default so the others are still checked.
fn task(name: &str, value: &Value, problems: &mut Problems) -> TaskConfig {
    check_name(name, problems);
    let path = join_path("tasks", name);
    let Some(mut fields) = Fields::new(path.clone(), value, problems) else {
        return TaskConfig::default();
    };
    let working_dir = working_dir(&mut fields, problems);
    let base = working_dir.as_deref().unwrap_or("");
    let task = TaskConfig {
        description: fields.take_string("description", problems),
        command: fields.take_string("command", problems),
        script: fields.take_string("script", problems),
        inputs: glob_list(&mut fields, "inputs", base, problems),
        outputs: glob_list(&mut fields, "outputs", base, problems),
        dependencies: fields.take_string_list("dependencies", problems).unwrap_or_default(),
        cache: fields.take_bool("cache", problems).unwrap_or(true),
        cache_key: fields.take_string("cacheKey", problems),
        cache_config: fields
            .take_object("cacheConfig", problems)
            .map(|config| cache_config(config, base, problems))
            .unwrap_or_default(),
        working_dir,
    };
    match (fields.has("command"), fields.has("script")) {
        (true, true) => {
            problems.push(path, format!("task {name:?} sets both `command` and `script`; keep one"))
        }
        (false, false) => {
            problems.push(path, format!("task {name:?} has neither `command` nor `script`"))
        }
        _ => {}
    }
    fields.finish(problems);
    task
}

/// Task names appear on command lines and in dependency lists, so they stay words a shell
/// takes unquoted; `@` and `/` are in for scoped package names (`@acme/ui:build`).
fn check_name(name: &str, problems: &mut Problems) {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '@' | '/');
    if name.is_empty() {
        problems.push("tasks", "invalid task name \"\": a task name must not be empty");
    } else if !name.chars().all(allowed) {
        problems.push(
            "tasks",
            format!(
                "invalid task name {name:?}: use only letters, digits, '_', '.', ':', '-', '@' and '/'"
            ),
        );
    }
}

fn cache_config(mut fields: Fields<'_>, base: &str, problems: &mut Problems) -> TaskCacheConfig {
    let config = TaskCacheConfig {
        env_include: fields.take_string_list("envInclude", problems),
        env_exclude: fields.take_string_list("envExclude", problems),
        extra_inputs: glob_list(&mut fields, "extraInputs", base, problems),
        ignore_inputs: glob_list(&mut fields, "ignoreInputs", base, problems),
        custom_key_components: fields
            .take_string_map("customKeyComponents", problems)
            .unwrap_or_default(),
        timeout: with_unit(&mut fields, "timeout", units::parse_duration_secs, problems),
        max_size: with_unit(&mut fields, "maxSize", crate::config::parse_size, problems),
    };
    fields.finish(problems);
    config
}

/// A non-negative integer, or a string read by `parse` (`"90s"`, `"10MiB"`).
fn with_unit(
    fields: &mut Fields<'_>,
    key: &'static str,
    parse: fn(&str) -> Result<u64, String>,
    problems: &mut Problems,
) -> Option<u64> {
    let value = fields.take(key)?;
    match value {
        Value::String(text) => {
            parse(text).map_err(|message| problems.push(fields.child(key), message)).ok()
        }
        Value::Number(number) => number
            .as_u64()
            .or_else(|| fields.wrong_type(key, "a non-negative integer", value, problems)),
        other => fields.wrong_type(key, "an integer or a string with a unit", other, problems),
    }
}

/// A list of globs relative to `base` (the task's working directory, `""` for the root); each
/// bad entry is reported at its own index.
fn glob_list(
    fields: &mut Fields<'_>,
    key: &'static str,
    base: &str,
    problems: &mut Problems,
) -> Vec<String> {
    let path = fields.child(key);
    let Some(value) = fields.take(key) else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        return fields.wrong_type(key, "a list of strings", value, problems).unwrap_or_default();
    };
    let mut globs = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = format!("{path}[{index}]");
        match item {
            Value::String(glob) => match check_glob(glob, base) {
                Ok(glob) => globs.push(glob),
                Err(message) => problems.push(at, message),
            },
            other => problems.push(at, format!("expected a string, found {}", describe(other))),
        }
    }
    globs
}

/// A glob that stays inside the project when joined to `base`, with any leading `./` removed.
/// `..` is allowed as long as it does not climb above the root (`../shared/**` from a
/// package's working directory).
pub(super) fn check_glob(glob: &str, base: &str) -> Result<String, String> {
    if glob.is_empty() {
        return Err("empty glob".to_owned());
    }
    if glob.starts_with('/') || Path::new(glob).is_absolute() {
        return Err(format!(
            "absolute path {glob:?} is not allowed; globs are relative to the project"
        ));
    }
    if glob.split('/').any(|part| part == "..") && normalize_dir(&format!("{base}/{glob}")).is_err()
    {
        return Err(format!("{glob:?} leaves the project root"));
    }
    if let Err(error) = globset::Glob::new(glob) {
        return Err(format!("invalid glob {glob:?}: {}", error.kind()));
    }
    let mut glob = glob;
    while let Some(rest) = glob.strip_prefix("./").filter(|rest| !rest.is_empty()) {
        glob = rest.trim_start_matches('/');
    }
    Ok(glob.to_owned())
}

fn working_dir(fields: &mut Fields<'_>, problems: &mut Problems) -> Option<String> {
    let raw = fields.take_string("workingDir", problems)?;
    normalize_dir(&raw).unwrap_or_else(|message| {
        problems.push(fields.child("workingDir"), message);
        None
    })
}

/// `dir` with `.` and empty parts dropped and `..` applied; `None` for the root itself.
pub(super) fn normalize_dir(dir: &str) -> Result<Option<String>, String> {
    if dir.starts_with('/') || Path::new(dir).is_absolute() {
        return Err(format!(
            "absolute path {dir:?} is not allowed; use a path relative to the project root"
        ));
    }
    match join_normalised("", dir) {
        Some(normal) if normal.is_empty() => Ok(None),
        Some(normal) => Ok(Some(normal)),
        None => Err(format!("{dir:?} leaves the project root")),
    }
}
