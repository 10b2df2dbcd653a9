//! Reads user-written JSON objects field by field, collecting every problem instead of stopping at
//! the first one.
//!
//! Both the global cache config (JSON) and the task files (TOML, JSON, or `cue export` output) go
//! through this reader, so they share one error style: each problem names the field path and the
//! bad value, and an unknown field names the nearest valid one. serde's `deny_unknown_fields`
//! stops at the first error and lists every field instead of suggesting one, hence this module.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One thing wrong with a user-written file, located by its field path (`remote_cache.timeout_seconds`,
/// `tasks.build.inputs[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, or an empty string for the whole document.
    pub field: String,
    /// What is wrong, including the bad value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Problems collected while reading one document.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into() });
    }
}

/// A view of one JSON object at a known path. Every `take_*` call marks its key as known;
/// [`Fields::finish`] reports the keys nobody asked for.
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Views `value` as an object at `path`; reports a problem and returns `None` if it is not one.
    pub(crate) fn new(
        path: impl Into<String>,
        value: &'a Value,
        problems: &mut Problems,
    ) -> Option<Self> {
        let path = path.into();
        match value {
            Value::Object(map) => Some(Fields { path, map, known: Vec::new() }),
            other => {
                problems.push(path, format!("expected a table/object, found {}", describe(other)));
                None
            }
        }
    }

    /// The path of a field of this object.
    pub(crate) fn child(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// The raw value of `key`, marking it as known. `null` reads as absent.
    pub(crate) fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Whether `key` is present (and not `null`), without marking it as known.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|value| !value.is_null())
    }

    pub(crate) fn take_bool(&mut self, key: &'static str, problems: &mut Problems) -> Option<bool> {
        let value = self.take(key)?;
        value.as_bool().or_else(|| self.wrong_type(key, "a boolean", value, problems))
    }

    pub(crate) fn take_string(
        &mut self,
        key: &'static str,
        problems: &mut Problems,
    ) -> Option<String> {
        let value = self.take(key)?;
        match value {
            Value::String(s) => Some(s.clone()),
            other => self.wrong_type(key, "a string", other, problems),
        }
    }

    pub(crate) fn take_u64(&mut self, key: &'static str, problems: &mut Problems) -> Option<u64> {
        let value = self.take(key)?;
        value.as_u64().or_else(|| self.wrong_type(key, "a non-negative integer", value, problems))
    }

    /// A list of strings; a bad element is reported with its index and skipped.
    pub(crate) fn take_string_list(
        &mut self,
        key: &'static str,
        problems: &mut Problems,
    ) -> Option<Vec<String>> {
        let value = self.take(key)?;
        let Value::Array(items) = value else {
            return self.wrong_type(key, "a list of strings", value, problems);
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => problems.push(
                    format!("{}[{index}]", self.child(key)),
                    format!("expected a string, found {}", describe(other)),
                ),
            }
        }
        Some(out)
    }

    /// A table of string values (numbers and booleans are accepted and written as text).
    pub(crate) fn take_string_map(
        &mut self,
        key: &'static str,
        problems: &mut Problems,
    ) -> Option<BTreeMap<String, String>> {
        let value = self.take(key)?;
        let Value::Object(map) = value else {
            return self.wrong_type(key, "a table of strings", value, problems);
        };
        let mut out = BTreeMap::new();
        for (name, item) in map {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    problems.push(
                        join_path(&self.child(key), name),
                        format!("expected a string, found {}", describe(other)),
                    );
                    continue;
                }
            };
            out.insert(name.clone(), text);
        }
        Some(out)
    }

    /// A nested object as its own `Fields`.
    pub(crate) fn take_object(
        &mut self,
        key: &'static str,
        problems: &mut Problems,
    ) -> Option<Fields<'a>> {
        let value = self.take(key)?;
        Fields::new(self.child(key), value, problems)
    }

    /// Reports a type mismatch for `key` and returns `None`, so callers can write
    /// `value.as_x().or_else(|| self.wrong_type(..))`.
    pub(crate) fn wrong_type<T>(
        &self,
        key: &str,
        expected: &str,
        found: &Value,
        problems: &mut Problems,
    ) -> Option<T> {
        problems.push(self.child(key), format!("expected {expected}, found {}", describe(found)));
        None
    }

    /// Reports every key that no `take*` call asked for, naming the nearest known field.
    pub(crate) fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let message = match nearest(key, &self.known) {
                Some(near) => format!("unknown field `{key}`; did you mean `{near}`?"),
                None => format!("unknown field `{key}`; valid fields: {}", self.known.join(", ")),
            };
            problems.push(self.child(key), message);
        }
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// A short description of a JSON value for error messages: its type and, for scalars, the value.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a table".to_owned(),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
/// Case differences and `snake_case`/`camelCase` spellings of the same name count as close.
pub(crate) fn nearest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let folded = fold(word);
    candidates
        .iter()
        .map(|candidate| (edit_distance(&folded, &fold(candidate)), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(word.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn fold(word: &str) -> String {
    word.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// Levenshtein distance over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_and_case_variants() {
        let known = ["max_size", "cache_dir", "enabled"];
        assert_eq!(nearest("max_sise", &known), Some("max_size"));
        assert_eq!(nearest("maxSize", &known), Some("max_size"));
        assert_eq!(nearest("enabeld", &known), Some("enabled"));
        assert_eq!(nearest("completely_different", &known), None);
    }

    #[test]
    fn finish_reports_unknown_fields_with_suggestion() {
        let value: Value = serde_json::json!({"enabled": true, "enabeld": false});
        let mut problems = Problems::default();
        let mut fields = Fields::new("", &value, &mut problems).unwrap();
        assert_eq!(fields.take_bool("enabled", &mut problems), Some(true));
        fields.finish(&mut problems);
        assert_eq!(problems.0.len(), 1);
        assert_eq!(problems.0[0].field, "enabeld");
        assert!(
            problems.0[0].message.contains("did you mean `enabled`"),
            "{}",
            problems.0[0].message
        );
    }

    #[test]
    fn wrong_types_name_path_and_value() {
        let value: Value = serde_json::json!({"inputs": ["a", 3], "cache": "yes"});
        let mut problems = Problems::default();
        let mut fields = Fields::new("tasks.build", &value, &mut problems).unwrap();
        assert_eq!(fields.take_string_list("inputs", &mut problems), Some(vec!["a".to_owned()]));
        assert_eq!(fields.take_bool("cache", &mut problems), None);
        let text: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "tasks.build.inputs[1]: expected a string, found number 3",
                "tasks.build.cache: expected a boolean, found string \"yes\"",
            ]
        );
    }
}
