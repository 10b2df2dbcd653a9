//! Remote cache tests against a real BuildGrid server: negotiation, round trips through batch
//! calls and ByteStream, a dying server, a read-only server, refused credentials, and TLS with
//! a custom CA.
//!
//! Each test starts its own server (nextest runs every test in its own process), so each
//! covers a whole scenario rather than one assertion.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cuenv_actors::Digest;
use cuenv_actors::disk::{BlobRead, DiskStore, RecordLookup, now_ms};
use cuenv_actors::key_gen::{InputFile, InputKind, InputPart, KEY_FORMAT_VERSION, KeyManifest};
use cuenv_actors::remote::{DigestFunction, RemoteClient, RemoteError, UploadOutcome};
use cuenv_actors::result::{ActionResult, LogRef, OutputFile, OutputSymlink};

use crate::support::buildgrid::{BuildGrid, BuildGridOptions};
use crate::support::{capture_warnings, disk_store, files_under};

fn manifest(task: &str) -> KeyManifest {
    let input = |path: &str, kind, content: &[u8]| InputFile {
        path: path.to_owned(),
        kind,
        hash: Digest::of(content),
        size: content.len() as u64,
    };
    KeyManifest {
        format: KEY_FORMAT_VERSION,
        task: task.to_owned(),
        command: "make all".to_owned(),
        args: vec!["--jobs".to_owned(), "2".to_owned()],
        working_dir: String::new(),
        env: BTreeMap::from([
            ("CC".to_owned(), Digest::of(b"clang")),
            ("A".to_owned(), Digest::of(b"1")),
        ]),
        inputs: InputPart::Files(vec![
            input("Makefile", InputKind::File, b"all:\n"),
            input("src/a/main.c", InputKind::File, b"int main;"),
            input("src/b/gen.sh", InputKind::Executable, b"#!/bin/sh"),
            input("src/link", InputKind::Symlink, b"a/main.c"),
        ]),
        outputs: vec!["out/**".to_owned()],
        custom: BTreeMap::from([("target".to_owned(), "x86".to_owned())]),
        dependencies: BTreeMap::new(),
        cuenv_version: "test".to_owned(),
        platform: "linux-x86_64".to_owned(),
    }
}

/// Stores a result in `store` with one output file per `(path, content, mode)`.
fn put_result(
    store: &DiskStore,
    task: &str,
    files: &[(&str, Vec<u8>, u32)],
) -> (Digest, ActionResult) {
    let mut output_files: Vec<OutputFile> = files
        .iter()
        .map(|(path, content, mode)| OutputFile {
            path: (*path).to_owned(),
            digest: store.put_bytes(content).unwrap(),
            size: content.len() as u64,
            mode: *mode,
        })
        .collect();
    output_files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = manifest(task);
    let digest = manifest.digest();
    let result = ActionResult {
        exit_code: 0,
        stdout: store.log_ref(b"built".to_vec()).unwrap(),
        stderr: store.log_ref(b"warning: ".repeat(40)).unwrap(),
        output_files,
        output_dirs: vec!["out".to_owned(), "out/empty".to_owned()],
        output_symlinks: vec![OutputSymlink {
            path: "out/latest".to_owned(),
            target: "bin".to_owned(),
        }],
        executed_at_ms: now_ms(),
        duration_ms: 1234,
        manifest,
        metadata: BTreeMap::from([("legacy".to_owned(), "hash".to_owned())]),
    };
    store.put_record(&digest, &result).unwrap();
    (digest, result)
}

/// Asserts that `store` holds a verified record of `digest` equal to `expected`, with every
/// blob readable and identical to the source store's.
fn assert_same(store: &DiskStore, source: &DiskStore, digest: &Digest, expected: &ActionResult) {
    match store.get_record(digest) {
        RecordLookup::Hit(result) => assert_eq!(*result, *expected),
        other => panic!("expected a stored record, got {other:?}"),
    }
    for (blob, _) in expected.blobs() {
        let (BlobRead::Found(got), BlobRead::Found(want)) =
            (store.read_blob(&blob), source.read_blob(&blob))
        else {
            panic!("blob {blob} is not readable in both stores");
        };
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn negotiates_capabilities_and_checks_a_server() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = RemoteClient::connect(grid.settings()).await.unwrap();
    let caps = client.capabilities().await.unwrap();
    assert_eq!(caps.digest_function, DigestFunction::Sha256);
    assert_eq!(caps.offered_digest_functions, ["SHA256"]);
    assert_eq!(caps.server_max_batch_bytes, 4_193_280);
    assert!(caps.max_batch_bytes < caps.server_max_batch_bytes && caps.max_batch_bytes > 3 << 20);
    assert!(caps.update_enabled);
    let report = client.check().await.unwrap();
    assert_eq!(report.capabilities, caps);
    assert!(report.probe_bytes > 0);

    let mut wrong = grid.settings();
    wrong.instance_name = "foo".to_owned();
    let error = RemoteClient::connect(wrong).await.unwrap().check().await.unwrap_err();
    assert!(matches!(error, RemoteError::UnknownInstance { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(r#"remote rejected instance name "foo": Invalid instance name"#),
        "{message}"
    );
}

/// Stores a result of `files` for `task` in `from`, uploads it, downloads it into `to`, and
/// checks that `to` then holds it exactly.
async fn round_trip(
    client: &RemoteClient,
    from: &DiskStore,
    to: &DiskStore,
    task: &str,
    files: &[(String, Vec<u8>, u32)],
) {
    let files: Vec<(&str, Vec<u8>, u32)> =
        files.iter().map(|(p, c, x)| (p.as_str(), c.clone(), *x)).collect();
    let (digest, result) = put_result(from, task, &files);
    assert_eq!(client.upload(&digest, &result, from).await.unwrap(), UploadOutcome::Uploaded);
    let downloaded = client.download(&digest, &result.manifest, to).await.unwrap();
    assert_eq!(downloaded.as_ref(), Some(&result));
    assert_same(to, from, &digest, &result);
}

#[tokio::test]
async fn round_trips_a_result_through_the_remote() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i: u32| (i % 251) as u8).collect();
    let files = [
        ("out/bin", b"\x7fELF binary".to_vec(), 0o755),
        ("out/small.txt", b"hello".to_vec(), 0o600),
        ("out/big.bin", big, 0o644),
        ("out/empty", Vec::new(), 0o444),
    ];
    let (digest, result) = put_result(&store_a, "build", &files);
    assert!(
        matches!(result.stdout, LogRef::Inline(_)) && matches!(result.stderr, LogRef::Blob { .. })
    );

    let client = RemoteClient::connect(grid.settings()).await.unwrap();
    assert_eq!(client.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Uploaded);
    let sent = client.counters().bytes_up;
    assert!(sent > 5 << 20, "{sent}");
    let downloaded = client.download(&digest, &result.manifest, &store_b).await.unwrap();
    assert_eq!(downloaded.as_ref(), Some(&result));
    assert_same(&store_b, &store_a, &digest, &result);

    // A second upload finds every blob already there.
    assert_eq!(client.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Uploaded);
    let other = manifest("never-ran");
    assert_eq!(client.download(&other.digest(), &other, &store_b).await.unwrap(), None);
    let counters = client.counters();
    assert_eq!((counters.uploads, counters.hits, counters.misses, counters.errors), (2, 1, 1, 0));
    assert_eq!(counters.bytes_up, sent);
    assert!(counters.bytes_down > 5 << 20);

    let error = client.download(&digest, &other, &store_b).await.unwrap_err();
    assert!(matches!(error, RemoteError::KeyMismatch { .. }), "{error:?}");
}

#[tokio::test]
async fn a_remote_result_writes_only_where_the_task_declares_outputs() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = RemoteClient::connect(grid.settings()).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    // What a poisoned cache would serve for this action: a git hook, and a source file, beside
    // the declared `out/**`.
    for path in [".git/hooks/post-checkout", "src/a/main.c", "out/.git/config"] {
        let files = [("out/ok", b"ok".to_vec(), 0o644), (path, b"#!/bin/sh\n".to_vec(), 0o755)];
        let (digest, result) = put_result(&store_a, path, &files);
        assert_eq!(
            client.upload(&digest, &result, &store_a).await.unwrap(),
            UploadOutcome::Uploaded
        );
        let corrupt = client.counters().corrupt;
        assert_eq!(
            client.download(&digest, &result.manifest, &store_b).await.unwrap(),
            None,
            "{path}"
        );
        assert_eq!(client.counters().corrupt, corrupt + 1, "{path}");
        assert!(matches!(store_b.get_record(&digest), RecordLookup::Miss), "{path}");
    }
}

#[tokio::test]
async fn many_outputs_are_stored_together_on_download() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = RemoteClient::connect(grid.settings()).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store_a = disk_store(dir_a.path());
    // Fsynced, as by default: blobs held in memory are then stored by parallel threads.
    let mut settings = store_a.settings().clone();
    (settings.cache_dir, settings.fsync) = (dir_b.path().to_owned(), true);
    let store_b = DiskStore::open(settings, cuenv_actors::key_gen::hash_pool(2).unwrap()).unwrap();
    // Sixty under the 64-byte inline threshold, held in memory until the record is made, and
    // forty over it, stored in a group as they arrive; every fifth small one repeats a content.
    let mut files: Vec<(String, Vec<u8>, u32)> = (0..60)
        .map(|i| {
            (
                format!("out/f{i:02}"),
                format!("part {}", i % 48).into_bytes(),
                if i % 9 == 0 { 0o755 } else { 0o644 },
            )
        })
        .collect();
    files.extend((0..40).map(|i| (format!("out/g{i:02}"), vec![i as u8; 300], 0o644)));
    round_trip(&client, &store_a, &store_b, "many", &files).await;
}

/// A client of `grid` that takes 4 KiB as the batch limit, so blobs of a few KiB are streamed.
async fn small_batch_client(grid: &BuildGrid) -> RemoteClient {
    let mut settings = grid.settings();
    settings.tuning.max_batch_bytes = Some(4096);
    RemoteClient::connect(settings).await.unwrap()
}

#[tokio::test]
async fn small_batch_limit_moves_blobs_through_bytestream_and_many_batches() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = small_batch_client(&grid).await;
    assert_eq!(client.capabilities().await.unwrap().max_batch_bytes, 4096);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    let mut files: Vec<(String, Vec<u8>, u32)> =
        (0..10).map(|i| (format!("out/part{i}"), vec![i as u8; 1500], 0o644)).collect();
    files.push(("out/large".to_owned(), (0..100_000u32).map(|i| (i % 13) as u8).collect(), 0o644));
    // Streamed from and into the stores' files in 1 MiB chunks, the last one short.
    files.push((
        "out/larger".to_owned(),
        (0..2_500_000u32).map(|i| (i % 251) as u8).collect(),
        0o755,
    ));
    round_trip(&client, &store_a, &store_b, "chunks", &files).await;
}

#[tokio::test]
async fn a_streamed_blob_damaged_on_the_server_is_a_miss_that_leaves_nothing_behind() {
    let grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = small_batch_client(&grid).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    let large: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let (digest, result) = put_result(&store_a, "damaged", &[("out/large", large.clone(), 0o644)]);
    assert_eq!(client.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Uploaded);
    let stored = grid.stored_blobs_of_size(large.len() as u64);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut damaged = fs::read(&stored[0]).unwrap();
    damaged[2_000_000] ^= 1;
    fs::write(&stored[0], damaged).unwrap();

    let corrupt = client.counters().corrupt;
    assert_eq!(client.download(&digest, &result.manifest, &store_b).await.unwrap(), None);
    assert_eq!(client.counters().corrupt, corrupt + 1);
    assert!(matches!(store_b.get_record(&digest), RecordLookup::Miss));
    assert!(!store_b.has_blob(&result.output_files[0].digest));
    let left: Vec<_> = files_under(dir_b.path())
        .into_iter()
        .map(|path| path.strip_prefix(dir_b.path()).unwrap().display().to_string())
        .filter(|path| path.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[tokio::test]
async fn an_overloaded_server_narrows_the_calls_in_flight_instead_of_failing_them() {
    // Five workers: a sixth concurrent call is refused with RESOURCE_EXHAUSTED.
    let grid = BuildGrid::start(BuildGridOptions { workers: Some(5), ..Default::default() }).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) =
        (Arc::new(disk_store(dir_a.path())), Arc::new(disk_store(dir_b.path())));
    let results: Vec<(Digest, ActionResult)> = (0..48)
        .map(|i| put_result(&store_a, &format!("task{i}"), &[("out/n", vec![i as u8; 100], 0o644)]))
        .collect();
    let mut settings = grid.settings();
    settings.max_concurrent = 48;
    // One attempt: a refused call fails unless narrowing the window retries it.
    settings.tuning.attempts = 1;
    settings.tuning.breaker_threshold = 1000;
    let client = RemoteClient::connect(settings).await.unwrap();
    client.capabilities().await.unwrap();

    let mut calls = tokio::task::JoinSet::new();
    for (digest, result) in results.clone() {
        let (client, store) = (client.clone(), Arc::clone(&store_a));
        calls.spawn(async move { client.upload(&digest, &result, &store).await.map(|_| ()) });
    }
    for outcome in calls.join_all().await {
        outcome.unwrap();
    }
    let mut calls = tokio::task::JoinSet::new();
    for (digest, result) in results {
        let (client, store) = (client.clone(), Arc::clone(&store_b));
        calls.spawn(async move {
            let got = client.download(&digest, &result.manifest, &store).await?;
            assert_eq!(got.as_ref(), Some(&result));
            Ok::<_, RemoteError>(())
        });
    }
    for outcome in calls.join_all().await {
        outcome.unwrap();
    }
    let counters = client.counters();
    assert_eq!((counters.uploads, counters.hits, counters.errors), (48, 48, 0));
    assert!(counters.overloaded > 0, "the server never pushed back: {counters:?}");
}

#[tokio::test]
async fn dead_server_fails_fast_and_opens_the_breaker() {
    let mut grid = BuildGrid::start(BuildGridOptions::default()).await;
    let client = RemoteClient::connect(grid.settings()).await.unwrap();
    client.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = disk_store(dir.path());
    let manifest = manifest("offline");
    let digest = manifest.digest();
    grid.kill();

    let (logs, _guard) = capture_warnings();
    // Two attempts per call, three failed attempts open the breaker: the first call fails
    // after both of its attempts; the second call's first attempt opens the breaker, and its
    // retry meets it.
    let started = Instant::now();
    let error = client.download(&digest, &manifest, &store).await.unwrap_err();
    assert!(matches!(error, RemoteError::Rpc { .. }), "{error:?}");
    assert!(format!("{error:?}").contains("code: Unavailable"), "{error:?}");
    let error = client.download(&digest, &manifest, &store).await.unwrap_err();
    assert!(matches!(error, RemoteError::CircuitOpen { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(client.circuit_open());
    let started = Instant::now();
    let error = client.download(&digest, &manifest, &store).await.unwrap_err();
    assert!(matches!(error, RemoteError::CircuitOpen { .. }), "{error:?}");
    assert_eq!(client.download_or_miss(&digest, &manifest, &store).await, None);
    assert!(started.elapsed() < Duration::from_millis(50));
    let counters = client.counters();
    assert_eq!(
        (counters.errors, counters.short_circuited, counters.hits, counters.misses),
        (4, 3, 0, 0)
    );

    // After the cooldown one probe goes through; it fails and the breaker reopens quietly.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(client.download(&digest, &manifest, &store).await.is_err());
    assert!(matches!(
        client.download(&digest, &manifest, &store).await,
        Err(RemoteError::CircuitOpen { .. })
    ));
    assert_eq!(logs.count("suspending remote calls"), 1, "{}", logs.text());

    // Back up: the next probe closes the breaker; the restarted server's action cache is empty.
    grid.restart().await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(client.download(&digest, &manifest, &store).await.unwrap(), None);
    assert!(!client.circuit_open());
    assert_eq!(client.counters().misses, 1);
}

#[tokio::test]
async fn read_only_server_serves_downloads_and_skips_uploads() {
    let options = BuildGridOptions {
        instance_name: "main".to_owned(),
        allow_updates: false,
        writer_instance: Some("writer".to_owned()),
        ..Default::default()
    };
    let grid = BuildGrid::start(options).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    let (digest, result) =
        put_result(&store_a, "shared", &[("out/lib.a", b"archive".to_vec(), 0o644)]);
    let mut writer_settings = grid.settings();
    writer_settings.instance_name = "writer".to_owned();
    let writer = RemoteClient::connect(writer_settings).await.unwrap();
    assert_eq!(writer.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Uploaded);

    let (logs, _guard) = capture_warnings();
    let reader = RemoteClient::connect(grid.settings()).await.unwrap();
    assert!(!reader.capabilities().await.unwrap().update_enabled);
    let downloaded = reader.download(&digest, &result.manifest, &store_b).await.unwrap();
    assert_eq!(downloaded.as_ref(), Some(&result));
    for _ in 0..3 {
        assert_eq!(
            reader.upload(&digest, &result, &store_a).await.unwrap(),
            UploadOutcome::Skipped
        );
    }
    let counters = reader.counters();
    assert_eq!(
        (counters.hits, counters.uploads, counters.uploads_skipped, counters.errors),
        (1, 0, 3, 0)
    );
    assert_eq!(logs.count("uploads are skipped: the server does not accept"), 1, "{}", logs.text());

    let mut disabled = grid.settings();
    disabled.upload_enabled = false;
    let disabled = RemoteClient::connect(disabled).await.unwrap();
    assert_eq!(disabled.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Skipped);
    assert_eq!(logs.count("uploads are skipped: uploads are disabled"), 1, "{}", logs.text());
}

#[tokio::test]
async fn refused_tokens_get_clear_errors() {
    let options = BuildGridOptions { require_token: true, ..BuildGridOptions::default() };
    let grid = BuildGrid::start(options).await;
    for token in [None, Some("not-a-jwt".to_owned())] {
        let mut settings = grid.settings();
        settings.auth_token = token;
        let error = RemoteClient::connect(settings).await.unwrap().check().await.unwrap_err();
        assert!(matches!(error, RemoteError::Unauthenticated { .. }), "{error:?}");
        assert!(error.to_string().contains("refused the credentials (UNAUTHENTICATED)"), "{error}");
    }
    let mut settings = grid.settings();
    settings.auth_token = Some(grid.token());
    let client = RemoteClient::connect(settings).await.unwrap();
    client.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = disk_store(dir.path());
    let (digest, result) = put_result(&store, "authed", &[("out/x", b"x".to_vec(), 0o644)]);
    assert_eq!(client.upload(&digest, &result, &store).await.unwrap(), UploadOutcome::Uploaded);
}

#[tokio::test]
async fn tls_with_a_custom_ca_checks_and_round_trips() {
    let grid =
        BuildGrid::start(BuildGridOptions { tls: true, ..BuildGridOptions::default() }).await;
    let settings = grid.settings();
    assert!(settings.endpoint.starts_with("grpcs://127.0.0.1:"), "{}", settings.endpoint);
    assert_eq!(settings.ca_cert.as_deref(), Some(grid.ca_cert_path().as_path()));

    // The certificate's IP address SAN matches the endpoint's host.
    let client = RemoteClient::connect(settings).await.unwrap();
    let report = client.check().await.unwrap();
    assert!(report.probe_bytes > 0);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (disk_store(dir_a.path()), disk_store(dir_b.path()));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let files = [("out/tls.txt", b"over TLS".to_vec(), 0o644), ("out/big.bin", big, 0o755)];
    let (digest, result) = put_result(&store_a, "tls", &files);
    assert_eq!(client.upload(&digest, &result, &store_a).await.unwrap(), UploadOutcome::Uploaded);
    let downloaded = client.download(&digest, &result.manifest, &store_b).await.unwrap();
    assert_eq!(downloaded.as_ref(), Some(&result));
    assert_same(&store_b, &store_a, &digest, &result);
    assert_eq!(client.counters().errors, 0);

    // `domain_name` overrides the name checked: the DNS SAN passes, a name the certificate
    // does not carry fails.
    let mut named = grid.settings();
    named.domain_name = Some("localhost".to_owned());
    RemoteClient::connect(named).await.unwrap().check().await.unwrap();
    let mut wrong = grid.settings();
    wrong.domain_name = Some("cache.example.com".to_owned());
    let error = RemoteClient::connect(wrong).await.unwrap().check().await.unwrap_err();
    assert!(matches!(error, RemoteError::Rpc { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(
            r#"invalid peer certificate: certificate not valid for name "cache.example.com""#
        ),
        "{message}"
    );
}

#[tokio::test]
async fn tls_without_the_ca_fails_with_a_certificate_error() {
    let grid =
        BuildGrid::start(BuildGridOptions { tls: true, ..BuildGridOptions::default() }).await;
    let mut settings = grid.settings();
    settings.ca_cert = None;
    let client = RemoteClient::connect(settings).await.unwrap();
    // Run the call as its own task so a panic would show as one rather than abort the test.
    let joined = tokio::spawn(async move { client.check().await }).await;
    let error = joined.expect("the call does not panic").unwrap_err();
    assert!(matches!(error, RemoteError::Rpc { .. }), "{error:?}");
    assert!(format!("{error:?}").contains("code: Unavailable"), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_ca_file_is_reported_at_connect() {
    let grid =
        BuildGrid::start(BuildGridOptions { tls: true, ..BuildGridOptions::default() }).await;
    let missing = grid.ca_cert_path().with_file_name("no-such-ca.pem");
    let mut settings = grid.settings();
    settings.ca_cert = Some(missing.clone());
    let error = RemoteClient::connect(settings).await.unwrap_err();
    match &error {
        RemoteError::CaCert { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a CaCert error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.starts_with("cannot read the remote cache CA certificate")
            && message.contains(&missing.display().to_string()),
        "{message}"
    );
}
