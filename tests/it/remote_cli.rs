//! The remote cache through `cuenv run` and `cuenv cache test`, against a real BuildGrid:
//! a second machine replays everything, a server dying mid-run, a read-only server, and
//! refused credentials or a wrong instance name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::buildgrid::{BuildGrid, BuildGridOptions};

const GRAPH: &str = r#"
[tasks.gen]
command = "echo gen >> \"$RUNS_LOG\"; mkdir -p out && printf 'generated\n' > out/gen.txt && printf '#!/bin/sh\necho tool\n' > out/tool.sh && chmod +x out/tool.sh && ln -sf gen.txt out/latest.txt && echo 'gen done'"
inputs = ["src/**"]
outputs = ["out/gen.txt", "out/tool.sh", "out/latest.txt"]

[tasks.build]
command = "echo build >> \"$RUNS_LOG\"; mkdir -p dist/logs && cat out/gen.txt src/*.txt > dist/app.txt && echo 'build done' && echo 'a warning' >&2"
inputs = ["src/**", "out/gen.txt"]
outputs = ["dist/**"]
dependencies = ["gen"]

[tasks.test]
command = "echo test >> \"$RUNS_LOG\"; grep -q generated dist/app.txt && echo 'tests passed'"
inputs = ["dist/**"]
dependencies = ["build", "lint"]

# Reads only its own sources, so with a remote its result is fetched while "gen" is.
[tasks.lint]
command = "echo lint >> \"$RUNS_LOG\"; mkdir -p reports && cat src/*.txt > reports/lint.txt"
inputs = ["src/**"]
outputs = ["reports/lint.txt"]
dependencies = ["gen"]
"#;

/// One "machine": a project directory, a cache directory and a config directory.
struct Machine {
    _dirs: tempfile::TempDir,
    project: PathBuf,
    cache: PathBuf,
    config: PathBuf,
    runs: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let project = dirs.path().join("project");
        fs::create_dir_all(project.join("src")).unwrap();
        fs::write(project.join("cuenv.toml"), GRAPH).unwrap();
        fs::write(project.join("src/a.txt"), "alpha\n").unwrap();
        fs::write(project.join("src/b.txt"), "beta\n").unwrap();
        let config = dirs.path().join("config");
        fs::create_dir_all(&config).unwrap();
        Machine {
            project,
            cache: dirs.path().join("cache"),
            config,
            runs: dirs.path().join("runs.log"),
            _dirs: dirs,
        }
    }

    /// Writes the cache config JSON and returns its path.
    fn remote_config(&self, json: &str) -> PathBuf {
        let path = self.config.join("cache.json");
        fs::write(&path, json).unwrap();
        path
    }

    fn command(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cuenv"));
        command
            .args(args)
            .current_dir(&self.project)
            .env("CUENV_CACHE_DIR", &self.cache)
            .env("XDG_CONFIG_HOME", &self.config)
            .env("RUNS_LOG", &self.runs)
            .env("CUENV_REMOTE_CACHE_URL", endpoint)
            .env_remove("CUENV_CACHE_CONFIG")
            .env_remove("CUENV_CACHE_MODE")
            .env("NO_COLOR", "1");
        command
    }

    fn run(&self, endpoint: &str, args: &[&str]) -> Output {
        self.command(endpoint, args).output().unwrap()
    }

    /// [`Machine::command`] with `--cache-config config` first.
    fn command_with(&self, endpoint: &str, config: &Path, args: &[&str]) -> Command {
        let mut command = self.command(endpoint, &["--cache-config", config.to_str().unwrap()]);
        command.args(args);
        command
    }

    /// [`Machine::run`] with `--cache-config config` first.
    fn run_with(&self, endpoint: &str, config: &Path, args: &[&str]) -> Output {
        self.command_with(endpoint, config, args).output().unwrap()
    }

    /// The tasks executed so far, sorted (tasks without an order between them may run in
    /// either).
    fn sorted_runs(&self) -> Vec<String> {
        let mut runs = self.runs();
        runs.sort();
        runs
    }

    fn runs(&self) -> Vec<String> {
        fs::read_to_string(&self.runs).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_second_machine_replays_every_task_from_the_remote() {
    let server = BuildGrid::start(BuildGridOptions::default()).await;
    let endpoint = server.endpoint();
    let a = Machine::new();
    let first = a.run(&endpoint, &["run", "test"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(a.sorted_runs(), ["build", "gen", "lint", "test"]);
    // Each task asked the remote once, whether its result was prefetched or looked up.
    let stats = a.run(&endpoint, &["cache", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["total"]["remote_misses"], 4, "{stats}");

    // Machine B: an empty cache, the same sources at another path.
    let b = Machine::new();
    fs::remove_dir_all(&b.project).unwrap();
    copy_tree(&a.project.join("src"), &b.project.join("src"));
    fs::copy(a.project.join("cuenv.toml"), b.project.join("cuenv.toml")).unwrap();
    let second = b.run(&endpoint, &["run", "test"]);
    let stderr = text(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(b.runs().is_empty(), "machine B executed {:?}\n{stderr}", b.runs());
    assert_eq!(stderr.matches("cache hit (remote)").count(), 4, "{stderr}");
    assert!(text(&second.stdout).contains("tests passed"), "logs are replayed");
    assert!(stderr.contains("a warning"), "stderr is replayed too: {stderr}");
    for path in ["out/gen.txt", "out/tool.sh", "dist/app.txt", "reports/lint.txt"] {
        assert_eq!(
            fs::read(b.project.join(path)).unwrap(),
            fs::read(a.project.join(path)).unwrap(),
            "{path}"
        );
    }
    let mode = fs::metadata(b.project.join("out/tool.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit restored");
    assert_eq!(fs::read_link(b.project.join("out/latest.txt")).unwrap(), Path::new("gen.txt"));
    assert!(b.project.join("dist/logs").is_dir(), "an empty output directory is recreated");

    // B's local cache now has everything: a third run hits locally without the server.
    drop(server);
    let third = b.run("grpc://127.0.0.1:1", &["run", "test"]);
    assert!(third.status.success());
    assert_eq!(
        text(&third.stderr).matches("cache hit (local)").count(),
        4,
        "{}",
        text(&third.stderr)
    );
}

#[tokio::test]
async fn a_server_killed_mid_run_never_fails_the_run() {
    let mut server = BuildGrid::start(BuildGridOptions::default()).await;
    let machine = Machine::new();
    // Each task reads the one before's output, so each is looked up when it is about to run
    // (no prefetch): the lookups after the kill meet a dead server.
    let chain: String = (1..=6)
        .map(|i| {
            let deps = if i > 1 {
                format!("dependencies = [\"t{0}\"]\ninputs = [\"out/t{0}.txt\"]", i - 1)
            } else {
                String::new()
            };
            format!(
                "[tasks.t{i}]\ncommand = \"sleep 0.3; echo t{i} >> \\\"$RUNS_LOG\\\"; mkdir -p out && echo {i} > out/t{i}.txt\"\noutputs = [\"out/t{i}.txt\"]\n{deps}\n\n"
            )
        })
        .collect();
    fs::write(machine.project.join("cuenv.toml"), chain).unwrap();
    let child = machine
        .command(&server.endpoint(), &["run", "t6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(machine.runs(), ["t1", "t2", "t3", "t4", "t5", "t6"]);
    for i in 1..=6 {
        assert_eq!(
            fs::read_to_string(machine.project.join(format!("out/t{i}.txt"))).unwrap(),
            format!("{i}\n")
        );
    }
    assert_eq!(
        stderr.matches("suspending remote calls").count(),
        1,
        "the breaker opens once: {stderr}"
    );
    let stats = machine.run("grpc://127.0.0.1:1", &["cache", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats["total"]["remote_errors"].as_u64().unwrap() > 0, "{stats}");
}

#[tokio::test]
async fn a_read_only_server_serves_hits_and_uploads_are_skipped_with_one_warning() {
    let options = BuildGridOptions {
        allow_updates: false,
        writer_instance: Some("writer".into()),
        ..BuildGridOptions::default()
    };
    let server = BuildGrid::start(options).await;
    let endpoint = server.endpoint();
    // CI fills the cache through the writer instance.
    let ci = Machine::new();
    let config = ci.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "instance_name": "writer"}}}}"#
    ));
    let seeded = ci.run_with(&endpoint, &config, &["run", "test"]);
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));

    // A developer reads through the read-only instance: hits work.
    let dev = Machine::new();
    let hits = dev.run(&endpoint, &["run", "test"]);
    let stderr = text(&hits.stderr);
    assert!(hits.status.success(), "{stderr}");
    assert!(dev.runs().is_empty(), "{stderr}");
    assert_eq!(stderr.matches("cache hit (remote)").count(), 4, "{stderr}");

    // A new result is not uploaded: one warning, the run succeeds.
    fs::write(dev.project.join("src/a.txt"), "changed\n").unwrap();
    let changed = dev.run(&endpoint, &["run", "test"]);
    let stderr = text(&changed.stderr);
    assert!(changed.status.success(), "{stderr}");
    assert_eq!(stderr.matches("uploads are skipped").count(), 1, "{stderr}");
}

#[tokio::test]
async fn refused_credentials_and_wrong_instances_fail_cache_test_but_not_runs() {
    let server =
        BuildGrid::start(BuildGridOptions { require_token: true, ..BuildGridOptions::default() })
            .await;
    let endpoint = server.endpoint();
    let machine = Machine::new();
    let bad_token = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "auth_token": "garbage"}}}}"#
    ));
    let test = machine.run_with(&endpoint, &bad_token, &["cache", "test"]);
    let stdout = text(&test.stdout);
    assert_eq!(test.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  remote cache:") && stdout.contains("UNAUTHENTICATED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  write, read, verify, remove a probe entry"),
        "local checks still run: {stdout}"
    );
    let run = machine.run_with(&endpoint, &bad_token, &["run", "test"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(machine.sorted_runs(), ["build", "gen", "lint", "test"]);

    let good = server.token();
    let wrong_instance = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "auth_token": "{good}", "instance_name": "nope"}}}}"#
    ));
    let test = machine.run_with(&endpoint, &wrong_instance, &["cache", "test"]);
    let stdout = text(&test.stdout);
    assert_eq!(test.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("remote rejected instance name \"nope\""), "{stdout}");

    let right = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "auth_token": "{good}"}}}}"#
    ));
    let test = machine.run_with(&endpoint, &right, &["cache", "test"]);
    let stdout = text(&test.stdout);
    assert_eq!(test.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS  remote cache:") && stdout.contains("digest SHA256"), "{stdout}");
}

#[tokio::test]
async fn a_remote_that_never_answers_costs_a_run_one_deadline() {
    let machine = Machine::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("grpc://{}", silent.local_addr().unwrap());
    let config = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "timeout_seconds": 3}}}}"#
    ));
    let started = std::time::Instant::now();
    let output = machine.run_with(&endpoint, &config, &["run", "test"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!machine.runs().is_empty(), "the tasks ran locally");
    assert!(stderr.contains("did not negotiate its capabilities"), "{stderr}");
    // One missed deadline opens the breaker; asking again per call until the breaker's
    // threshold took five (15 s), retrying the deadline four more each.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}\n{stderr}");
    drop(silent);
}

/// Connections `listener` (non-blocking) has waiting, taken.
fn accepted(listener: &std::net::TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

#[tokio::test]
async fn a_remote_that_never_answered_is_not_called_again_until_its_cooldown_ends() {
    let machine = Machine::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let endpoint = format!("grpc://{}", silent.local_addr().unwrap());
    let config = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "timeout_seconds": 1}}}}"#
    ));
    let first = machine.run_with(&endpoint, &config, &["run", "test"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(accepted(&silent) >= 1, "the first run asked the remote");
    // An edit misses locally, so the next run has something to ask the remote.
    fs::write(machine.project.join("src/a.txt"), "edited\n").unwrap();
    let second = machine.run_with(&endpoint, &config, &["run", "test"]);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert_eq!(machine.runs().len(), 8, "every task ran twice: {:?}", machine.runs());
    assert!(stderr.contains("remote cache failed in an earlier run"), "{stderr}");
    assert_eq!(accepted(&silent), 0, "the second run asked the remote again:\n{stderr}");
    // `cuenv cache test` asks it all the same.
    let test = machine.run_with(&endpoint, &config, &["cache", "test"]);
    assert_ne!(test.status.code(), Some(0), "{}", text(&test.stdout));
    assert!(accepted(&silent) >= 1, "cache test did not ask the remote");
}

/// Runs `task` against a server that accepts connections and never answers (every call waits
/// for its 60 s deadline), sends Ctrl-C after 800 ms, and returns the tasks that executed.
async fn interrupt_while_the_remote_hangs(machine: &Machine, task: &str) -> Vec<String> {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("grpc://{}", silent.local_addr().unwrap());
    let config = machine.remote_config(&format!(
        r#"{{"remote_cache": {{"endpoint": "{endpoint}", "timeout_seconds": 60}}}}"#
    ));
    let child = machine
        .command_with(&endpoint, &config, &["run", task])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough for every first-wave lookup to be waiting on the silent server.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal, to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let interrupted_at = std::time::Instant::now();
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = text(&output.stderr);
    assert!(interrupted_at.elapsed() < Duration::from_secs(10), "{stderr}");
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Interrupted"), "{stderr}");
    drop(silent);
    machine.runs()
}

#[tokio::test]
async fn ctrl_c_while_a_remote_lookup_hangs_stops_the_run_at_once() {
    // The first tasks wait for their prefetch.
    let machine = Machine::new();
    let runs = interrupt_while_the_remote_hangs(&machine, "test").await;
    assert!(runs.is_empty(), "nothing started while its lookup waited: {runs:?}");

    // A task that reads its dependency's output is looked up when it is about to run.
    let machine = Machine::new();
    let graph = "[tasks.prep]\ncommand = \"echo prep >> \\\"$RUNS_LOG\\\"; mkdir -p out && echo x > out/p.txt\"\noutputs = [\"out/p.txt\"]\ncache = false\n\n\
                 [tasks.use]\ncommand = \"echo use >> \\\"$RUNS_LOG\\\"; cat out/p.txt\"\ninputs = [\"out/p.txt\"]\ndependencies = [\"prep\"]\n";
    fs::write(machine.project.join("cuenv.toml"), graph).unwrap();
    assert_eq!(interrupt_while_the_remote_hangs(&machine, "use").await, ["prep"]);
}
