//! Finding a task file on disk and turning it into one JSON document, whatever its syntax.
//!
//! TOML is converted to JSON and `env.cue` is evaluated by the `cue` binary, so a single reader
//! (`parse.rs`) serves all three formats and they report problems identically.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{TaskFile, TaskFileError, TaskFileFormat, graph, parse};
use crate::fields::{Problem, Problems};

/// The real path of `path` (symlinks and `..` resolved), so a project has one root, and one
/// stat cache, however it is reached. A path that cannot be resolved (it does not exist) is made
/// absolute as written, and reading it reports the problem.
pub(super) fn absolute(path: &Path) -> Result<PathBuf, TaskFileError> {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|source| TaskFileError::Io { path: path.to_path_buf(), source })
}

/// The task file of the nearest directory, from `start_dir` upwards, that holds one.
pub(super) fn find(start_dir: &Path) -> Result<(PathBuf, TaskFileFormat), TaskFileError> {
    let start = absolute(start_dir)?;
    for dir in start.ancestors() {
        let found: Vec<TaskFileFormat> = TaskFileFormat::ALL
            .into_iter()
            .filter(|format| dir.join(format.file_name()).is_file())
            .collect();
        match found.as_slice() {
            [] => continue,
            [format] => return Ok((dir.join(format.file_name()), *format)),
            several => {
                let names = several.iter().map(|format| format.file_name()).collect();
                return Err(TaskFileError::Ambiguous { dir: dir.to_path_buf(), names });
            }
        }
    }
    let names = TaskFileFormat::ALL.iter().map(|format| format.file_name()).collect();
    Err(TaskFileError::NotFound { start, names })
}

/// Reads, parses and checks the task file at the absolute `path`.
pub(super) fn read(
    path: PathBuf,
    format: TaskFileFormat,
    path_env: Option<&OsStr>,
) -> Result<TaskFile, TaskFileError> {
    match format {
        TaskFileFormat::Cue => {
            let root = root_of(&path);
            let document = cue_export(&path, &root, path_env)?;
            from_document(path, format, &document)
        }
        TaskFileFormat::Toml | TaskFileFormat::Json => {
            let text = read_text(&path)?;
            from_text(path, format, &text)
        }
    }
}

/// The directory holding `path`.
fn root_of(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Parses and checks TOML or JSON `text` as if read from `path`.
pub(super) fn from_text(
    path: PathBuf,
    format: TaskFileFormat,
    text: &str,
) -> Result<TaskFile, TaskFileError> {
    let document = match format {
        TaskFileFormat::Toml => toml_document(text),
        TaskFileFormat::Json | TaskFileFormat::Cue => json_document(text),
    };
    match document {
        Ok(document) => from_document(path, format, &document),
        Err(message) => Err(TaskFileError::Invalid {
            file: path,
            problems: vec![Problem { field: String::new(), message }],
        }),
    }
}

/// Reads and checks the JSON form of a task file.
pub(super) fn from_document(
    path: PathBuf,
    format: TaskFileFormat,
    document: &Value,
) -> Result<TaskFile, TaskFileError> {
    let mut problems = Problems::default();
    let tasks = parse::document(document, format, &mut problems);
    graph::check(&tasks, &mut problems);
    if !problems.0.is_empty() {
        return Err(TaskFileError::Invalid { file: path, problems: problems.0 });
    }
    Ok(TaskFile { root: root_of(&path), path, format, tasks })
}

fn read_text(path: &Path) -> Result<String, TaskFileError> {
    std::fs::read_to_string(path)
        .map_err(|source| TaskFileError::Io { path: path.to_path_buf(), source })
}

/// Parses TOML text; a syntax error becomes a message with its line and column.
fn toml_document(text: &str) -> Result<Value, String> {
    let table = text.parse::<toml::Table>().map_err(|error| {
        let message = error.message().trim();
        match error.span().map(|span| line_column(text, span.start)) {
            Some((line, column)) => {
                format!("invalid TOML at line {line}, column {column}: {message}")
            }
            None => format!("invalid TOML: {message}"),
        }
    })?;
    Ok(toml_to_json(toml::Value::Table(table)))
}

/// Parses JSON text; serde_json's message already names the line and column. A leading byte
/// order mark, as some Windows editors write, is skipped.
fn json_document(text: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
    (line, column)
}

/// TOML data as JSON; datetimes become their text, non-finite floats their spelling.
fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map_or_else(|| Value::String(f.to_string()), Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table.into_iter().map(|(key, value)| (key, toml_to_json(value))).collect(),
        ),
    }
}

/// Evaluates a CUE file with `cue export --out json FILE`, run in `root`, and parses the output.
fn cue_export(path: &Path, root: &Path, path_env: Option<&OsStr>) -> Result<Value, TaskFileError> {
    let cue_error = |message: String| TaskFileError::Cue { file: path.to_path_buf(), message };
    let Some(cue) = find_executable("cue", path_env) else {
        return Err(cue_error(
            "reading a CUE task file needs the `cue` binary, but none was found on PATH; \
             install CUE, or write the tasks in cuenv.toml or cuenv.json instead"
                .to_owned(),
        ));
    };
    let file_name = path.file_name().unwrap_or(path.as_os_str());
    let mut command = Command::new(&cue);
    command.args(["export", "--out", "json"]).arg(file_name).current_dir(root);
    command.stdin(Stdio::null());
    if let Some(path_env) = path_env {
        command.env("PATH", path_env);
    }
    let output = command
        .output()
        .map_err(|error| cue_error(format!("cannot run {}: {error}", cue.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(cue_error(format!(
            "`cue export` failed ({}):\n{}",
            output.status,
            stderr.trim_end()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| cue_error(format!("`cue export` printed invalid JSON: {error}")))
}

/// The first executable file named `name` in the directories of `path_env` (a `PATH` value).
/// Empty entries are skipped rather than read as the current directory.
pub(crate) fn find_executable(name: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_env?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}
