//! Unit tests for task-file reading and checking, run on in-memory text so every message can be
//! asserted exactly; `tests/it/task_file.rs` covers discovery and the files on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::load::{find_executable, from_document, from_text};
use super::parse::{check_glob, normalize_dir};
use super::units::parse_duration_secs;
use super::*;

fn toml(text: &str) -> Result<TaskFile, TaskFileError> {
    from_text(PathBuf::from("/p/cuenv.toml"), TaskFileFormat::Toml, text)
}

fn json(text: &str) -> Result<TaskFile, TaskFileError> {
    from_text(PathBuf::from("/p/cuenv.json"), TaskFileFormat::Json, text)
}

/// The problems of an invalid file, as printed.
fn problems(result: Result<TaskFile, TaskFileError>) -> Vec<String> {
    match result {
        Err(TaskFileError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected an invalid task file, got {other:?}"),
    }
}

const FULL_TOML: &str = r#"
[tasks.build]
description = "Build it"
command = "cargo build"
inputs = ["./src/**/*.rs", "Cargo.toml"]
outputs = ["target/out"]
dependencies = ["gen"]
cache = false
cacheKey = "v1"
workingDir = "./crates//app/"

[tasks.build.cacheConfig]
envInclude = ["CARGO_*"]
envExclude = ["HOME"]
extraInputs = ["build.rs"]
ignoreInputs = ["**/*.md"]
customKeyComponents = { arch = "x86_64", level = 3 }
timeout = "5m"
maxSize = "10MiB"

[tasks.gen]
script = """
echo one
echo two
"""
"#;

const FULL_JSON: &str = r#"{"tasks": {
  "build": {
    "description": "Build it", "command": "cargo build",
    "inputs": ["./src/**/*.rs", "Cargo.toml"], "outputs": ["target/out"],
    "dependencies": ["gen"], "cache": false, "cacheKey": "v1", "workingDir": "crates/app",
    "cacheConfig": {
      "envInclude": ["CARGO_*"], "envExclude": ["HOME"], "extraInputs": ["build.rs"],
      "ignoreInputs": ["**/*.md"], "customKeyComponents": {"arch": "x86_64", "level": "3"},
      "timeout": 300, "maxSize": 10485760
    }
  },
  "gen": {"script": "echo one\necho two\n"}
}}"#;

fn expected_build() -> TaskConfig {
    TaskConfig {
        description: Some("Build it".into()),
        command: Some("cargo build".into()),
        script: None,
        inputs: vec!["src/**/*.rs".into(), "Cargo.toml".into()],
        outputs: vec!["target/out".into()],
        dependencies: vec!["gen".into()],
        cache: false,
        cache_key: Some("v1".into()),
        cache_config: TaskCacheConfig {
            env_include: Some(vec!["CARGO_*".into()]),
            env_exclude: Some(vec!["HOME".into()]),
            extra_inputs: vec!["build.rs".into()],
            ignore_inputs: vec!["**/*.md".into()],
            custom_key_components: BTreeMap::from([
                ("arch".into(), "x86_64".into()),
                ("level".into(), "3".into()),
            ]),
            timeout: Some(300),
            max_size: Some(10 * 1024 * 1024),
        },
        working_dir: Some("crates/app".into()),
    }
}

#[test]
fn every_field_is_read_and_both_formats_agree() {
    let from_toml = toml(FULL_TOML).unwrap();
    let from_json = json(FULL_JSON).unwrap();
    assert_eq!(from_toml.tasks["build"], expected_build());
    assert_eq!(from_toml.tasks, from_json.tasks);
    assert_eq!(from_toml.tasks["gen"].shell_text(), "echo one\necho two\n");
    assert_eq!(from_toml.root, Path::new("/p"));
    assert_eq!(from_toml.format, TaskFileFormat::Toml);
    assert_eq!(from_json.format, TaskFileFormat::Json);
}

#[test]
fn absent_fields_take_defaults_with_cache_on() {
    let file = toml("[tasks.t]\ncommand = \"true\"\n").unwrap();
    let expected = TaskConfig { command: Some("true".into()), ..TaskConfig::default() };
    assert_eq!(file.tasks["t"], expected);
    assert!(TaskConfig::default().cache);
    assert_eq!(TaskCacheConfig::default().timeout, None);
    assert!(toml("").unwrap().tasks.is_empty());
}

#[test]
fn which_shell_texts_read_their_arguments() {
    let reads = |text: &str| {
        TaskConfig { command: Some(text.to_owned()), ..TaskConfig::default() }.reads_arguments()
    };
    for text in [
        "cargo test \"$@\"",
        "echo $*",
        "echo \"${1:-none}\"",
        "test $# -gt 0 && echo $2",
        "while getopts v o; do :; done",
        "shift; echo ok",
        "cd x && . ./env.sh",
        "source ./run.sh",
    ] {
        assert!(reads(text), "{text}");
    }
    for text in ["cargo test", "echo $HOME ${PATH}", "echo 1 2 3 > $OUT", "echo 'costs $'"] {
        assert!(!reads(text), "{text}");
    }
}

#[test]
fn shell_text_and_working_dir_path() {
    let task = expected_build();
    assert_eq!(task.shell_text(), "cargo build");
    assert_eq!(task.working_dir_path(Path::new("/p")), Path::new("/p/crates/app"));
    assert_eq!(TaskConfig::default().working_dir_path(Path::new("/p")), Path::new("/p"));
    assert_eq!(TaskConfig::default().shell_text(), "");
}

#[test]
fn serializes_with_camel_case_names() {
    let value = serde_json::to_value(expected_build()).unwrap();
    assert_eq!(value["cacheKey"], "v1");
    assert_eq!(value["workingDir"], "crates/app");
    assert_eq!(value["cacheConfig"]["maxSize"], 10 * 1024 * 1024);
    assert_eq!(value["cacheConfig"]["customKeyComponents"]["arch"], "x86_64");
}

#[test]
fn durations_use_seconds_minutes_hours() {
    assert_eq!(parse_duration_secs("90"), Ok(90));
    assert_eq!(parse_duration_secs("90s"), Ok(90));
    assert_eq!(parse_duration_secs("5m"), Ok(300));
    assert_eq!(parse_duration_secs("2h"), Ok(7200));
    assert_eq!(
        parse_duration_secs("5 days").unwrap_err(),
        "invalid duration \"5 days\": expected whole seconds, or a number with unit s, m or h"
    );
}

#[test]
fn working_dirs_are_normalised_and_kept_inside() {
    assert_eq!(normalize_dir("./x/"), Ok(Some("x".into())));
    assert_eq!(normalize_dir("a/./b/../c"), Ok(Some("a/c".into())));
    assert_eq!(normalize_dir("a/.."), Ok(None));
    assert_eq!(normalize_dir("."), Ok(None));
    assert_eq!(normalize_dir("a/../..").unwrap_err(), "\"a/../..\" leaves the project root");
    assert_eq!(
        normalize_dir("/abs").unwrap_err(),
        "absolute path \"/abs\" is not allowed; use a path relative to the project root"
    );
}

#[test]
fn globs_stay_inside_the_project() {
    assert_eq!(check_glob("./src/**", ""), Ok("src/**".into()));
    assert_eq!(check_glob("././a", ""), Ok("a".into()));
    assert_eq!(check_glob("a/..b", ""), Ok("a/..b".into()));
    assert_eq!(check_glob("../shared/**", "packages/a"), Ok("../shared/**".into()));
    assert_eq!(
        check_glob("../../../x", "packages/a").unwrap_err(),
        "\"../../../x\" leaves the project root"
    );
    assert_eq!(check_glob("", "").unwrap_err(), "empty glob");
    assert_eq!(check_glob("x/../../y", "").unwrap_err(), "\"x/../../y\" leaves the project root");
    assert_eq!(
        check_glob("a/[b", "").unwrap_err(),
        "invalid glob \"a/[b\": unclosed character class; missing ']'"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        tasks.a.command = "x"
        tasks.a.dependencies = ["b", "c", "c"]
        tasks.b.command = "x"
        tasks.b.script = "y"
        tasks.c.description = "nothing to run"
        tasks.d.command = "x"
        tasks.d.inputs = ["ok", 3, "/etc/passwd", "../up", "[x"]
        tasks.d.outputs = "out"
        tasks.d.workingDir = "a/../.."
        tasks.d.cache = "yes"
    "#;
    assert_eq!(
        problems(toml(text)),
        [
            "tasks.b: task \"b\" sets both `command` and `script`; keep one",
            "tasks.c: task \"c\" has neither `command` nor `script`",
            "tasks.d.workingDir: \"a/../..\" leaves the project root",
            "tasks.d.inputs[1]: expected a string, found number 3",
            "tasks.d.inputs[2]: absolute path \"/etc/passwd\" is not allowed; globs are relative to the project",
            "tasks.d.inputs[3]: \"../up\" leaves the project root",
            "tasks.d.inputs[4]: invalid glob \"[x\": unclosed character class; missing ']'",
            "tasks.d.outputs: expected a list of strings, found string \"out\"",
            "tasks.d.cache: expected a boolean, found string \"yes\"",
        ]
    );
}

#[test]
fn unknown_dependencies_with_and_without_suggestion() {
    let text = r#"
        tasks.build.command = "x"
        tasks.test.command = "x"
        tasks.test.dependencies = ["buld", "zzzzzzzz", "test2"]
    "#;
    assert_eq!(
        problems(toml(text)),
        [
            "tasks.test.dependencies: task \"test\" depends on unknown task \"buld\"; did you mean \"build\"?",
            "tasks.test.dependencies: task \"test\" depends on unknown task \"zzzzzzzz\"",
            "tasks.test.dependencies: task \"test\" depends on unknown task \"test2\"",
        ]
    );
}

#[test]
fn cycles_are_printed_once_from_the_smallest_task() {
    let text = r#"
        tasks.c.command = "x"
        tasks.c.dependencies = ["a"]
        tasks.a.command = "x"
        tasks.a.dependencies = ["b"]
        tasks.b.command = "x"
        tasks.b.dependencies = ["c", "d"]
        tasks.d.command = "x"
        tasks.d.dependencies = ["d"]
        tasks.x.command = "x"
        tasks.x.dependencies = ["y"]
        tasks.y.command = "x"
        tasks.y.dependencies = ["x", "y"]
    "#;
    assert_eq!(
        problems(toml(text)),
        [
            "tasks.a.dependencies: dependency cycle: a -> b -> c -> a",
            "tasks.d.dependencies: dependency cycle: d -> d",
            "tasks.x.dependencies: dependency cycle: x -> y -> x",
            "tasks.y.dependencies: dependency cycle: y -> y",
        ]
    );
}

#[test]
fn unknown_fields_get_suggestions_at_every_level() {
    let text = r#"
        taks = 1
        [tasks.build]
        comand = "x"
        command = "x"
        [tasks.build.cacheConfig]
        maxSise = 3
    "#;
    assert_eq!(
        problems(toml(text)),
        [
            "taks: unknown field `taks`; did you mean `tasks`?",
            "tasks.build.cacheConfig.maxSise: unknown field `maxSise`; did you mean `maxSize`?",
            "tasks.build.comand: unknown field `comand`; did you mean `command`?",
        ]
    );
    assert_eq!(
        problems(json(r#"{"hooks": {}}"#)),
        ["hooks: unknown field `hooks`; valid fields: tasks"]
    );
}

#[test]
fn wrong_types_name_the_field_and_value() {
    assert_eq!(
        problems(json(r#"{"tasks": 3}"#)),
        ["tasks: expected a table of tasks, found number 3"]
    );
    assert_eq!(problems(json("[]")), ["expected a table/object, found a list"]);
    let text = r#"{"tasks": {"a": 1, "b": {"command": "x", "cacheConfig": {
        "timeout": "soon", "maxSize": -1, "envInclude": "X", "customKeyComponents": {"k": []}}},
        "c": {"command": "x", "cacheConfig": {"maxSize": true, "timeout": 1.5}}}}"#;
    assert_eq!(
        problems(json(text)),
        [
            "tasks.a: expected a table/object, found number 1",
            "tasks.b.cacheConfig.envInclude: expected a list of strings, found string \"X\"",
            "tasks.b.cacheConfig.customKeyComponents.k: expected a string, found a list",
            "tasks.b.cacheConfig.timeout: invalid duration \"soon\": expected whole seconds, or a number with unit s, m or h",
            "tasks.b.cacheConfig.maxSize: expected a non-negative integer, found number -1",
            "tasks.c.cacheConfig.timeout: expected a non-negative integer, found number 1.5",
            "tasks.c.cacheConfig.maxSize: expected an integer or a string with a unit, found boolean true",
        ]
    );
}

#[test]
fn task_names_are_plain_words() {
    let text = r#"{"tasks": {"": {"command": "x"}, "a b": {"command": "x"}, "ci:lint-1.x_y": {"command": "x"}, "@acme/ui:build": {"command": "x"}}}"#;
    assert_eq!(
        problems(json(text)),
        [
            "tasks: invalid task name \"\": a task name must not be empty",
            "tasks: invalid task name \"a b\": use only letters, digits, '_', '.', ':', '-', '@' and '/'",
        ]
    );
}

#[test]
fn syntax_errors_carry_line_and_column() {
    assert_eq!(
        problems(toml("[tasks.a]\ncommand = \n")),
        [
            "invalid TOML at line 2, column 11: string values must be quoted, expected literal string"
        ]
    );
    assert_eq!(
        problems(json("{\"tasks\": {,}}")),
        ["invalid JSON: key must be a string at line 1 column 12"]
    );
}

#[test]
fn invalid_file_display_lists_problems_under_the_file() {
    let error =
        toml("[tasks.a]\ncommand = \"x\"\nscript = \"y\"\ndependencies = [\"a\"]\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "/p/cuenv.toml:\n  tasks.a: task \"a\" sets both `command` and `script`; keep one\n  \
         tasks.a.dependencies: dependency cycle: a -> a"
    );
}

#[test]
fn cue_output_may_hold_other_settings() {
    let document = serde_json::json!({
        "env": {"FOO": "bar"}, "hooks": [],
        "tasks": {"t": {"command": "x", "comand": "y"}}
    });
    let error =
        from_document(PathBuf::from("/p/env.cue"), TaskFileFormat::Cue, &document).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/p/env.cue:\n  tasks.t.comand: unknown field `comand`; did you mean `command`?"
    );
    let document = serde_json::json!({"env": {}, "tasks": {"t": {"command": "x"}}});
    let file = from_document(PathBuf::from("/p/env.cue"), TaskFileFormat::Cue, &document).unwrap();
    assert_eq!(file.tasks["t"].shell_text(), "x");
}

fn chain_file() -> TaskFile {
    toml(
        r#"
        tasks.deploy = { command = "x", dependencies = ["test", "build"] }
        tasks.test = { command = "x", dependencies = ["build", "lint"] }
        tasks.build = { command = "x", dependencies = ["gen"] }
        tasks.lint = { command = "x" }
        tasks.gen = { command = "x" }
        tasks.other = { command = "x" }
    "#,
    )
    .unwrap()
}

#[test]
fn closure_puts_dependencies_first_and_breaks_ties_by_name() {
    let file = chain_file();
    assert_eq!(
        file.closure(&["deploy".into()]).unwrap(),
        ["gen", "build", "lint", "test", "deploy"]
    );
    assert_eq!(file.closure(&["lint".into(), "build".into()]).unwrap(), ["gen", "build", "lint"]);
    assert_eq!(file.closure(&["other".into(), "other".into()]).unwrap(), ["other"]);
    assert!(file.closure(&[]).unwrap().is_empty());
}

#[test]
fn closure_rejects_unknown_tasks_with_suggestion() {
    let file = chain_file();
    assert_eq!(
        file.closure(&["lint".into(), "tset".into()]).unwrap_err().to_string(),
        "/p/cuenv.toml: unknown task \"tset\"; did you mean \"test\"?; \
         available tasks: build, deploy, gen, lint, other, test"
    );
    let empty = toml("").unwrap();
    assert_eq!(
        empty.closure(&["x".into()]).unwrap_err().to_string(),
        "/p/cuenv.toml: unknown task \"x\"; the file defines no tasks"
    );
}

#[test]
fn an_unknown_task_among_many_lists_a_screenful_preferring_names_that_contain_it() {
    let mut text = String::new();
    for package in 0..30 {
        for task in ["build", "test"] {
            text.push_str(&format!("[tasks.\"pkg{package:02}:{task}\"]\ncommand = \"true\"\n"));
        }
    }
    let file = toml(&text).unwrap();
    let error = file.closure(&["Build".into()]).unwrap_err().to_string();
    let builds: Vec<String> = (0..20).map(|package| format!("pkg{package:02}:build")).collect();
    assert_eq!(
        error,
        format!(
            "/p/cuenv.toml: unknown task \"Build\"; tasks containing \"Build\": {} \
             and 10 more (of 60 tasks)",
            builds.join(", ")
        )
    );
    let error = file.closure(&["lint".into()]).unwrap_err().to_string();
    assert!(
        error.ends_with("; available tasks: pkg00:build, pkg00:test, pkg01:build, pkg01:test, pkg02:build, pkg02:test, pkg03:build, pkg03:test, pkg04:build, pkg04:test, pkg05:build, pkg05:test, pkg06:build, pkg06:test, pkg07:build, pkg07:test, pkg08:build, pkg08:test, pkg09:build, pkg09:test and 40 more (of 60 tasks)"),
        "{error}"
    );
}

#[test]
fn closure_of_a_hand_built_cyclic_file_is_an_error_not_a_hang() {
    let mut file = chain_file();
    file.tasks.get_mut("gen").unwrap().dependencies.push("deploy".into());
    let error = file.closure(&["gen".into()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/p/cuenv.toml:\n  tasks.build.dependencies: dependency cycle: build -> gen -> deploy -> build"
    );
}

#[test]
fn deep_graphs_do_not_overflow_the_stack() {
    let count = 50_000;
    let mut tasks = BTreeMap::new();
    for i in 0..count {
        let dependencies =
            if i + 1 < count { vec![format!("t{:05}", i + 1)] } else { vec!["t00000".into()] };
        tasks.insert(
            format!("t{i:05}"),
            serde_json::json!({"command": "x", "dependencies": dependencies}),
        );
    }
    let document = serde_json::json!({ "tasks": tasks });
    let error =
        from_document(PathBuf::from("/p/cuenv.json"), TaskFileFormat::Json, &document).unwrap_err();
    let TaskFileError::Invalid { problems, .. } = error else { panic!("expected Invalid") };
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.ends_with("t49999 -> t00000"), "{}", &problems[0].message[..80]);
}

#[test]
fn executables_are_found_only_on_the_given_path() {
    assert_eq!(find_executable("sh", None), None);
    assert_eq!(find_executable("sh", Some("".as_ref())), None);
    assert_eq!(
        find_executable("sh", Some("/nonexistent:/bin".as_ref())),
        Some(PathBuf::from("/bin/sh"))
    );
}
