//! End to end: the built `cuenv` binary run on temporary projects, each with its own cache
//! directory, config directory and home. Every task appends its name to `$STATE/runs.log`, a
//! directory outside the project (so never an input or an output), which counts executions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// One temporary project: `root/` holds `cuenv.toml`; the cache, config, home and state
/// directories sit beside it.
struct Project {
    dir: TempDir,
}

/// What one `cuenv` invocation did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn ok(self) -> Self {
        self.expect(0)
    }

    /// Whether the run reported a cache hit for `task` on stderr.
    fn hit(&self, task: &str) -> bool {
        self.stderr.lines().any(|line| {
            line.contains("cache hit")
                && (line.starts_with(&format!("{task}:")) || line.starts_with(&format!("{task} ")))
        })
    }
}

/// Tasks `t0`, `t1`, ... that each record an execution as `t`, then sleep `seconds`.
fn sleepers(count: usize, seconds: &str) -> String {
    (0..count)
        .map(|index| format!("[tasks.t{index}]\ncommand = '{}; sleep {seconds}'\n", mark("t")))
        .collect()
}

/// `echo NAME >> runs.log`: the shell text that records one execution of `name`.
fn mark(name: &str) -> String {
    format!("echo {name} >> \"$STATE/runs.log\"")
}

/// Sleeps the test thread; only used to poll for a condition or to space out file edits.
#[allow(clippy::disallowed_methods)]
fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

impl Project {
    fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["root", "cache", "config", "home", "state", "xdg-cache"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create dir");
        }
        let project = Project { dir };
        project.write("cuenv.toml", toml);
        project
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        fs::write(path, content).expect("write file");
    }

    fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative))
            .unwrap_or_else(|error| panic!("read {relative}: {error}"))
    }

    /// How many times `task` executed.
    fn runs(&self, task: &str) -> usize {
        fs::read_to_string(self.state().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == task)
            .count()
    }

    /// The pid a task wrote to `$STATE/FILE`, once it has.
    fn pid(&self, file: &str) -> Option<i32> {
        fs::read_to_string(self.state().join(file)).ok()?.trim().parse().ok()
    }

    /// Waits (up to 20 s, then fails) until a task has created `$STATE/FILE`.
    fn wait_for(&self, file: &str) {
        let started = Instant::now();
        while !self.state().join(file).exists() {
            assert!(started.elapsed() < Duration::from_secs(20), "{file} never appeared");
            pause(20);
        }
    }

    /// Waits (up to 20 s, then fails) until a task has written its pid to `$STATE/FILE`.
    fn wait_for_pid(&self, file: &str) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(pid) = self.pid(file) {
                return pid;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{file} never appeared");
            pause(20);
        }
    }

    /// `cuenv ARGS` in the project root, with a clean environment plus `env`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cuenv"));
        command
            .args(args)
            .current_dir(self.root())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg-cache"))
            .env("CUENV_CACHE_DIR", self.cache())
            .env("STATE", self.state())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.command(args, env).output().expect("run cuenv").into()
    }

    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cuenv")
    }

    /// `cuenv ARGS` as [`Project::run`], but on a terminal: under `script`, which gives it a
    /// pseudo-terminal (an xterm, as `TERM` says) and prints what appeared there (stdout and
    /// stderr together).
    fn run_on_terminal(&self, args: &[&str]) -> Run {
        let inner = self.command(args, &[("TERM", "xterm")]);
        let quote = |word: &str| format!("'{}'", word.replace('\'', r"'\''"));
        let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_cuenv"))
            .chain(args.iter().copied())
            .map(quote)
            .collect();
        let mut script = Command::new("script");
        script
            .args(["-qfec", &line.join(" "), "/dev/null"])
            .current_dir(self.root())
            .env_clear()
            .stdin(Stdio::null());
        for (name, value) in inner.get_envs() {
            if let Some(value) = value {
                script.env(name, value);
            }
        }
        script.output().expect("run `script` (util-linux), which gives cuenv a terminal").into()
    }

    /// Every regular file under `sub` of the cache's store (`v1/cas`, `v1/ac`).
    fn store_files(&self, sub: &str) -> Vec<PathBuf> {
        crate::support::files_under(&self.cache().join("v1").join(sub))
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o111 != 0
}

// 1.
#[test]
fn a_hit_skips_execution() {
    let p = Project::new(&format!(
        "[tasks.build]\ncommand = '{}; echo built > out.txt'\ninputs = [\"src.txt\"]\noutputs = [\"out.txt\"]\n",
        mark("build")
    ));
    p.write("src.txt", "v1");
    let first = p.run(&["run", "build"]).ok();
    assert!(!first.hit("build"), "{}", first.stderr);
    assert!(first.stderr.contains("1 executed"), "{}", first.stderr);
    let second = p.run(&["run", "build"]).ok();
    assert_eq!(p.runs("build"), 1, "the second run must not execute");
    assert!(second.hit("build"), "{}", second.stderr);
    assert!(second.stderr.contains("0 executed, 1 cached"), "{}", second.stderr);
    assert_eq!(p.read("out.txt"), "built\n");
}

// 2.
#[test]
fn outputs_are_restored_after_deletion() {
    let p = Project::new(&format!(
        r#"[tasks.build]
script = '''
{}
mkdir -p dist/nested/deeper
printf 'bin\000ary\377\n' > dist/data.bin
seq 1 3000 > dist/nested/deeper/big.txt
printf '#!/bin/sh\necho tool\n' > dist/tool.sh
chmod 755 dist/tool.sh
ln -s nested/deeper/big.txt dist/link
'''
inputs = ["src.txt"]
outputs = ["dist"]
"#,
        mark("build")
    ));
    p.write("src.txt", "v1");
    p.run(&["run", "build"]).ok();
    let read = |rel: &str| fs::read(p.path(rel)).expect("read output");
    let data = read("dist/data.bin");
    let big = read("dist/nested/deeper/big.txt");
    let tool = read("dist/tool.sh");
    assert_eq!(data, b"bin\0ary\xff\n");
    fs::remove_dir_all(p.path("dist")).expect("remove outputs");

    let hit = p.run(&["run", "build"]).ok();
    assert!(hit.hit("build"), "{}", hit.stderr);
    assert_eq!(p.runs("build"), 1);
    assert_eq!(read("dist/data.bin"), data);
    assert_eq!(read("dist/nested/deeper/big.txt"), big);
    assert_eq!(read("dist/tool.sh"), tool);
    assert!(is_executable(&p.path("dist/tool.sh")), "the executable bit is restored");
    assert!(!is_executable(&p.path("dist/data.bin")));
    let link = p.path("dist/link");
    assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink());
    assert_eq!(fs::read_link(&link).expect("readlink"), Path::new("nested/deeper/big.txt"));
    assert_eq!(read("dist/link"), big);
}

/// A restored file gets the mode the task left on it, less the umask (as `tar` extracts for
/// an ordinary user): a private or read-only output comes back private or read-only, not 0644.
#[test]
fn restored_files_keep_their_modes_less_the_umask() {
    use std::os::unix::process::CommandExt;
    let modes = [0o600, 0o444, 0o750, 0o644];
    let p = Project::new(&format!(
        r#"[tasks.m]
command = '{}; mkdir -p out && for m in 600 444 750 644; do echo $m > out/f$m; chmod $m out/f$m; done'
outputs = ["out/**"]
"#,
        mark("m")
    ));
    let mode_of = |m: u32| {
        fs::metadata(p.path(&format!("out/f{m:o}"))).expect("output").permissions().mode() & 0o777
    };
    p.run(&["run", "m"]).ok();
    assert_eq!(modes.map(mode_of), modes, "as the task left them");
    fs::remove_dir_all(p.path("out")).expect("remove outputs");
    assert!(p.run(&["run", "m"]).ok().hit("m"));
    assert_eq!(modes.map(mode_of), modes, "restored");

    // A file in place with the right content but another mode is set right.
    fs::set_permissions(p.path("out/f600"), fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(p.run(&["run", "m"]).ok().hit("m"));
    assert_eq!(mode_of(0o600), 0o600);

    // Under umask 077 the group and other bits fall away, as they would have for the task.
    fs::remove_dir_all(p.path("out")).expect("remove outputs");
    let mut command = p.command(&["run", "m"], &[]);
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let run: Run = command.output().expect("run cuenv").into();
    assert!(run.ok().hit("m"));
    assert_eq!(modes.map(mode_of), modes.map(|m| m & 0o700));
    assert_eq!(p.runs("m"), 1);
}

#[test]
fn empty_directories_an_output_glob_matches_are_restored() {
    let p = Project::new(&format!(
        r#"[tasks.build]
script = '''
{}
mkdir -p dist/logs dist/cache/v1 other/empty
ln -s logs dist/current
echo x > dist/app.txt
'''
inputs = ["src.txt"]
outputs = ["dist/**"]
"#,
        mark("build")
    ));
    p.write("src.txt", "v1");
    p.run(&["run", "build"]).ok();
    for dir in ["dist", "other"] {
        fs::remove_dir_all(p.path(dir)).expect("remove outputs");
    }

    let hit = p.run(&["run", "build"]).ok();
    assert!(hit.hit("build"), "{}", hit.stderr);
    assert_eq!(p.runs("build"), 1);
    for dir in ["dist/logs", "dist/cache/v1", "dist/current"] {
        assert!(p.path(dir).is_dir(), "{dir} is restored (a symlink to a directory resolves)");
    }
    assert_eq!(p.read("dist/app.txt"), "x\n");
    assert!(!p.path("other").exists(), "a directory no output matches stays out");
}

// 3.
#[test]
fn stdout_and_stderr_are_replayed_on_a_hit() {
    let p = Project::new(&format!(
        "[tasks.talk]\ncommand = '{}; echo to-stdout; echo to-stderr >&2'\n",
        mark("talk")
    ));
    let first = p.run(&["run", "talk"]).ok();
    assert!(first.stdout.contains("to-stdout") && first.stderr.contains("to-stderr"));
    let second = p.run(&["run", "talk"]).ok();
    assert_eq!(p.runs("talk"), 1);
    assert!(second.hit("talk"), "marked as a cache hit: {}", second.stderr);
    assert_eq!(second.stdout.lines().collect::<Vec<_>>(), ["to-stdout"]);
    assert!(second.stderr.lines().any(|line| line == "to-stderr"), "{}", second.stderr);
    assert!(!second.stdout.contains("to-stderr") && !second.stderr.contains("to-stdout"));
}

// 4.
#[test]
fn an_input_change_misses_and_reverting_it_hits() {
    let p = Project::new(&format!(
        "[tasks.build]\ncommand = '{}; cat src/a.txt > out.txt'\ninputs = [\"src/**/*.txt\"]\noutputs = [\"out.txt\"]\n",
        mark("build")
    ));
    p.write("src/a.txt", "one");
    p.run(&["run", "build"]).ok();
    p.write("src/a.txt", "two!");
    let changed = p.run(&["run", "build"]).ok();
    assert!(!changed.hit("build"));
    assert_eq!(p.runs("build"), 2);
    assert_eq!(p.read("out.txt"), "two!");
    p.write("src/a.txt", "one");
    let reverted = p.run(&["run", "build"]).ok();
    assert!(reverted.hit("build"), "{}", reverted.stderr);
    assert_eq!(p.runs("build"), 2);
    assert_eq!(p.read("out.txt"), "one", "the output of the first run is restored");
    // A new file matching the glob is an input too.
    p.write("src/deep/b.txt", "new");
    p.run(&["run", "build"]).ok();
    assert_eq!(p.runs("build"), 3);
}

// 5.
#[test]
fn included_env_vars_miss_when_changed_and_others_hit() {
    let p = Project::new(&format!(
        r#"[tasks.global]
command = '{}'
[tasks.node]
command = '{}'
cacheConfig = {{ envInclude = ["NODE_ENV"] }}
[tasks.excluded]
command = '{}'
cacheConfig = {{ envExclude = ["CUENV_PROFILE"] }}
"#,
        mark("global"),
        mark("node"),
        mark("excluded")
    ));
    let all = ["run", "--all"];
    let env = |profile: &'static str, node: &'static str, other: &'static str| {
        [("CUENV_PROFILE", profile), ("NODE_ENV", node), ("UNLISTED", other)]
    };
    p.run_env(&all, &env("dev", "development", "a")).ok();
    let counts = || (p.runs("global"), p.runs("node"), p.runs("excluded"));
    assert_eq!(counts(), (1, 1, 1));
    // An unlisted variable is not part of any key.
    p.run_env(&all, &env("dev", "development", "b")).ok();
    assert_eq!(counts(), (1, 1, 1));
    // CUENV_* is in the default include list; `node` replaced the list, `excluded` excludes it.
    p.run_env(&all, &env("prod", "development", "b")).ok();
    assert_eq!(counts(), (2, 1, 1));
    // NODE_ENV is only in `node`'s list.
    p.run_env(&all, &env("prod", "production", "b")).ok();
    assert_eq!(counts(), (2, 2, 1));
    // Back to a known combination: every task hits.
    p.run_env(&all, &env("dev", "development", "c")).ok();
    assert_eq!(counts(), (2, 2, 1));
}

// 6.
#[test]
fn cache_false_always_runs() {
    let p = Project::new(&format!(
        "[tasks.fresh]\ncommand = '{}; echo fresh'\ncache = false\n",
        mark("fresh")
    ));
    for _ in 0..3 {
        let run = p.run(&["run", "fresh"]).ok();
        assert!(!run.hit("fresh"));
        assert_eq!(run.stdout.trim(), "fresh");
    }
    assert_eq!(p.runs("fresh"), 3);
    let dry = p.run(&["run", "fresh", "--dry-run"]).ok();
    assert!(dry.stdout.contains("disabled"), "{}", dry.stdout);
}

// 7.
#[test]
fn failures_are_not_cached() {
    let p = Project::new(&format!(
        "[tasks.broken]\ncommand = '{}; echo oops >&2; exit 3'\n[tasks.after]\ncommand = '{}'\ndependencies = [\"broken\"]\n",
        mark("broken"),
        mark("after")
    ));
    let first = p.run(&["run", "after"]).expect(1);
    assert!(first.stderr.contains("Failed: task \"broken\""), "{}", first.stderr);
    assert!(first.stderr.contains("exit code 3"), "{}", first.stderr);
    assert!(first.stderr.contains("oops"));
    assert_eq!(p.runs("after"), 0, "a dependent of a failed task does not run");
    let second = p.run(&["run", "after"]).expect(1);
    assert!(!second.hit("broken"));
    assert_eq!(p.runs("broken"), 2, "a failure is executed again");
    let dry = p.run(&["run", "broken", "--dry-run"]).ok();
    assert!(dry.stdout.contains("miss"), "{}", dry.stdout);
}

// 8.
#[test]
fn a_dependency_change_reruns_its_dependents_only() {
    let p = Project::new(&format!(
        r#"[tasks.a]
command = '{}; cat a.txt > a.out'
inputs = ["a.txt"]
outputs = ["a.out"]
[tasks.b]
command = '{}; cat a.out > b.out'
inputs = ["a.out"]
outputs = ["b.out"]
dependencies = ["a"]
[tasks.c]
command = '{}; cat b.out > c.out'
inputs = ["b.out"]
outputs = ["c.out"]
dependencies = ["b"]
[tasks.sibling]
command = '{}; echo s > s.out'
inputs = ["s.txt"]
outputs = ["s.out"]
"#,
        mark("a"),
        mark("b"),
        mark("c"),
        mark("sibling")
    ));
    p.write("a.txt", "1");
    p.write("s.txt", "s");
    p.run(&["run", "--all"]).ok();
    let counts = || [p.runs("a"), p.runs("b"), p.runs("c"), p.runs("sibling")];
    assert_eq!(counts(), [1, 1, 1, 1]);
    p.run(&["run", "--all"]).ok();
    assert_eq!(counts(), [1, 1, 1, 1]);
    p.write("a.txt", "22");
    let run = p.run(&["run", "--all"]).ok();
    assert_eq!(counts(), [2, 2, 2, 1]);
    assert!(run.hit("sibling"), "{}", run.stderr);
    assert_eq!(p.read("c.out"), "22");
    // Asking for the middle of the chain runs it and what it depends on, not its dependents.
    p.write("a.txt", "333");
    p.run(&["run", "b"]).ok();
    assert_eq!(counts(), [3, 3, 2, 1]);
}

// 9.
#[test]
fn jobs_bounds_parallelism() {
    const N: usize = 4;
    let p = Project::new(&sleepers(N, "0.5"));
    let timed = |jobs: &str| {
        let started = Instant::now();
        p.run(&["run", "--all", "--no-cache", "-j", jobs]).ok();
        started.elapsed()
    };
    let parallel = timed(&N.to_string());
    let serial = timed("1");
    assert_eq!(p.runs("t"), 2 * N);
    assert!(serial >= Duration::from_millis(500 * N as u64), "-j 1 took {serial:?}");
    assert!(
        parallel.as_secs_f64() < 0.6 * serial.as_secs_f64(),
        "-j {N} took {parallel:?}, -j 1 took {serial:?}"
    );
}

/// On a terminal, the progress line names the tasks whose processes run, not those waiting for
/// a job slot: with `-j 1`, one at a time.
#[test]
fn the_progress_line_names_the_tasks_that_execute_and_no_others() {
    let names = ["t0", "t1", "t2"];
    let p = Project::new(&sleepers(names.len(), "0.4"));
    let run = p.run_on_terminal(&["run", "--all", "-j", "1"]).ok();
    assert_eq!(p.runs("t"), 3);
    let frames: Vec<&str> =
        run.stdout.split(['\r', '\n']).filter(|frame| frame.contains("/3]")).collect();
    let named = |frame: &str| names.iter().filter(|name| frame.contains(*name)).count();
    assert!(frames.iter().any(|frame| named(frame) == 1), "no frame names a task:\n{}", run.stdout);
    for frame in &frames {
        assert!(named(frame) <= 1, "{frame:?} names tasks that wait:\n{}", run.stdout);
    }
}

/// The time a hit saves is the time its task ran, not the time it waited for a job slot: with
/// `-j 1`, the third of three 0.4 s tasks waits 0.8 s, and counting that would claim 2.4 s saved
/// where 1.2 s was.
#[test]
fn time_saved_counts_the_tasks_run_not_their_wait_for_a_slot() {
    let p = Project::new(&sleepers(3, "0.4"));
    p.run(&["run", "--all", "-j", "1"]).ok();
    let replay = p.run(&["run", "--all", "-j", "1"]).ok();
    assert_eq!(p.runs("t"), 3, "{}", replay.stderr);
    let stats: Value =
        serde_json::from_str(&p.run(&["cache", "stats", "--json"]).ok().stdout).expect("JSON");
    let saved = stats["total"]["time_saved_ms"].as_u64().expect("time_saved_ms");
    assert!((1200..2000).contains(&saved), "time saved {saved} ms: {stats}");
}

// 10.
#[test]
fn concurrent_runs_execute_a_task_once() {
    let p = Project::new(&format!(
        "[tasks.slow]\ncommand = '{}; sleep 1; echo done > out.txt'\noutputs = [\"out.txt\"]\n",
        mark("slow")
    ));
    let first = p.spawn(&["run", "slow"], &[]);
    let second = p.spawn(&["run", "slow"], &[]);
    let first: Run = first.wait_with_output().expect("wait").into();
    let second: Run = second.wait_with_output().expect("wait").into();
    let (first, second) = (first.ok(), second.ok());
    assert_eq!(p.runs("slow"), 1, "{}\n{}", first.stderr, second.stderr);
    assert!(first.hit("slow") != second.hit("slow"), "exactly one of the two replays a hit");
    assert_eq!(p.read("out.txt"), "done\n");
}

// 11.
#[test]
fn corrupted_cache_files_fall_back_to_execution() {
    type Damage = fn(&Path);
    let flip: Damage = |path| {
        let mut bytes = fs::read(path).expect("read");
        for byte in bytes.iter_mut().step_by(7) {
            *byte ^= 0xff;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::write(path, bytes).expect("write");
    };
    let truncate: Damage = |path| {
        let len = fs::metadata(path).expect("metadata").len();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open")
            .set_len(len / 2)
            .expect("truncate");
    };
    let delete: Damage = |path| fs::remove_file(path).expect("delete");
    let cases: [(&str, Damage, &[&str]); 4] = [
        ("flip", flip, &["cas", "ac"]),
        ("truncate", truncate, &["cas", "ac"]),
        ("truncate records", truncate, &["ac"]),
        ("delete blobs", delete, &["cas"]),
    ];
    let mut not_healed = Vec::new();
    for (name, damage, dirs) in cases {
        let p = Project::new(&format!(
            "[tasks.gen]\ncommand = '{}; mkdir -p out; seq 1 3000 > out/big.txt; echo small > out/small.txt; seq 1 2000'\noutputs = [\"out\"]\n",
            mark("gen")
        ));
        p.run(&["run", "gen"]).ok();
        let big = p.read("out/big.txt");
        let log = p.run(&["run", "gen"]).ok().stdout;
        assert_eq!(p.runs("gen"), 1, "{name}");
        let files: Vec<PathBuf> = dirs.iter().flat_map(|dir| p.store_files(dir)).collect();
        assert!(!files.is_empty(), "{name}: nothing stored");
        files.iter().for_each(|file| damage(file));
        fs::remove_dir_all(p.path("out")).expect("remove outputs");

        let run = p.run(&["run", "gen"]).ok();
        assert_eq!(p.runs("gen"), 2, "{name}: executes again\n{}", run.stderr);
        assert_eq!(p.read("out/big.txt"), big, "{name}");
        assert_eq!(p.read("out/small.txt"), "small\n", "{name}");
        assert_eq!(run.stdout, log, "{name}");
        // The execution repaired the cache: the next run hits and restores the right bytes.
        fs::remove_dir_all(p.path("out")).expect("remove outputs");
        let healed = p.run(&["run", "gen"]).ok();
        assert_eq!(p.read("out/big.txt"), big, "{name}");
        assert_eq!(healed.stdout, log, "{name}");
        if !healed.hit("gen") || p.runs("gen") != 2 {
            not_healed.push(format!("{name}: executed again\n{}", healed.stderr));
        }
    }
    assert!(not_healed.is_empty(), "the run after a fallback must hit:\n{}", not_healed.join("\n"));
}

// 12.
#[test]
fn task_file_errors_exit_2_with_their_message() {
    let simple = "[tasks.a]\ncommand = 'true'\n";
    /// (what is wrong, the task file, the arguments, extra env, what stderr must say)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            "unknown dependency",
            "[tasks.a]\ncommand = 'true'\ndependencies = ['nope']\n",
            &["run", "a"],
            &[],
            &["tasks.a.dependencies", "unknown task \"nope\""],
        ),
        (
            "cycle",
            "[tasks.a]\ncommand = 'true'\ndependencies = ['b']\n[tasks.b]\ncommand = 'true'\ndependencies = ['c']\n[tasks.c]\ncommand = 'true'\ndependencies = ['a']\n",
            &["run", "a"],
            &[],
            &["dependency cycle: a -> b -> c -> a"],
        ),
        (
            "command and script",
            "[tasks.a]\ncommand = 'true'\nscript = 'true'\n",
            &["run", "a"],
            &[],
            &["task \"a\" sets both `command` and `script`"],
        ),
        (
            "invalid glob",
            "[tasks.a]\ncommand = 'true'\ninputs = ['src/[a']\n",
            &["run", "a"],
            &[],
            &["tasks.a.inputs[0]", "invalid glob \"src/[a\""],
        ),
        (
            "workingDir outside the root",
            "[tasks.a]\ncommand = 'true'\nworkingDir = '../elsewhere'\n",
            &["run", "a"],
            &[],
            &["tasks.a.workingDir", "leaves the project root"],
        ),
        (
            "unknown field",
            "[tasks.a]\ncommand = 'true'\nouputs = ['x']\n",
            &["run", "a"],
            &[],
            &["tasks.a.ouputs", "unknown field `ouputs`; did you mean `outputs`?"],
        ),
        (
            "missing literal input",
            "[tasks.a]\ncommand = 'true'\ninputs = ['missing.txt']\n",
            &["run", "a"],
            &[],
            &["task \"a\"", "input \"missing.txt\" does not exist"],
        ),
        (
            "unknown task",
            simple,
            &["run", "bulid"],
            &[],
            &["unknown task \"bulid\"", "available tasks: a"],
        ),
        (
            "bad --cache-mode",
            simple,
            &["run", "a", "--cache-mode", "bogus"],
            &[],
            &["unknown cache mode `bogus`", "read-write"],
        ),
        (
            "bad CUENV_CACHE_MODE",
            simple,
            &["run", "a"],
            &[("CUENV_CACHE_MODE", "bogus")],
            &["CUENV_CACHE_MODE", "unknown cache mode `bogus`"],
        ),
        (
            "overlapping outputs",
            "[tasks.a]\ncommand = 'true'\noutputs = ['dist']\n[tasks.b]\ncommand = 'true'\noutputs = ['dist/b.txt']\n",
            &["run", "a", "b"],
            &[],
            &["overlapping outputs", "tasks \"a\" and \"b\""],
        ),
        (
            "the project root among overlapping outputs",
            "[tasks.a]\ncommand = 'true'\noutputs = ['.']\n[tasks.b]\ncommand = 'true'\noutputs = ['**']\n",
            &["run", "a", "b"],
            &[],
            &["both write the whole project (outputs \".\" and \"**\")"],
        ),
        (
            "unreadable cache config",
            simple,
            &["run", "a"],
            &[("CUENV_CACHE_CONFIG", "/")],
            &["cannot read cache config /: Is a directory (os error 21)"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, toml, args, env, expected) in cases {
        let p = Project::new(&format!("{toml}\n[tasks.marker]\ncommand = '{}'\n", mark("marker")));
        let run = p.run_env(args, env);
        let missing: Vec<&&str> =
            expected.iter().filter(|text| !run.stderr.contains(**text)).collect();
        // A cause that its message already carries is not printed a second time.
        let repeated = run.stderr.matches("(os error").count() > 1;
        if run.code != 2 || !missing.is_empty() || !run.stdout.is_empty() || repeated {
            failures.push(format!(
                "{name}: exit {} (want 2), missing {missing:?}\nstdout: {}\nstderr: {}",
                run.code, run.stdout, run.stderr
            ));
        }
        assert_eq!(p.runs("marker"), 0, "{name}: nothing runs");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// 13.
#[test]
fn ctrl_c_leaves_a_usable_cache() {
    let p = Project::new(&format!(
        r#"[tasks.quick]
command = '{}; echo q > q.out'
outputs = ["q.out"]
[tasks.slow]
command = '{}; echo $$ > "$STATE/sh.pid"; sleep ${{SLOW_SECS:-30}} & echo $! > "$STATE/sleep.pid"; wait $!; touch "$STATE/marker"'
dependencies = ["quick"]
"#,
        mark("quick"),
        mark("slow")
    ));
    let child = p.spawn(&["run", "slow"], &[]);
    // `slow` starts only once `quick` has completed and been stored.
    let (shell, sleep) = (p.wait_for_pid("sh.pid"), p.wait_for_pid("sleep.pid"));
    let cuenv = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill only sends a signal, to our own child.
    assert_eq!(unsafe { libc::kill(cuenv, libc::SIGINT) }, 0);
    let interrupted_at = Instant::now();
    let run = wait_with_deadline(child, Duration::from_secs(10));
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        interrupted_at.elapsed()
    );
    let run = run.expect(130);
    assert!(run.stderr.contains("Interrupted"), "{}", run.stderr);
    assert!(!alive(shell), "the task's shell survived");
    assert!(!alive(sleep), "the task's process group survived");
    assert!(!p.state().join("marker").exists());

    let rerun = p.run_env(&["run", "slow"], &[("SLOW_SECS", "0")]).ok();
    assert!(rerun.hit("quick"), "{}", rerun.stderr);
    assert_eq!((p.runs("quick"), p.runs("slow")), (1, 2));
    assert!(p.state().join("marker").exists());
}

/// A closed terminal or a dropped ssh session (SIGHUP) stops the run as Ctrl-C does, and
/// Ctrl-\\ (SIGQUIT) as a second Ctrl-C does, instead of ending cuenv alone and leaving its
/// tasks running as orphans.
#[test]
fn a_hangup_or_a_quit_stops_the_tasks_too() {
    for (signal, says) in [(libc::SIGHUP, "Interrupted"), (libc::SIGQUIT, "quit: stopped")] {
        let p = Project::new(&format!(
            "[tasks.slow]\ncommand = '{}; sleep 30 & echo $! > \"$STATE/sleep.pid\"; wait $!'\n",
            mark("slow")
        ));
        let child = p.spawn(&["run", "slow"], &[]);
        let sleep = p.wait_for_pid("sleep.pid");
        let cuenv = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill only sends a signal, to our own child.
        assert_eq!(unsafe { libc::kill(cuenv, signal) }, 0);
        let run = wait_with_deadline(child, Duration::from_secs(10)).expect(130);
        assert!(run.stderr.contains(says), "signal {signal}: {}", run.stderr);
        assert!(!alive(sleep), "signal {signal}: the task's process group survived");
    }
}

/// Waits for `child` to exit, killing it (and failing) after `deadline`.
fn wait_with_deadline(mut child: Child, deadline: Duration) -> Run {
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cuenv did not exit within {deadline:?}");
        }
        pause(20);
    }
    child.wait_with_output().expect("output").into()
}

/// Whether `pid` is a live process (a zombie waiting for its reaper does not count).
fn alive(pid: i32) -> bool {
    // Give the kernel and the reaper a moment after SIGKILL.
    let started = Instant::now();
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if !exists || zombie {
            return false;
        }
        if started.elapsed() > Duration::from_secs(3) {
            return true;
        }
        pause(50);
    }
}

// 14.
#[test]
fn dry_run_shows_keys_without_running() {
    let p = Project::new(&format!(
        "[tasks.a]\ncommand = '{}; echo a > a.out'\ninputs = [\"in.txt\"]\noutputs = [\"a.out\"]\n[tasks.b]\ncommand = '{}'\ndependencies = [\"a\"]\n",
        mark("a"),
        mark("b")
    ));
    p.write("in.txt", "x");
    let dry = p.run(&["run", "b", "--dry-run"]).ok();
    assert_eq!(p.runs("a") + p.runs("b"), 0, "a dry run runs nothing");
    let lines: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", dry.stdout);
    assert!(lines[0].starts_with("TASK") && lines[0].contains("KEY") && lines[0].contains("CACHE"));
    assert!(lines[1].starts_with("a ") && lines[1].ends_with("miss"), "{}", lines[1]);
    assert!(lines[2].starts_with("b ") && lines[2].ends_with("miss"), "{}", lines[2]);

    p.run(&["run", "b"]).ok();
    let json = p.run(&["run", "b", "--dry-run", "--json"]).ok();
    let entries: Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    let entries = entries.as_array().expect("an array");
    assert_eq!(entries.len(), 2);
    for (entry, task) in entries.iter().zip(["a", "b"]) {
        assert_eq!(entry["task"], task);
        assert_eq!(entry["cache"], "hit");
        let digest = entry["digest"].as_str().expect("digest");
        assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
        assert_eq!(entry["manifest"]["task"], task);
    }
    assert_eq!(entries[0]["manifest"]["inputs"]["files"][0]["path"], "in.txt");
    assert_eq!(entries[1]["manifest"]["dependencies"]["a"], entries[0]["digest"]);
    assert_eq!((p.runs("a"), p.runs("b")), (1, 1));
}

// 15.
#[test]
fn cache_subcommands_report_and_manage_the_cache() {
    let p = Project::new(&format!(
        r#"[tasks.a]
command = '{}; cat in.txt > a.out'
inputs = ["in.txt"]
outputs = ["a.out"]
[tasks.b]
command = '{}; cat a.out > b.out'
inputs = ["a.out"]
outputs = ["b.out"]
dependencies = ["a"]
"#,
        mark("a"),
        mark("b")
    ));
    p.write("in.txt", "1");
    p.run(&["run", "a"]).ok();
    p.run(&["run", "a"]).ok();
    let stats: Value =
        serde_json::from_str(&p.run(&["cache", "stats", "--json"]).ok().stdout).expect("JSON");
    let total = &stats["total"];
    assert_eq!(total["lookups"], 2, "{stats}");
    assert_eq!(total["misses"], 1, "{stats}");
    assert_eq!(total["hits_disk"].as_u64().unwrap() + total["hits_memory"].as_u64().unwrap(), 1);
    assert_eq!(total["executions"], 1, "{stats}");
    assert!(stats["bytes_stored"].as_u64().unwrap() > 0);

    let gc = p.run(&["cache", "gc", "--max-size", "0"]).ok();
    assert!(gc.stdout.contains("evicted 0 entries"), "{}", gc.stdout);
    assert!(gc.stdout.contains("kept 1 entries written less than a minute ago"), "{}", gc.stdout);
    assert!(p.run(&["run", "a"]).ok().hit("a"), "gc kept the fresh entry");

    // explain: an edited input.
    p.run(&["run", "b"]).ok();
    p.write("in.txt", "22");
    let explain = p.run(&["cache", "explain", "a"]).ok();
    assert!(explain.stdout.contains("cache:       miss"), "{}", explain.stdout);
    assert!(explain.stdout.contains("input in.txt: changed"), "{}", explain.stdout);
    // ... and for a dependent, the changed dependency and, upstream, the file.
    let explain = p.run(&["cache", "explain", "b"]).ok();
    assert!(explain.stdout.contains("dependency a: changed"), "{}", explain.stdout);
    assert!(explain.stdout.contains("in dependency a:"), "{}", explain.stdout);
    assert!(explain.stdout.contains("input in.txt: changed"), "{}", explain.stdout);
    let json: Value =
        serde_json::from_str(&p.run(&["cache", "explain", "b", "--json"]).ok().stdout)
            .expect("JSON");
    assert_eq!(json["cache"], "miss");
    assert_eq!(json["differences"][0]["kind"], "dependency");
    assert_eq!(json["upstream"][0]["task"], "a");
    // ... and a changed env var.
    p.write("in.txt", "1");
    assert!(p.run(&["run", "a"]).ok().hit("a"));
    let explain = p.run_env(&["cache", "explain", "a"], &[("CUENV_PROFILE", "ci")]).ok();
    assert!(explain.stdout.contains("env var CUENV_PROFILE: added"), "{}", explain.stdout);
    p.run_env(&["run", "a"], &[("CUENV_PROFILE", "ci")]).ok();
    let explain = p.run_env(&["cache", "explain", "a"], &[("CUENV_PROFILE", "prod")]).ok();
    assert!(explain.stdout.contains("env var CUENV_PROFILE: changed"), "{}", explain.stdout);

    let clean = p.run(&["cache", "clean", "--yes"]).ok();
    assert!(clean.stdout.contains("removed everything"), "{}", clean.stdout);
    assert_eq!(fs::read_dir(p.cache()).expect("cache dir").count(), 0, "the cache dir is empty");
    let before = p.runs("a");
    assert!(!p.run(&["run", "a"]).ok().hit("a"));
    assert_eq!(p.runs("a"), before + 1);
}

#[test]
fn cache_clean_while_a_run_writes_removes_everything_without_an_error() {
    let p = Project::new("[tasks.a]\ncommand = 'echo a'\n");
    p.run(&["run", "a"]).ok();
    // Files keep appearing in the store the way a run's stores add them: by path, making the
    // directories they need.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, store) = (std::sync::Arc::clone(&stop), p.cache().join("v1").join("cas"));
        std::thread::spawn(move || {
            let mut written = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let shard = store.join(format!("{:02x}", written % 256));
                let _ = fs::create_dir_all(&shard);
                if fs::write(shard.join(format!("blob{written}")), b"x").is_ok() {
                    written += 1;
                }
            }
            written
        })
    };
    for _ in 0..5 {
        let clean = p.run(&["cache", "clean", "--yes"]).ok();
        assert!(clean.stdout.contains("removed everything"), "{}", clean.stdout);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    let leftovers: Vec<_> = fs::read_dir(p.cache())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".removing"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// 16.
#[test]
fn args_go_to_the_named_task_only() {
    let p = Project::new(
        "[tasks.dep]\ncommand = 'echo \"dep:$@.\"'\n[tasks.main]\ncommand = 'echo \"main:$@.\"'\ndependencies = [\"dep\"]\n",
    );
    let run = p.run(&["run", "main", "--", "one", "two words"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.iter().any(|line| line.ends_with("main:one two words.")), "{}", run.stdout);
    assert!(lines.iter().any(|line| line.ends_with("dep:.")), "{}", run.stdout);
    // Args are part of the named task's key, not of its dependency's.
    let again = p.run(&["run", "main", "--", "three"]).ok();
    assert!(again.hit("dep") && !again.hit("main"), "{}", again.stderr);
    assert!(again.stdout.contains("main:three."), "{}", again.stdout);
}

#[test]
fn arguments_a_task_never_reads_are_warned_of() {
    let p = Project::new(
        "[tasks.reads]\ncommand = 'echo \"$@\"'\n[tasks.deaf]\ncommand = 'echo deaf'\n[tasks.dep]\ncommand = 'true'\n[tasks.main]\ncommand = 'echo \"$1\"'\ndependencies = [\"dep\"]\n",
    );
    let warning = "these tasks never read them";
    let run = p.run(&["run", "deaf", "reads", "--", "--verbose"]).ok();
    assert!(
        run.stderr.contains(warning) && run.stderr.contains("tasks=\"deaf\""),
        "{}",
        run.stderr
    );
    // A dependency gets no arguments, and a task that reads them is not named.
    let run = p.run(&["run", "main", "--", "x"]).ok();
    assert!(!run.stderr.contains(warning), "{}", run.stderr);
    let run = p.run(&["run", "deaf"]).ok();
    assert!(!run.stderr.contains(warning), "no arguments, no warning: {}", run.stderr);
}

// 17.
#[test]
fn scripts_and_working_dirs() {
    let p = Project::new(&format!(
        r#"[tasks.script]
script = """
{}
total=0
for n in 1 2 3; do
  total=$((total + n))
done
if [ "$total" -eq 6 ]; then
  echo "total $total" > script.out
fi
"""
outputs = ["script.out"]
[tasks.pkg]
command = '{}; pwd > where.txt; cat src.txt > out.txt'
workingDir = "packages/pkg"
inputs = ["src.txt"]
outputs = ["out.txt", "where.txt"]
"#,
        mark("script"),
        mark("pkg")
    ));
    p.write("packages/pkg/src.txt", "pkg source");
    p.write("src.txt", "root source");
    p.run(&["run", "script", "pkg"]).ok();
    assert_eq!(p.read("script.out"), "total 6\n");
    assert_eq!(p.read("packages/pkg/out.txt"), "pkg source");
    let where_ = p.read("packages/pkg/where.txt");
    assert!(where_.trim_end().ends_with("root/packages/pkg"), "{where_}");
    assert!(!p.path("out.txt").exists());
    // The input is relative to the working dir: the root's src.txt is not an input.
    p.write("src.txt", "root edit");
    p.run(&["run", "pkg"]).ok();
    assert_eq!(p.runs("pkg"), 1);
    p.write("packages/pkg/src.txt", "pkg edit");
    p.run(&["run", "pkg"]).ok();
    assert_eq!(p.runs("pkg"), 2);
    assert_eq!(p.read("packages/pkg/out.txt"), "pkg edit");
    // Outputs are restored into the working dir.
    fs::remove_file(p.path("packages/pkg/out.txt")).expect("remove");
    p.write("packages/pkg/src.txt", "pkg source");
    assert!(p.run(&["run", "pkg"]).ok().hit("pkg"));
    assert_eq!(p.read("packages/pkg/out.txt"), "pkg source");
    assert_eq!(p.runs("script"), 1);
}

// 18.
#[test]
fn a_task_timeout_kills_it() {
    let p = Project::new(&format!(
        "[tasks.hang]\ncommand = '{}; sleep 20; touch \"$STATE/finished\"'\ncacheConfig = {{ timeout = 1 }}\n",
        mark("hang")
    ));
    let started = Instant::now();
    let run = p.run(&["run", "hang"]).expect(1);
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(run.stderr.contains("Failed: task \"hang\": timed out after 1 s"), "{}", run.stderr);
    assert!(run.stderr.contains("hang: failed: timed out after 1 s"), "{}", run.stderr);
    assert!(!p.state().join("finished").exists());
    assert_eq!(p.runs("hang"), 1);
}

// A log larger than what is kept in memory spills to a file while the task runs, and is
// stored and replayed whole.
#[test]
fn large_logs_are_stored_and_replayed_whole() {
    let p = Project::new(&format!(
        "[tasks.noisy]\ncommand = '{}; seq 1 300000; seq 1 1000 >&2'\n",
        mark("noisy")
    ));
    let first = p.run(&["run", "noisy"]).ok();
    let expected: String = (1..=300_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(first.stdout, expected);
    let second = p.run(&["run", "noisy"]).ok();
    assert!(second.hit("noisy"), "{}", second.stderr);
    assert_eq!(p.runs("noisy"), 1);
    assert_eq!(second.stdout, expected, "replayed stdout differs");
    let errors: String = (1..=1000).map(|n| format!("{n}\n")).collect();
    assert!(second.stderr.contains(&errors), "stderr replayed");
}

#[test]
fn an_input_edited_while_its_task_runs_keeps_the_result_out_of_the_cache() {
    // The task reads its input only after the test has edited it, as when a file is saved
    // during a long build: its output comes from the new content, its key from the old one.
    let p = Project::new(&format!(
        r#"[tasks.build]
command = '{}; touch "$STATE/started"; while [ ! -e "$STATE/edited" ]; do sleep 0.02; done; cat src.txt > out.txt'
inputs = ["src.txt"]
outputs = ["out.txt"]
"#,
        mark("build")
    ));
    p.write("src.txt", "old");
    let child = p.spawn(&["run", "build"], &[]);
    p.wait_for("started");
    p.write("src.txt", "new");
    fs::write(p.state().join("edited"), "").expect("write marker");
    let run = wait_with_deadline(child, Duration::from_secs(20)).ok();
    assert!(run.stderr.contains("changed while the task ran"), "{}", run.stderr);
    assert!(run.stderr.contains("src.txt"), "{}", run.stderr);
    assert_eq!(p.read("out.txt"), "new");

    // Back to the content the key was made from: a hit would replay "new".
    p.write("src.txt", "old");
    let again = p.run(&["run", "build"]).ok();
    assert!(!again.hit("build"), "{}", again.stderr);
    assert_eq!(p.read("out.txt"), "old");
    assert_eq!(p.runs("build"), 2);
    // Nothing changed during that run: it was stored, and hits now.
    assert!(p.run(&["run", "build"]).ok().hit("build"));
}

#[test]
fn a_task_that_writes_its_outputs_among_its_inputs_is_still_cached() {
    let p = Project::new(&format!(
        "[tasks.gen]\ncommand = '{}; mkdir -p src/gen && cp src/a.txt src/gen/a.copy'\ninputs = [\"src/**\"]\noutputs = [\"src/gen/**\"]\n",
        mark("gen")
    ));
    p.write("src/a.txt", "a");
    let first = p.run(&["run", "gen"]).ok();
    assert!(!first.stderr.contains("changed while"), "{}", first.stderr);
    fs::remove_dir_all(p.path("src/gen")).expect("remove outputs");
    let restored = p.run(&["run", "gen"]).ok();
    assert!(restored.hit("gen"), "{}", restored.stderr);
    assert_eq!(p.read("src/gen/a.copy"), "a");
    assert_eq!(p.runs("gen"), 1);
}

#[test]
fn validate_notes_outputs_that_fall_under_their_own_inputs() {
    let task = |extra: &str| {
        format!(
            "[tasks.gen]\nworkingDir = 'pkg'\ncommand = '{}; mkdir -p dist && cp a.txt dist/a.txt'\ninputs = ['**']\noutputs = ['dist/**']\n{extra}",
            mark("gen")
        )
    };
    let p = Project::new(&task(""));
    p.write("pkg/a.txt", "a");
    let validate = p.run(&["cache", "validate"]).ok();
    assert!(
        validate
            .stdout
            .contains("note: task \"gen\": its output \"dist/**\" falls under its input \"**\""),
        "{}",
        validate.stdout
    );
    // As the note says: the second run sees dist/ among the inputs and executes again.
    p.run(&["run", "gen"]).ok();
    assert!(!p.run(&["run", "gen"]).ok().hit("gen"));
    assert_eq!(p.runs("gen"), 2);

    // With the advice followed there is nothing to note, and the second run hits.
    let p = Project::new(&task("cacheConfig = { ignoreInputs = ['dist/**'] }\n"));
    p.write("pkg/a.txt", "a");
    let validate = p.run(&["cache", "validate"]).ok();
    assert!(!validate.stdout.contains("note:"), "{}", validate.stdout);
    p.run(&["run", "gen"]).ok();
    assert!(p.run(&["run", "gen"]).ok().hit("gen"));
    assert_eq!(p.runs("gen"), 1);
}

#[test]
fn a_symlink_where_an_output_directory_goes_is_not_restored_through_nor_blamed_on_the_cache() {
    let p = Project::new(&format!(
        "[tasks.build]\ncommand = '{}; mkdir -p dist && echo built > dist/out.txt'\noutputs = [\"dist/**\"]\n",
        mark("build")
    ));
    p.run(&["run", "build"]).ok();
    // The project now has dist as a symlink leading outside it.
    let outside = p.state().join("elsewhere");
    fs::create_dir(&outside).expect("create dir");
    fs::remove_dir_all(p.path("dist")).expect("remove dist");
    std::os::unix::fs::symlink(&outside, p.path("dist")).expect("symlink");
    let run = p.run(&["run", "build"]).ok();
    let warnings: Vec<&str> =
        run.stderr.lines().filter(|line| line.contains("cannot restore")).collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("is a symlink in the project"), "{}", run.stderr);
    assert!(!run.stderr.contains("damaged"), "{}", run.stderr);
    // Nothing was restored through the link: the task itself ran (and wrote through it).
    assert_eq!(p.runs("build"), 2);
    let stats = p.run(&["cache", "stats", "--json"]).ok();
    let stats: Value = serde_json::from_str(&stats.stdout).expect("stats json");
    assert_eq!(stats["total"]["corrupt"], 0, "{stats}");
}

#[test]
fn a_background_process_left_holding_the_output_does_not_hold_up_the_run() {
    let p = Project::new(&format!(
        r#"[tasks.late]
command = '{}; (sleep 0.05; echo late) & echo early'
[tasks.daemon]
command = '{}; echo started; sleep 60 & echo $! > "$STATE/daemon.pid"'
[tasks.detached]
command = '{}; echo detached; setsid sleep 60 & echo $! > "$STATE/detached.pid"'
"#,
        mark("late"),
        mark("daemon"),
        mark("detached")
    ));
    // Output written shortly after the shell exits is still waited for, and captured.
    let late = p.run(&["run", "late"]).ok();
    assert!(late.stdout.contains("early") && late.stdout.contains("late"), "{}", late.stdout);
    assert!(!late.stderr.contains("stopping them"), "{}", late.stderr);
    assert!(p.run(&["run", "late"]).ok().stdout.contains("late"), "replayed whole");

    // A process of the task's group that keeps the pipes open is stopped.
    let started = Instant::now();
    let daemon = p.run(&["run", "daemon"]).ok();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(daemon.stdout.contains("started"), "{}", daemon.stdout);
    assert!(
        daemon.stderr.contains("still held its output open; stopping them"),
        "{}",
        daemon.stderr
    );
    assert!(!alive(p.pid("daemon.pid").expect("pid")), "the background process survived");
    assert!(p.run(&["run", "daemon"]).ok().hit("daemon"));

    // One that left the group cannot be signalled: the run stops reading from it instead.
    let started = Instant::now();
    let detached = p.run(&["run", "detached"]).ok();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(detached.stdout.contains("detached"), "{}", detached.stdout);
    let pid = p.pid("detached.pid").expect("pid");
    // SAFETY: kill only sends a signal, to the process this test's task started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_lone_tasks_output_passes_through_byte_for_byte_live_and_replayed() {
    // 3 MB and not one newline, longer than any buffer: a lone task's output is passed on as
    // it comes, stored and replayed exactly, with no newline added, so `cuenv run minified >
    // out` writes what the command wrote.
    let p = Project::new(&format!(
        "[tasks.minified]\ncommand = '{}; head -c 3000000 /dev/zero | tr \"\\\\0\" x; printf \"no end\" >&2'\n",
        mark("minified")
    ));
    let first = p.run(&["run", "minified"]).ok();
    assert!(first.stdout == "x".repeat(3_000_000), "live output differs");
    let second = p.run(&["run", "minified"]).ok();
    assert!(second.hit("minified"), "{}", second.stderr);
    assert!(second.stdout == "x".repeat(3_000_000), "replayed output differs");
    // cuenv's own lines on stderr start on a line of their own after the task's unfinished one.
    assert!(first.stderr.starts_with("no end\n"), "{}", first.stderr);
    assert!(second.stderr.contains("\nno end\n"), "{}", second.stderr);
}

#[test]
fn a_lone_tasks_unfinished_line_shows_while_the_task_runs() {
    // A row of test dots, or a prompt: the task prints part of a line, then waits for the
    // test to answer. Held back until its newline, the part would never be seen in time.
    use std::io::Read;
    let p = Project::new(
        "[tasks.dots]\ncommand = 'printf \"..\"; printf \"wait\" >&2; \
         while [ ! -e go ]; do sleep 0.05; done; echo ok'\ncache = false\n",
    );
    let mut child = p.spawn(&["run", "dots"], &[]);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    // Should the pieces never come, a watchdog lets the task go after 30 s, so the reads end.
    let go = p.path("go");
    let watchdog = std::thread::spawn(move || {
        let started = Instant::now();
        while !go.exists() && started.elapsed() < Duration::from_secs(30) {
            pause(50);
        }
        let _ = fs::write(go, "");
    });
    let mut dots = [0; 2];
    let mut note = [0; 4];
    let read = stdout.read_exact(&mut dots).and_then(|()| stderr.read_exact(&mut note));
    let in_time = !p.path("go").exists();
    // Only now may the task finish.
    p.write("go", "");
    watchdog.join().expect("watchdog");
    read.expect("read the unfinished lines");
    assert!(in_time, "the unfinished lines came only once the task was let go");
    assert_eq!((&dots, &note), (b"..", b"wait"));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the rest");
    assert_eq!(rest, "ok\n");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_run_without_tasks_lists_a_screenful_of_them() {
    let toml: String = (0..30).map(|n| format!("[tasks.t{n:02}]\ncommand = 'true'\n")).collect();
    let p = Project::new(&toml);
    let run = p.run(&["run"]).expect(2);
    let names: Vec<String> = (0..20).map(|n| format!("t{n:02}")).collect();
    assert!(
        run.stderr.contains(&format!(
            "no task named; give task names or --all (tasks in {}: {} and 10 more (of 30 tasks))",
            p.path("cuenv.toml").display(),
            names.join(", ")
        )),
        "{}",
        run.stderr
    );
}

/// A high `--jobs` under a low limit on open files: the run fits itself to the limit instead
/// of failing task after task with "Too many open files".
#[test]
fn a_high_jobs_count_fits_a_low_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let toml: String = (0..150)
        .map(|n| format!("[tasks.t{n}]\ncommand = 'echo {n}'\ninputs = ['src/**']\n"))
        .collect();
    let p = Project::new(&toml);
    p.write("src/a.txt", "a");
    let run_with_limit = |soft: u64, hard: u64| -> Run {
        let mut command = p.command(&["run", "--all", "-j", "100"], &[]);
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        command.output().expect("run cuenv").into()
    };
    // Every task in flight once held a file of its own (its cross-process lock), so 100 at
    // once ran out of 128 files.
    let run = run_with_limit(128, 128).ok();
    assert!(run.stderr.contains("Tasks:  150 total: 150 executed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("note: 100 tasks at once would need about 864 open files, and this process may open 128 (`ulimit -n`): running at most 8 at once"),
        "{}",
        run.stderr
    );
    // A soft limit below a high enough hard one is raised instead: no note, every task a hit.
    let run = run_with_limit(128, 4096).ok();
    assert!(!run.stderr.contains("note:"), "{}", run.stderr);
    assert!(run.stderr.contains("0 executed, 150 cached"), "{}", run.stderr);
}

#[test]
fn a_cache_directory_inside_the_project_is_never_an_output() {
    let toml =
        format!("[tasks.all]\ncommand = '{}; echo hi > a.txt'\noutputs = ['**']\n", mark("all"));
    let p = Project::new(&toml);
    let (cache, home) = (p.path(".cache"), p.dir.path().join("home"));
    // The same HOME for both projects: it is on the default env_include.
    let cache_env = [
        ("CUENV_CACHE_DIR", cache.to_str().expect("utf-8 path")),
        ("HOME", home.to_str().expect("utf-8 path")),
    ];
    p.run_env(&["run", "all"], &cache_env).ok();
    p.run_env(&["run", "all"], &cache_env).ok();
    // A copy of the project replays the result: the task's file, and nothing of the cache.
    let copy = Project::new(&toml);
    let replay = copy.run_env(&["run", "all"], &cache_env).ok();
    assert!(replay.hit("all"), "{}", replay.stderr);
    assert_eq!(copy.read("a.txt"), "hi\n");
    assert!(!copy.path(".cache").exists(), "the cache was stored as an output");
}

#[test]
fn a_task_file_without_tasks_says_so() {
    let p = Project::new("# nothing yet\n");
    let run = p.run(&["run", "--all"]).expect(2);
    assert!(run.stderr.contains("cuenv.toml defines no tasks"), "{}", run.stderr);
}

#[test]
fn outputs_that_match_nothing_are_warned_about_and_the_logs_still_cached() {
    let toml = format!(
        "[tasks.gen]\ncommand = '{}; mkdir -p build; echo made'\noutputs = ['dist/**']\n\n\
         [tasks.ok]\ncommand = '{}; mkdir -p dist; echo x > dist/x'\noutputs = ['dist/**']\n",
        mark("gen"),
        mark("ok")
    );
    let p = Project::new(&toml);
    let first = p.run(&["run", "gen"]).ok();
    let warning = "the task's declared outputs matched nothing";
    assert!(first.stderr.contains(warning), "{}", first.stderr);
    assert!(first.stderr.contains(r#"outputs=["dist/**"]"#), "{}", first.stderr);
    // The store's warning comes before the summary, which ends the output.
    let at = |text: &str| first.stderr.find(text).expect(text);
    assert!(at(warning) < at(" Tasks:"), "{}", first.stderr);
    let second = p.run(&["run", "gen"]).ok();
    assert!(second.hit("gen"), "{}", second.stderr);
    assert!(second.stdout.contains("made"), "the log is replayed: {}", second.stdout);
    // A task whose outputs matched something is not warned about.
    let ok = p.run(&["run", "ok"]).ok();
    assert!(!ok.stderr.contains(warning), "{}", ok.stderr);
}

#[test]
fn a_cache_directory_named_relatively_or_through_dot_dot_is_never_an_input() {
    let toml = format!(
        "[tasks.all]\ncommand = '{}; echo hi > out.txt'\ninputs = ['**']\n\
         outputs = ['out.txt']\ncacheConfig = {{ ignoreInputs = ['out.txt'] }}\n",
        mark("all")
    );
    let p = Project::new(&toml);
    p.write("src/a.txt", "a");
    // Relative to the current directory (the project root), with a `..` on the way.
    for cache in ["sub/../.cache", ".cache"] {
        let env = [("CUENV_CACHE_DIR", cache)];
        let first = p.run_env(&["run", "all"], &env).ok();
        assert!(!first.stderr.contains("inputs changed"), "{}", first.stderr);
        let second = p.run_env(&["run", "all"], &env).ok();
        assert!(second.hit("all"), "the cache was hashed as an input: {}", second.stderr);
    }
    assert_eq!(p.runs("all"), 1, "both spellings name one cache");
}

#[test]
fn the_summary_names_every_failure_and_the_signal_that_ended_a_task() {
    let p = Project::new(&format!(
        "[tasks.exits]\ncommand = '{}; exit 3'\n[tasks.crashes]\ncommand = '{}; kill -SEGV $$'\n\
         [tasks.fine]\ncommand = '{}'\n",
        mark("exits"),
        mark("crashes"),
        mark("fine")
    ));
    let run = p.run(&["run", "--continue", "exits", "crashes", "fine"]).expect(1);
    let summary: Vec<&str> =
        run.stderr.lines().filter(|line| line.starts_with(" Failed:")).collect();
    assert_eq!(summary.len(), 2, "{}", run.stderr);
    assert!(summary.contains(&" Failed: task \"exits\": exit code 3"), "{}", run.stderr);
    assert!(
        summary.contains(&" Failed: task \"crashes\": exit code 139 (terminated by SIGSEGV)"),
        "{}",
        run.stderr
    );
    assert_eq!(p.runs("fine"), 1);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_takes_the_tasks_along() {
    // The task ignores SIGTERM, so the first Ctrl-C alone would wait out the grace before SIGKILL.
    let p = Project::new(&format!(
        r#"[tasks.stubborn]
command = '{}; trap "" TERM; echo $$ > "$STATE/sh.pid"; sleep 30 & echo $! > "$STATE/sleep.pid"; wait $!'
"#,
        mark("stubborn")
    ));
    let child = p.spawn(&["run", "stubborn"], &[]);
    p.wait_for("sleep.pid");
    let (shell, sleep) = (p.pid("sh.pid").expect("sh.pid"), p.pid("sleep.pid").expect("sleep.pid"));
    let cuenv = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill only sends a signal, to our own child.
    assert_eq!(unsafe { libc::kill(cuenv, libc::SIGINT) }, 0);
    pause(200);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(cuenv, libc::SIGINT) }, 0);
    let run = wait_with_deadline(child, Duration::from_secs(10)).expect(130);
    assert!(run.stderr.contains("interrupted again"), "{}", run.stderr);
    assert!(!alive(shell), "the task's shell survived");
    assert!(!alive(sleep), "the task's process group survived");
}

#[test]
fn a_dry_run_keys_tasks_side_by_side_and_reports_the_first_failure_in_order() {
    // Thirty tasks whose keys may all be computed at once (-j 30); each reads its own file.
    let mut toml = String::new();
    for i in 0..30 {
        toml.push_str(&format!("[tasks.t{i:02}]\ncommand = 'true'\ninputs = ['in{i:02}.txt']\n"));
        if i >= 10 {
            toml.push_str(&format!("dependencies = ['t{:02}']\n", i - 10));
        }
    }
    let p = Project::new(&toml);
    for i in 0..30 {
        p.write(&format!("in{i:02}.txt"), &i.to_string());
    }
    let json = p.run(&["run", "--all", "-j", "30", "--dry-run", "--json"]).ok();
    let entries: Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    let tasks: Vec<&str> =
        entries.as_array().expect("array").iter().map(|e| e["task"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tasks, expected, "in the run's order");
    let manifest = &entries[25]["manifest"];
    assert_eq!(manifest["dependencies"]["t15"], entries[15]["digest"]);

    // Two tasks fail; whichever key fails first, the one reported is the earlier in order.
    fs::remove_file(p.path("in07.txt")).unwrap();
    fs::remove_file(p.path("in03.txt")).unwrap();
    let dry = p.run(&["run", "--all", "-j", "30", "--dry-run"]);
    assert_ne!(dry.code, 0);
    assert!(
        dry.stderr.contains("task \"t03\": input \"in03.txt\" does not exist"),
        "{}",
        dry.stderr
    );
}

#[test]
fn an_environment_variable_a_key_cannot_spell_is_an_error_only_where_a_key_would_take_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let p = Project::new(&format!(
        "[tasks.t]\ncommand = '{}'\n[tasks.narrow]\ncommand = 'true'\ncacheConfig = {{ envInclude = ['PATH'] }}\n",
        mark("t")
    ));
    let run_with = |name: &[u8], args: &[&str]| -> Run {
        let mut command = p.command(args, &[]);
        command.env(OsStr::from_bytes(name), OsStr::from_bytes(b"caf\xe9"));
        command.output().expect("run cuenv").into()
    };
    // CUENV_* is on the default env_include: left out of the key, it could change unseen.
    let refused = run_with(b"CUENV_FLAVOUR", &["run", "t"]).expect(2);
    assert!(refused.stderr.contains("environment variable CUENV_FLAVOUR is not valid UTF-8"));
    assert!(refused.stderr.contains("task \"t\""), "{}", refused.stderr);
    assert_eq!(p.runs("t"), 0);
    // `cache explain` shows keys: the same refusal.
    let explain = run_with(b"CUENV_FLAVOUR", &["cache", "explain", "t"]).expect(2);
    assert!(explain.stderr.contains("CUENV_FLAVOUR is not valid UTF-8"), "{}", explain.stderr);
    // A task whose filter does not keep it, or a variable no filter keeps, is fine.
    run_with(b"CUENV_FLAVOUR", &["run", "narrow"]).ok();
    run_with(b"OTHER", &["run", "t"]).ok();
    assert_eq!(p.runs("t"), 1);
}

#[test]
fn no_cache_runs_without_touching_the_cache_directory() {
    let p = Project::new(&format!("[tasks.t]\ncommand = '{}'\n", mark("t")));
    // A cache directory that cannot be used (here a file stands where it goes).
    p.write("not-a-dir", "x");
    let unusable = p.path("not-a-dir");
    let env = [("CUENV_CACHE_DIR", unusable.to_str().expect("utf-8 path"))];
    let refused = p.run_env(&["run", "t"], &env).expect(2);
    assert!(refused.stderr.contains("it is not a directory"), "{}", refused.stderr);
    // Turning the cache off is the way past it, whichever way it is turned off.
    p.run_env(&["run", "t", "--no-cache"], &env).ok();
    p.run_env(&["run", "t"], &[env[0], ("CUENV_CACHE_MODE", "off")]).ok();
    assert_eq!(p.runs("t"), 2);
    // Nor is a missing one created.
    let missing = p.dir.path().join("never-made");
    let env = [("CUENV_CACHE_DIR", missing.to_str().expect("utf-8 path"))];
    p.run_env(&["run", "t", "--no-cache"], &env).ok();
    assert!(!missing.exists());
}

#[test]
fn validate_notes_cached_tasks_whose_key_holds_no_file() {
    let p = Project::new(&format!(
        "[tasks.build]\ncommand = '{}; cat src/a.txt'\n\
         [tasks.bundle]\ncommand = 'true'\ndependencies = ['build']\n\
         [tasks.fetch]\ncommand = 'true'\ncacheKey = 'v1'\n\
         [tasks.stamp]\ncommand = 'date'\ncache = false\n",
        mark("build")
    ));
    p.write("src/a.txt", "a");
    let notes = p.run(&["cache", "validate"]).ok().stdout;
    assert!(
        notes.contains("note: task \"build\" is cached but declares no inputs and no dependencies"),
        "{notes}"
    );
    // Following its dependencies, keyed by hand, or not cached: nothing to note.
    assert_eq!(notes.matches("note:").count(), 1, "{notes}");
    // As the note says: an edit of the file it reads goes unseen.
    p.run(&["run", "build"]).ok();
    p.write("src/a.txt", "b");
    let second = p.run(&["run", "build"]).ok();
    assert!(second.hit("build") && second.stdout == "a", "{}", second.stdout);

    let p = Project::new("[tasks.build]\ncommand = 'cat src/a.txt'\ninputs = ['src/**']\n");
    p.write("src/a.txt", "a");
    let notes = p.run(&["cache", "validate"]).ok().stdout;
    assert!(!notes.contains("note:"), "{notes}");
}

#[test]
fn validate_notes_inputs_that_take_in_the_outputs_of_tasks_not_depended_on() {
    let toml = |lint_extra: &str, use_extra: &str| {
        format!(
            "[tasks.lint]\ncommand = '{}'\ninputs = ['**']\n{lint_extra}\n\
             [tasks.build]\ncommand = 'mkdir -p dist && echo x > dist/x'\ninputs = ['src/**']\noutputs = ['dist/**']\ndependencies = ['lint']\n\
             [tasks.gen]\ncommand = 'mkdir -p gen && echo g > gen/g'\noutputs = ['gen/**']\ncacheKey = 'g1'\n\
             [tasks.use]\ncommand = 'cat gen/g'\ninputs = ['gen/**']\n{use_extra}\n\
             [tasks.test]\ncommand = 'cat dist/x'\ninputs = ['dist/**']\ndependencies = ['build']\n",
            mark("lint")
        )
    };
    let p = Project::new(&toml("", ""));
    p.write("src/a.txt", "a");
    let notes = p.run(&["cache", "validate"]).ok().stdout;
    // A task that runs before the writer: its key takes in the previous run's outputs.
    assert!(
        notes.contains("task \"lint\": its input \"**\" may include the output \"dist/**\" of task \"build\", which runs after it"),
        "{notes}"
    );
    // One that may run beside it.
    assert!(
        notes.contains("task \"use\": its input \"gen/**\" may include the output \"gen/**\" of task \"gen\", which it does not depend on"),
        "{notes}"
    );
    // Reading what a dependency wrote is what dependencies are for.
    assert!(!notes.contains("task \"test\""), "{notes}");
    assert_eq!(notes.matches("note:").count(), 2, "{notes}");
    // As the note says: with nothing edited, lint executes again once build has written dist/.
    p.run(&["run", "build"]).ok();
    p.run(&["run", "build"]).ok();
    assert_eq!(p.runs("lint"), 2, "dist/ appeared among lint's inputs");

    // With the advice followed there is nothing to note.
    let followed =
        toml("cacheConfig = { ignoreInputs = ['dist/**', 'gen/**'] }", "dependencies = ['gen']");
    let p = Project::new(&followed);
    let notes = p.run(&["cache", "validate"]).ok().stdout;
    assert!(!notes.contains("note:"), "{notes}");
}
