//! Key generation tests: determinism, every input rule, the env filter and the stat cache.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::{EnvFilter, fsio};

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn engine() -> KeyEngine {
    KeyEngine::new(KeyGenSettings { threads: 2, ..KeyGenSettings::default() }).unwrap()
}

fn sample_tree(root: &Path) {
    write(root, "src/main.rs", "fn main() {}");
    write(root, "src/lib/util.rs", "pub fn util() {}");
    write(root, "src/notes.tmp", "scratch");
    write(root, "README.md", "readme");
    write(root, "tools/run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("tools/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("main.rs", root.join("src/link.rs")).unwrap();
}

fn request(root: &Path) -> KeyRequest {
    let mut request = KeyRequest::new(root, "build", "cargo build");
    request.inputs = vec!["src/**/*.rs".into(), "README.md".into(), "tools/**".into()];
    request
}

fn key(engine: &KeyEngine, request: &KeyRequest) -> ActionKey {
    engine.compute(request).unwrap()
}

#[test]
fn same_tree_in_two_directories_gives_the_same_key() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(a.path());
    sample_tree(b.path());
    let first = key(&engine(), &request(a.path()));
    let again = key(&engine(), &request(a.path()));
    let copy = key(&engine(), &request(b.path()));
    assert_eq!(first.digest, again.digest);
    assert_eq!(first.digest, copy.digest);
    assert_eq!(first.manifest, copy.manifest);
    let json = serde_json::to_string(&first.manifest).unwrap();
    assert!(!json.contains(a.path().to_str().unwrap()), "absolute path leaked: {json}");
    let paths: Vec<&str> = first.manifest.input_files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["README.md", "src/lib/util.rs", "src/link.rs", "src/main.rs", "tools/run.sh"]
    );
    let kinds: Vec<InputKind> = first.manifest.input_files().iter().map(|f| f.kind).collect();
    use InputKind::*;
    assert_eq!(kinds, [File, File, Symlink, File, Executable]);
}

#[test]
fn content_mode_and_link_changes_miss_and_reverting_hits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sample_tree(root);
    let engine = engine();
    let base = key(&engine, &request(root)).digest;

    write(root, "src/main.rs", "fn main() { changed() }");
    assert_ne!(key(&engine, &request(root)).digest, base);
    write(root, "src/main.rs", "fn main() {}");
    assert_eq!(key(&engine, &request(root)).digest, base);

    fs::set_permissions(root.join("tools/run.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_ne!(key(&engine, &request(root)).digest, base);
    fs::set_permissions(root.join("tools/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(key(&engine, &request(root)).digest, base);

    fs::remove_file(root.join("src/link.rs")).unwrap();
    symlink("lib/util.rs", root.join("src/link.rs")).unwrap();
    assert_ne!(key(&engine, &request(root)).digest, base);
}

#[test]
fn symlinks_are_hashed_as_links_not_followed() {
    let (project, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(outside.path(), "secret.txt", "one");
    symlink(outside.path().join("secret.txt"), project.path().join("data")).unwrap();
    let mut request = KeyRequest::new(project.path(), "t", "cat data");
    request.inputs = vec!["data".into()];
    let engine = engine();
    let before = key(&engine, &request);
    write(outside.path(), "secret.txt", "two, longer");
    let after = key(&engine, &request);
    assert_eq!(before.digest, after.digest);
    assert_eq!(after.manifest.input_files()[0].kind, InputKind::Symlink);
}

#[test]
fn ignore_patterns_without_slash_match_at_any_depth() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    let mut request = request(dir.path());
    request.inputs = vec!["src/**".into()];
    let engine = engine();
    let all = key(&engine, &request);
    assert!(all.manifest.input_files().iter().any(|f| f.path == "src/notes.tmp"));
    request.ignore = vec!["*.tmp".into(), "src/lib/**".into()];
    let filtered = key(&engine, &request);
    let paths: Vec<&str> =
        filtered.manifest.input_files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["src/link.rs", "src/main.rs"]);
    write(dir.path(), "src/deep/more.tmp", "ignored too");
    assert_eq!(key(&engine, &request).digest, filtered.digest);
}

#[test]
fn literal_inputs_must_exist_and_globs_may_match_nothing() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    let mut request = request(dir.path());
    request.inputs = vec!["src/missing.rs".into()];
    let error = engine().compute(&request).unwrap_err();
    assert_eq!(error.to_string(), "task \"build\": input \"src/missing.rs\" does not exist");

    request.inputs = vec!["nowhere/**/*.rs".into()];
    assert!(key(&engine(), &request).manifest.input_files().is_empty());

    request.inputs = vec!["../elsewhere/*".into()];
    let error = engine().compute(&request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task \"build\": input \"../elsewhere/*\" is outside the project root"
    );

    request.inputs = vec!["src/[.rs".into()];
    let error = engine().compute(&request).unwrap_err();
    assert!(error.to_string().starts_with("task \"build\": invalid glob \"src/[.rs\""), "{error}");
}

#[test]
fn literal_directories_stand_for_their_files_and_git_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    write(dir.path(), ".git/HEAD", "ref: main");
    write(dir.path(), "src/.git/config", "nested");
    let mut request = request(dir.path());
    request.inputs = vec!["src".into(), "*".into()];
    let manifest = key(&engine(), &request).manifest;
    let paths: Vec<&str> = manifest.input_files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["README.md", "src/lib/util.rs", "src/link.rs", "src/main.rs", "src/notes.tmp"]
    );
}

#[test]
fn inputs_are_relative_to_the_working_dir_and_stored_relative_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "packages/a/src/index.js", "a");
    write(dir.path(), "packages/shared/util.js", "s");
    let mut request = KeyRequest::new(dir.path(), "a:build", "node build.js");
    request.working_dir = "packages/a".into();
    request.inputs = vec!["src/*.js".into(), "../shared/*.js".into()];
    let manifest = key(&engine(), &request).manifest;
    let paths: Vec<&str> = manifest.input_files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["packages/a/src/index.js", "packages/shared/util.js"]);
    assert_eq!(manifest.working_dir, "packages/a");
}

#[test]
fn env_filter_decides_which_variables_count() {
    let dir = tempfile::tempdir().unwrap();
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let mut request = KeyRequest::new(dir.path(), "t", "env");
    request.env_filter = EnvFilter::new(&["PATH".into(), "NODE_*".into()], &["NODE_DEBUG".into()]);
    request.env =
        env(&[("PATH", "/bin"), ("NODE_ENV", "prod"), ("NODE_DEBUG", "1"), ("HOME", "/h")]);
    let engine = engine();
    let base = key(&engine, &request);
    assert_eq!(base.manifest.env.keys().collect::<Vec<_>>(), ["NODE_ENV", "PATH"]);
    assert_eq!(base.manifest.env["PATH"], Digest::of(b"/bin"));

    // Excluded and unlisted variables do not matter; cuenv's own settings never do.
    request.env.insert("NODE_DEBUG".into(), "2".into());
    request.env.insert("HOME".into(), "/elsewhere".into());
    request.env_filter =
        EnvFilter::new(&["PATH".into(), "NODE_*".into(), "CUENV_*".into()], &["NODE_DEBUG".into()]);
    request.env.insert("CUENV_CACHE_DIR".into(), "/tmp/other".into());
    request.env.insert("CUENV_REMOTE_CACHE_URL".into(), "grpc://x:1".into());
    assert_eq!(key(&engine, &request).digest, base.digest);

    // An included variable does.
    request.env.insert("NODE_ENV".into(), "dev".into());
    assert_ne!(key(&engine, &request).digest, base.digest);
    request.env.insert("NODE_ENV".into(), "prod".into());
    request.env.insert("CUENV_PROFILE".into(), "ci".into());
    assert_ne!(key(&engine, &request).digest, base.digest);
}

#[test]
fn every_declared_component_changes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    let engine = engine();
    let base = request(dir.path());
    let base_digest = key(&engine, &base).digest;
    type Change = Box<dyn Fn(&mut KeyRequest)>;
    let variants: Vec<(&str, Change)> = vec![
        ("task name", Box::new(|r| r.task_name = "other".into())),
        ("command", Box::new(|r| r.command = "cargo build --release".into())),
        ("args", Box::new(|r| r.args = vec!["--verbose".into()])),
        ("outputs", Box::new(|r| r.outputs = vec!["dist/**".into()])),
        (
            "custom",
            Box::new(|r| {
                r.custom.insert("toolchain".into(), "1.95".into());
            }),
        ),
        (
            "dependency",
            Box::new(|r| {
                r.dependencies.insert("lint".into(), Digest::of(b"lint"));
            }),
        ),
        ("cache key", Box::new(|r| r.cache_key = Some("v2".into()))),
    ];
    for (name, change) in variants {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(key(&engine, &changed).digest, base_digest, "{name} did not change the key");
    }
}

#[test]
fn a_cache_key_replaces_the_input_files() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    let mut request = request(dir.path());
    request.cache_key = Some("release-1".into());
    let engine = engine();
    let before = key(&engine, &request);
    write(dir.path(), "src/main.rs", "changed");
    assert_eq!(key(&engine, &request).digest, before.digest);
    assert_eq!(before.manifest.inputs, InputPart::CacheKey("release-1".into()));
    assert_eq!(before.counts, HashCounts::default());
}

#[test]
fn the_cache_dir_is_never_an_input() {
    let dir = tempfile::tempdir().unwrap();
    sample_tree(dir.path());
    write(dir.path(), ".cache/cas/ab/blob", "cached");
    let settings =
        KeyGenSettings { skip_dirs: vec![dir.path().join(".cache")], ..KeyGenSettings::default() };
    let engine = KeyEngine::new(settings).unwrap();
    let mut request = request(dir.path());
    request.inputs = vec!["**".into()];
    let manifest = key(&engine, &request).manifest;
    assert!(manifest.input_files().iter().all(|f| !f.path.starts_with(".cache")));
}

#[test]
fn settled_files_are_reused_from_the_stat_cache_across_engines() {
    let (project, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(project.path());
    let settings = KeyGenSettings {
        stat_cache_dir: Some(cache.path().to_owned()),
        racy_window: Duration::ZERO,
        ..KeyGenSettings::default()
    };
    let first_engine = KeyEngine::new(settings.clone()).unwrap();
    let first = key(&first_engine, &request(project.path()));
    assert_eq!((first.counts.hashed, first.counts.reused), (4, 0));
    let warm = key(&first_engine, &request(project.path()));
    assert_eq!((warm.counts.hashed, warm.counts.reused), (0, 4));
    for (file, bytes) in first_engine.take_stat_cache_snapshots() {
        fsio::write_atomic(&file, &bytes, false).unwrap();
    }
    let second_engine = KeyEngine::new(settings).unwrap();
    let reloaded = key(&second_engine, &request(project.path()));
    assert_eq!((reloaded.counts.hashed, reloaded.counts.reused), (0, 4));
    assert_eq!(reloaded.digest, first.digest);

    write(project.path(), "src/main.rs", "fn main() { println!() }");
    let changed = key(&second_engine, &request(project.path()));
    assert_eq!((changed.counts.hashed, changed.counts.reused), (1, 3));
}

#[test]
fn a_same_tick_rewrite_of_equal_size_is_never_missed() {
    // Rewriting a file right after hashing it usually keeps its size, mtime and ctime (they
    // advance in coarse ticks). Only the racy rule makes the second key see the new content.
    let (project, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let settings = KeyGenSettings {
        stat_cache_dir: Some(cache.path().to_owned()),
        ..KeyGenSettings::default()
    };
    let engine = KeyEngine::new(settings.clone()).unwrap();
    let mut request = KeyRequest::new(project.path(), "t", "cat f");
    request.inputs = vec!["f".into()];
    for round in 0..50 {
        write(project.path(), "f", "aaaa");
        let before = key(&engine, &request);
        write(project.path(), "f", "bbbb");
        let after = key(&engine, &request);
        assert_ne!(before.digest, after.digest, "round {round}: rewrite missed");
        assert_eq!(after.manifest.input_files()[0].hash, Digest::of(b"bbbb"));
        // Also across a persisted and reloaded stat cache.
        for (file, bytes) in engine.take_stat_cache_snapshots() {
            fsio::write_atomic(&file, &bytes, false).unwrap();
        }
        write(project.path(), "f", "cccc");
        let reloaded = key(&KeyEngine::new(settings.clone()).unwrap(), &request);
        assert_eq!(reloaded.manifest.input_files()[0].hash, Digest::of(b"cccc"), "round {round}");
    }
}

#[test]
fn a_corrupt_stat_cache_is_set_aside_and_rebuilt() {
    let (project, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_tree(project.path());
    let settings = KeyGenSettings {
        stat_cache_dir: Some(cache.path().to_owned()),
        racy_window: Duration::ZERO,
        ..KeyGenSettings::default()
    };
    let engine = KeyEngine::new(settings.clone()).unwrap();
    let expected = key(&engine, &request(project.path())).digest;
    let (file, bytes) = engine.take_stat_cache_snapshots().pop().unwrap();
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    fs::write(&file, damaged).unwrap();
    let fresh = KeyEngine::new(settings).unwrap();
    let rebuilt = key(&fresh, &request(project.path()));
    assert_eq!(rebuilt.digest, expected);
    assert_eq!(rebuilt.counts.reused, 0);
    assert!(file.with_extension("corrupt").exists());
}

#[test]
fn large_inputs_hash_like_plain_blake3() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 77).map(|i: u32| (i % 253) as u8).collect();
    fs::write(dir.path().join("big.bin"), &data).unwrap();
    let mut request = KeyRequest::new(dir.path(), "t", "x");
    request.inputs = vec!["big.bin".into()];
    let manifest = key(&engine(), &request).manifest;
    assert_eq!(manifest.input_files()[0].hash, Digest::of(&data));
    assert_eq!(manifest.input_files()[0].size, data.len() as u64);
}

#[test]
fn many_inputs_take_the_parallel_walk_and_give_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for index in 0..700 {
        let path = format!("many/d{}/f{index:04}.txt", index % 7);
        write(dir.path(), &path, &format!("content {index}"));
        expected.push(path);
    }
    write(dir.path(), "many/d0/noise.skip", "ignored");
    write(dir.path(), "few/a.txt", "a");
    expected.push("few/a.txt".to_owned());
    expected.sort();
    let mut request = KeyRequest::new(dir.path(), "t", "x");
    request.inputs = vec!["many/**".into(), "few".into()];
    request.ignore = vec!["*.skip".into()];
    let engine = engine();
    let computed = key(&engine, &request);
    let paths: Vec<&str> =
        computed.manifest.input_files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, expected);
    assert_eq!(computed.counts.hashed, 701);
    // The same files through the small path (one directory at a time) hash identically.
    for file in computed.manifest.input_files().iter().step_by(97) {
        let mut one = KeyRequest::new(dir.path(), "t", "x");
        one.inputs = vec![file.path.clone()];
        assert_eq!(key(&engine, &one).manifest.input_files()[0], *file);
    }
    // And the parallel walk is deterministic.
    assert_eq!(key(&engine, &request).digest, computed.digest);
}

#[test]
fn everything_below_a_directory_matches_as_the_glob_does() {
    let dir = tempfile::tempdir().unwrap();
    for path in
        ["pkg/src/a.rs", "pkg/src/.hidden", "pkg/src/deep/b.rs", "pkg/src2/c.rs", "pkg/srcx"]
    {
        write(dir.path(), path, path);
    }
    let mut request = request(dir.path());
    request.working_dir = "pkg".into();
    let engine = engine();
    let paths = |request: &KeyRequest| -> Vec<String> {
        key(&engine, request).manifest.input_files().iter().map(|f| f.path.clone()).collect()
    };
    // `src/**` is matched as a prefix; `src/**/*` goes through the glob matcher.
    request.inputs = vec!["src/**".into()];
    let below = paths(&request);
    assert_eq!(below, ["pkg/src/.hidden", "pkg/src/a.rs", "pkg/src/deep/b.rs"]);
    request.inputs = vec!["src/**/*".into()];
    assert_eq!(paths(&request), below);
    request.inputs = vec!["../pkg/src/**".into()];
    assert_eq!(paths(&request), below);
    request.inputs = vec!["**".into()];
    assert_eq!(paths(&request).len(), 5);
}

#[test]
fn a_name_that_is_not_utf8_is_an_error_where_the_inputs_reach_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let odd = OsStr::from_bytes(b"caf\xe9.rs");
    for files in [3, 400] {
        // A few files take the inline walk; hundreds take the parallel one.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..files {
            write(root, &format!("src/f{i}.rs"), "x");
        }
        write(root, "docs/readme.md", "docs");
        let mut request = KeyRequest::new(root, "build", "cargo build");
        request.inputs = vec!["src/**/*.rs".into()];
        let engine = engine();
        let clean = key(&engine, &request).digest;

        // Outside the inputs' reach (another directory, or a name the globs do not want), it
        // is none of the key's business.
        fs::write(root.join("docs").join(odd), "x").unwrap();
        fs::create_dir(root.join("docs").join(OsStr::from_bytes(b"sub\xff"))).unwrap();
        fs::write(root.join("src").join(OsStr::from_bytes(b"notes\xff.txt")), "x").unwrap();
        assert_eq!(key(&engine, &request).digest, clean, "{files} files");

        // A wanted file, or a directory the walk enters, could change unseen: an error that
        // names the task and the path.
        fs::write(root.join("src").join(odd), "x").unwrap();
        let error = engine.compute(&request).unwrap_err();
        assert!(matches!(&error, KeyError::NotUtf8 { task, .. } if task == "build"), "{error}");
        assert!(error.to_string().contains("caf\u{fffd}.rs"), "{error}");
        fs::remove_file(root.join("src").join(odd)).unwrap();
        fs::create_dir(root.join("src").join(OsStr::from_bytes(b"sub\xff"))).unwrap();
        let error = engine.compute(&request).unwrap_err();
        assert!(error.to_string().contains("not valid UTF-8"), "{error}");
    }
}

/// Makes a named pipe at `path`.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

#[test]
fn a_named_pipe_or_socket_among_the_inputs_is_an_error_not_a_hang() {
    for files in [3, 400] {
        // The inline walk and the parallel one.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..files {
            write(root, &format!("src/f{i}.rs"), "x");
        }
        let mut request = KeyRequest::new(root, "build", "cargo build");
        request.inputs = vec!["src/**".into()];
        let engine = engine();
        // Opening a pipe for reading waits for a writer: before, the key never came.
        mkfifo(&root.join("src/pipe"));
        let error = engine.compute(&request).unwrap_err();
        assert!(matches!(&error, KeyError::NotAFile { task, .. } if task == "build"), "{error}");
        assert!(error.to_string().contains("src/pipe"), "{error}");
        fs::remove_file(root.join("src/pipe")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("src/sock")).unwrap();
        let error = engine.compute(&request).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        // Named outright, too.
        request.inputs = vec!["src/sock".into()];
        assert!(matches!(engine.compute(&request), Err(KeyError::NotAFile { .. })));
    }
}

#[test]
fn inputs_changed_names_edits_additions_and_removals_but_not_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pkg/src/a.rs", "a");
    write(root, "pkg/src/b.rs", "b");
    write(root, "pkg/dist/old.js", "old");
    write(root, "pkg/gen.txt", "g");
    let mut request = KeyRequest::new(root, "build", "make");
    request.working_dir = "pkg".into();
    request.inputs = vec!["**".into()];
    request.outputs = vec!["dist".into(), "*.txt".into()];
    let engine = engine();
    let before = key(&engine, &request).manifest;
    assert!(inputs_changed(&before, &before).is_empty());

    write(root, "pkg/src/a.rs", "edited");
    fs::remove_file(root.join("pkg/src/b.rs")).unwrap();
    write(root, "pkg/src/c.rs", "added");
    // The task's own outputs, literal directory and glob alike, may change freely.
    write(root, "pkg/dist/old.js", "rebuilt");
    write(root, "pkg/dist/new/x.js", "x");
    write(root, "pkg/gen.txt", "regenerated");
    let after = key(&engine, &request).manifest;
    assert_eq!(inputs_changed(&before, &after), ["pkg/src/a.rs", "pkg/src/b.rs", "pkg/src/c.rs"]);
}

#[test]
fn a_skipped_directory_is_known_however_either_side_spells_it() {
    // The project reached through a symlink, the cache directory through `..`: the walk still
    // knows the cache directory when it meets it (a library caller's root need not be canonical).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    write(&root, "a.txt", "a");
    write(&root, ".cache/v1/blob", "cached");
    fs::create_dir_all(root.join("sub")).unwrap();
    symlink(&root, dir.path().join("link")).unwrap();
    let settings = KeyGenSettings {
        threads: 2,
        skip_dirs: vec![root.join("sub/../.cache")],
        ..KeyGenSettings::default()
    };
    let engine = KeyEngine::new(settings).unwrap();
    let mut request = KeyRequest::new(dir.path().join("link"), "t", "true");
    request.inputs = vec!["**".into()];
    let paths: Vec<String> =
        key(&engine, &request).manifest.input_files().iter().map(|f| f.path.clone()).collect();
    assert_eq!(paths, ["a.txt"]);
}
