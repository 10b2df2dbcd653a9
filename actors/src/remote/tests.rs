//! Unit tests of the remote client parts that need no server: endpoints, negotiation, the
//! remote action key, batching, retries and the breaker. The BuildGrid tests in `tests/it`
//! cover the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use tonic::{Code, Status};

use super::action::{ACTION_KEY_PROPERTY, remote_action};
use super::cas::{plan, uuid};
use super::error::{Meaning, meaning};
use super::negotiate::{GRPC_MESSAGE_CAP, negotiate};
use super::resilience::{Breaker, Progress};
use super::transport::channel_url;
use super::*;
use crate::key_gen::{InputFile, InputKind, InputPart, KEY_FORMAT_VERSION};

fn manifest() -> KeyManifest {
    let file = |path: &str, kind| InputFile {
        path: path.to_owned(),
        kind,
        hash: Digest::of(path.as_bytes()),
        size: 3,
    };
    KeyManifest {
        format: KEY_FORMAT_VERSION,
        task: "build".to_owned(),
        command: "make".to_owned(),
        args: vec!["all".to_owned()],
        working_dir: "pkg".to_owned(),
        env: BTreeMap::from([
            ("Z".to_owned(), Digest::of(b"z")),
            ("A".to_owned(), Digest::of(b"secret")),
        ]),
        inputs: InputPart::Files(vec![
            file("a/b/c.txt", InputKind::File),
            file("a/run.sh", InputKind::Executable),
            file("a/link", InputKind::Symlink),
            file("top", InputKind::File),
        ]),
        outputs: vec!["out/**".to_owned(), "dist".to_owned()],
        custom: BTreeMap::new(),
        dependencies: BTreeMap::new(),
        cuenv_version: "test".to_owned(),
        platform: "linux-x86_64".to_owned(),
    }
}

fn caps_answer(functions: &[i32], max_batch: i64, update: bool) -> reapi::ServerCapabilities {
    reapi::ServerCapabilities {
        cache_capabilities: Some(reapi::CacheCapabilities {
            digest_functions: functions.to_vec(),
            max_batch_total_size_bytes: max_batch,
            action_cache_update_capabilities: Some(reapi::ActionCacheUpdateCapabilities {
                update_enabled: update,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn endpoints_map_to_http_urls() {
    assert_eq!(channel_url("grpc://cache:9092").unwrap(), ("http://cache:9092".to_owned(), false));
    assert_eq!(channel_url("grpcs://cache:443").unwrap(), ("https://cache:443".to_owned(), true));
    assert_eq!(channel_url("HTTPS://cache").unwrap(), ("https://cache".to_owned(), true));
    for bad in ["cache:9092", "ftp://cache", "grpc://", "grpc:///path"] {
        assert!(matches!(channel_url(bad), Err(RemoteError::InvalidEndpoint { .. })), "{bad}");
    }
}

#[tokio::test]
async fn connect_checks_tls_settings_without_a_server() {
    let mut settings = RemoteSettings::new("grpc://127.0.0.1:1");
    settings.ca_cert = Some("/nonexistent/ca.pem".into());
    assert!(matches!(
        RemoteClient::connect(settings.clone()).await,
        Err(RemoteError::InvalidEndpoint { .. })
    ));
    settings.endpoint = "grpcs://127.0.0.1:1".to_owned();
    assert!(matches!(
        RemoteClient::connect(settings.clone()).await,
        Err(RemoteError::CaCert { .. })
    ));
    settings.ca_cert = None;
    settings.auth_token = Some("bad\ntoken".to_owned());
    assert!(matches!(RemoteClient::connect(settings).await, Err(RemoteError::InvalidToken)));
}

#[test]
fn negotiation_prefers_blake3_and_stays_under_the_batch_cap() {
    let sha = reapi::digest_function::Value::Sha256 as i32;
    let blake = reapi::digest_function::Value::Blake3 as i32;
    let sha1 = reapi::digest_function::Value::Sha1 as i32;
    let caps = negotiate(&caps_answer(&[sha, blake], 0, true), None).unwrap();
    assert_eq!(caps.digest_function, DigestFunction::Blake3);
    assert!(caps.max_batch_bytes < GRPC_MESSAGE_CAP && caps.max_batch_bytes > GRPC_MESSAGE_CAP / 2);
    assert!(caps.update_enabled);
    let caps = negotiate(&caps_answer(&[], 64 << 20, false), Some(1000)).unwrap();
    assert_eq!(
        (caps.digest_function, caps.max_batch_bytes, caps.update_enabled),
        (DigestFunction::Sha256, 1000, false)
    );
    let small = negotiate(&caps_answer(&[sha], 10_000, true), None).unwrap();
    assert!(small.max_batch_bytes <= 10_000 && small.max_batch_bytes >= 5_000);
    let error = negotiate(&caps_answer(&[sha1], 0, true), None).unwrap_err();
    assert!(error.to_string().contains("SHA1"), "{error}");
}

#[test]
fn digest_functions_hash_as_specified() {
    let sha = DigestFunction::Sha256.digest(b"abc");
    assert_eq!(sha.hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(sha.size_bytes, 3);
    assert_eq!(DigestFunction::Blake3.hash(b"abc"), Digest::of(b"abc").to_hex());
    assert_eq!(DigestFunction::Blake3.resource_segment(), "blake3/");
}

#[test]
fn the_remote_action_is_a_deterministic_function_of_the_local_key() {
    let manifest = manifest();
    let local = manifest.digest();
    let first = remote_action(DigestFunction::Sha256, &local, &manifest);
    let again = remote_action(DigestFunction::Sha256, &local, &manifest);
    assert_eq!(first.digest, again.digest);
    let other_local = Digest::of(b"another key");
    assert_ne!(remote_action(DigestFunction::Sha256, &other_local, &manifest).digest, first.digest);
    assert_ne!(remote_action(DigestFunction::Blake3, &local, &manifest).digest, first.digest);

    let (_, action_bytes) = first.protos.last().unwrap();
    let action = reapi::Action::decode(action_bytes.as_slice()).unwrap();
    let property = &action.platform.unwrap().properties[0];
    assert_eq!(
        (property.name.as_str(), property.value.clone()),
        (ACTION_KEY_PROPERTY, local.to_hex())
    );
    let (_, command_bytes) = &first.protos[0];
    let command = reapi::Command::decode(command_bytes.as_slice()).unwrap();
    assert_eq!(command.arguments, ["sh", "-c", "make", "all"]);
    assert_eq!(command.output_paths, ["dist", "out/**"]);
    let names: Vec<&str> =
        command.environment_variables.iter().map(|var| var.name.as_str()).collect();
    assert_eq!(names, ["A", "Z"]);
    assert_eq!(command.environment_variables[0].value, Digest::of(b"secret").to_hex());
    assert_eq!(command.working_directory, "pkg");
}

#[test]
fn the_input_root_is_a_sorted_tree_of_hashed_files() {
    let manifest = manifest();
    let action = remote_action(DigestFunction::Sha256, &manifest.digest(), &manifest);
    let root_digest = reapi::Action::decode(action.protos.last().unwrap().1.as_slice())
        .unwrap()
        .input_root_digest
        .unwrap();
    let find = |digest: &reapi::Digest| {
        let (_, bytes) = action.protos.iter().find(|(known, _)| known == digest).unwrap();
        reapi::Directory::decode(bytes.as_slice()).unwrap()
    };
    let root = find(&root_digest);
    assert_eq!(root.files.iter().map(|file| file.name.as_str()).collect::<Vec<_>>(), ["top"]);
    assert_eq!(
        root.files[0].digest.as_ref().unwrap().hash,
        DigestFunction::Sha256.hash(&Digest::of(b"top").0)
    );
    let a = find(root.directories[0].digest.as_ref().unwrap());
    assert_eq!(root.directories[0].name, "a");
    assert_eq!((a.files[0].name.as_str(), a.files[0].is_executable), ("run.sh", true));
    assert_eq!(
        (a.symlinks[0].name.as_str(), a.symlinks[0].target.clone()),
        ("link", Digest::of(b"a/link").to_hex())
    );
    let b = find(a.directories[0].digest.as_ref().unwrap());
    assert_eq!(b.files[0].name, "c.txt");
}

#[test]
fn status_codes_become_cache_meaning() {
    assert_eq!(meaning(Code::NotFound), Meaning::Miss);
    assert_eq!(meaning(Code::OutOfRange), Meaning::Miss);
    assert_eq!(meaning(Code::Unavailable), Meaning::Transient);
    assert_eq!(meaning(Code::ResourceExhausted), Meaning::Transient);
    assert_eq!(meaning(Code::Internal), Meaning::Broken);
    assert_eq!(meaning(Code::InvalidArgument), Meaning::Rejected);
    let instance = RemoteError::from_status(
        "ActionCache.GetActionResult",
        "foo",
        Status::invalid_argument("Invalid instance name: [foo]"),
    );
    assert!(
        instance
            .to_string()
            .starts_with(r#"remote rejected instance name "foo": Invalid instance name"#)
    );
    let auth = RemoteError::from_status("x", "", Status::unauthenticated("no token"));
    assert!(matches!(auth, RemoteError::Unauthenticated { .. }));
    assert!(RemoteError::from_status("x", "", Status::not_found("gone")).is_miss());
    assert!(!RemoteError::from_status("x", "", Status::invalid_argument("bad digest")).is_miss());
}

#[test]
fn batches_pack_small_blobs_and_leave_big_ones_to_bytestream() {
    let digest = |size: i64| reapi::Digest { hash: format!("{size:064}"), size_bytes: size };
    let (batches, large) =
        plan(vec![digest(1000), digest(1000), digest(1000), digest(5000), digest(10)], 2400);
    let sizes: Vec<Vec<i64>> =
        batches.iter().map(|batch| batch.iter().map(|d| d.size_bytes).collect()).collect();
    assert_eq!(sizes, [vec![1000, 1000], vec![1000, 10]]);
    assert_eq!(large, [digest(5000)]);
    let id = uuid();
    assert_eq!((id.len(), &id[14..15]), (36, "4"));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_probes_and_closes() {
    let breaker = Breaker::new(2, Duration::from_secs(30));
    breaker.failed(&Status::unavailable("down"));
    assert!(breaker.admit().is_ok());
    breaker.failed(&Status::unavailable("down"));
    assert!(breaker.is_open());
    assert!(breaker.admit().unwrap_err() <= Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(breaker.admit().is_ok(), "one probe after the cooldown");
    assert!(breaker.admit().is_err(), "only one probe at a time");
    breaker.failed(&Status::unavailable("down"));
    assert!(breaker.admit().is_err(), "a failed probe reopens");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(breaker.admit().is_ok());
    breaker.succeeded();
    assert!(!breaker.is_open());
    assert!(breaker.admit().is_ok());
}

async fn offline_client(attempts: u32, threshold: u32) -> RemoteClient {
    let mut settings = RemoteSettings::new("grpc://127.0.0.1:1");
    settings.timeout = Duration::from_secs(5);
    settings.tuning = RemoteTuning {
        attempts,
        base_delay: Duration::from_millis(100),
        breaker_threshold: threshold,
        breaker_cooldown: Duration::from_secs(30),
        max_batch_bytes: None,
    };
    RemoteClient::connect(settings).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff() {
    let client = offline_client(3, 5).await;
    let calls = Arc::new(AtomicU32::new(0));
    let started = tokio::time::Instant::now();
    let value = client
        .call("Test.Flaky", |_| {
            let calls = Arc::clone(&calls);
            async move {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(Status::unavailable("try again")),
                    _ => Ok(7),
                }
            }
        })
        .await
        .unwrap();
    assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 3));
    // Two pauses: 100 ms and 200 ms, each jittered by ±50 %.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(450),
        "{waited:?}"
    );
}

#[tokio::test]
async fn an_outage_is_remembered_by_the_next_client_of_the_remote() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remote-outage");
    // A refused negotiation opens the first client's breaker, and that is written down.
    let first = offline_client(1, 5).await;
    first.remember_outages(file.clone());
    assert!(first.caps().await.is_err());
    assert!(first.circuit_open() && file.exists());
    // A later client of the same remote starts open, and makes no call.
    let second = offline_client(1, 5).await;
    second.remember_outages(file.clone());
    assert!(second.circuit_open());
    let refused = second.caps().await.map(|_| ()).unwrap_err();
    assert!(matches!(refused, RemoteError::CircuitOpen { .. }), "{refused:?}");
    // Another remote's client does not care.
    let other = RemoteClient::connect(RemoteSettings::new("grpc://127.0.0.1:2")).await.unwrap();
    other.remember_outages(file.clone());
    assert!(!other.circuit_open());
}

#[tokio::test]
async fn a_call_that_reaches_the_remote_forgets_its_outage() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remote-outage");
    let recorder = offline_client(1, 5).await;
    recorder.remember_outages(file.clone());
    assert!(recorder.caps().await.is_err() && file.exists());
    // With no cooldown left to honour, a client starts closed; its first answered call
    // removes the record.
    let mut settings = RemoteSettings::new("grpc://127.0.0.1:1");
    settings.tuning.breaker_cooldown = Duration::ZERO;
    let client = RemoteClient::connect(settings).await.unwrap();
    client.remember_outages(file.clone());
    assert!(!client.circuit_open());
    assert_eq!(client.call("Test.Answered", |_| async { Ok(1) }).await.unwrap(), 1);
    assert!(!file.exists());
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    let client = offline_client(1, 5).await;
    let error = client.caps().await.map(|_| ()).unwrap_err();
    assert!(matches!(&error, RemoteError::Rpc { code: Code::Unavailable, .. }), "{error:?}");
    assert!(error.to_string().contains("Connection refused"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_has_as_long_as_it_keeps_moving_and_one_deadline_once_it_stops() {
    // The deadline is 5 s. A stream moving a chunk a second for 30 s completes.
    let client = offline_client(1, 5).await;
    let progress = Progress::default();
    let started = tokio::time::Instant::now();
    let moved = client
        .call_streaming("Test.Stream", &progress, |_| {
            let progress = progress.clone();
            async move {
                for _ in 0..30 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.made();
                }
                Ok(30)
            }
        })
        .await
        .unwrap();
    assert_eq!((moved, started.elapsed().as_secs()), (30, 30));
    // The same call, untracked, gets one deadline for the whole of it.
    let error = client
        .call("Test.Stream", |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, RemoteError::Rpc { code: Code::DeadlineExceeded, .. }), "{error:?}");
    // A stream that moves for 10 s, then stalls, fails one to two deadlines after its last chunk.
    let started = tokio::time::Instant::now();
    let error = client
        .call_streaming("Test.Stall", &progress, |_| {
            let progress = progress.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.made();
                }
                std::future::pending::<Result<(), Status>>().await
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RemoteError::Rpc { code: Code::DeadlineExceeded, message, .. } if message.contains("no progress")),
        "{error:?}"
    );
    let waited = started.elapsed().as_secs();
    assert!((15..=20).contains(&waited), "{waited} s");
}

#[tokio::test(start_paused = true)]
async fn hung_calls_time_out_and_trip_the_breaker() {
    let client = offline_client(1, 2).await;
    for _ in 0..2 {
        let error = client
            .call("Test.Hang", |_| std::future::pending::<Result<(), Status>>())
            .await
            .unwrap_err();
        assert!(
            matches!(error, RemoteError::Rpc { code: Code::DeadlineExceeded, .. }),
            "{error:?}"
        );
    }
    assert!(client.circuit_open());
    let error = client.call("Test.Hang", |_| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(error, RemoteError::CircuitOpen { .. }));
    assert_eq!(client.counters().short_circuited, 1);
    // A miss is an answer from a working server: it does not count against the breaker.
    let client = offline_client(1, 1).await;
    let miss = client
        .call("Test.Miss", |_| async { Err::<(), _>(Status::not_found("no")) })
        .await
        .unwrap_err();
    assert!(miss.is_miss() && !client.circuit_open());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_server_is_given_up_on_after_one_round_of_deadlines() {
    // Four attempts of 5 s each, eight calls in flight: without counting attempts, every call
    // would wait out all four deadlines (20 s and more) before the breaker heard of it.
    let client = offline_client(4, 3).await;
    let started = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        calls.spawn(async move {
            client.call("Test.Hang", |_| std::future::pending::<Result<(), Status>>()).await
        });
    }
    for outcome in calls.join_all().await {
        assert!(
            matches!(outcome, Err(RemoteError::CircuitOpen { .. })),
            "every retry meets the open breaker: {outcome:?}"
        );
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert!(client.circuit_open());
    assert_eq!(client.counters().short_circuited, 8);
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let mut settings = RemoteSettings::new("grpc://127.0.0.1:1");
    settings.auth_token = Some("hunter2".to_owned());
    let client = RemoteClient::connect(settings.clone()).await.unwrap();
    for text in [format!("{settings:?}"), format!("{client:?}")] {
        assert!(!text.contains("hunter2") && text.contains("<redacted>"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_negotiates_costs_one_deadline() {
    // Accepts connections (the kernel completes them) and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = RemoteSettings::new(format!("grpc://{}", silent.local_addr().unwrap()));
    settings.timeout = Duration::from_secs(30);
    let client = RemoteClient::connect(settings).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        calls.spawn(async move { client.caps().await.map(|_| ()) });
    }
    let outcomes = calls.join_all().await;
    let stalled = |outcome: &Result<(), RemoteError>| {
        matches!(outcome, Err(RemoteError::Rpc { code: Code::DeadlineExceeded, .. }))
    };
    assert_eq!(outcomes.iter().filter(|outcome| stalled(outcome)).count(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| stalled(outcome)
                || matches!(outcome, Err(RemoteError::CircuitOpen { .. }))),
        "{outcomes:?}"
    );
    // Retrying the deadline, or each waiting call negotiating in turn until the breaker's
    // threshold, would take 4 or 5 deadlines.
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(31), "{waited:?}");
    assert!(client.circuit_open());
    let later = client.caps().await.unwrap_err();
    assert!(matches!(later, RemoteError::CircuitOpen { .. }), "{later:?}");
}

/// A store in a temp directory (no fsync), for the RemoteSync actor's tests.
fn scratch_store() -> (tempfile::TempDir, Arc<DiskStore>) {
    use crate::disk::{DiskSettings, EvictionPolicy};
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings {
        cache_dir: dir.path().to_owned(),
        max_size: 1 << 30,
        policy: EvictionPolicy::default(),
        fsync: false,
        inline_threshold: 64,
    };
    let store = DiskStore::open(settings, crate::key_gen::hash_pool(1).unwrap()).unwrap();
    (dir, Arc::new(store))
}

/// Downloads beyond what runs at once (twice the in-flight limit) wait in the actor's queue:
/// every one is answered, and each is tried once.
#[tokio::test]
async fn downloads_beyond_the_running_ones_wait_and_each_is_answered() {
    let (_dir, store) = scratch_store();
    let (stats, stats_join) =
        crate::stats::StatsHandle::spawn(None, 1, Duration::from_secs(60), 16);
    // One call in flight, so two downloads run and the rest queue. Refused connections fail
    // each download fast, and a breaker that never opens lets every one try.
    let mut remote_settings = offline_client(1, 1_000).await.settings().clone();
    remote_settings.max_concurrent = 1;
    let client = RemoteClient::connect(remote_settings).await.unwrap();
    let (remote, remote_join) = RemoteHandle::spawn(client.clone(), store, stats.clone(), 64);
    let mut downloads = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let remote = remote.clone();
        downloads.spawn(async move { remote.download(manifest().digest(), manifest()).await });
    }
    let answers = downloads.join_all().await;
    assert!(answers.iter().all(|answer| matches!(answer, Ok(None))), "{answers:?}");
    remote.shutdown(Duration::from_secs(5)).await.unwrap();
    remote_join.await.unwrap();
    let counters = client.counters();
    assert_eq!(counters.errors, 30, "{counters:?}");
    drop((remote, stats));
    stats_join.await.unwrap();
}

#[tokio::test]
async fn a_burst_of_uploads_waits_for_the_mailbox_and_none_is_dropped() {
    use crate::result::LogRef;

    let (_dir, store) = scratch_store();
    let (stats, stats_join) =
        crate::stats::StatsHandle::spawn(None, 1, Duration::from_secs(60), 16);
    // Refused connections fail each upload fast; the breaker refuses the rest. Either way each
    // upload is counted once, as an error.
    let client = offline_client(1, 2).await;
    let (remote, remote_join) = RemoteHandle::spawn(client.clone(), store, stats.clone(), 1);
    let result = Arc::new(ActionResult {
        exit_code: 0,
        stdout: LogRef::Inline(Vec::new()),
        stderr: LogRef::Inline(Vec::new()),
        output_files: Vec::new(),
        output_dirs: Vec::new(),
        output_symlinks: Vec::new(),
        executed_at_ms: 0,
        duration_ms: 1,
        manifest: manifest(),
        metadata: BTreeMap::new(),
    });
    let digest = result.manifest.digest();
    for _ in 0..50 {
        remote.upload(digest, Arc::clone(&result)).await;
    }
    remote.shutdown(Duration::from_secs(30)).await.unwrap();
    remote_join.await.unwrap();
    let counters = client.counters();
    assert_eq!(counters.uploads + counters.uploads_skipped + counters.errors, 50, "{counters:?}");
    drop((remote, stats));
    stats_join.await.unwrap();
}

#[tokio::test]
async fn a_server_whose_connections_hang_costs_one_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
    // as it does behind a firewall that drops packets. The queue is filled in real time.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(address);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
            queued.push(stream);
        }
    }
    assert!(!queued.is_empty(), "the accept queue took a connection");
    tokio::time::pause();
    let mut settings = RemoteSettings::new(format!("grpc://{address}"));
    settings.timeout = Duration::from_secs(30);
    let client = RemoteClient::connect(settings).await.unwrap();
    assert_eq!(client.settings().connect_timeout(), CONNECT_TIMEOUT);
    let started = tokio::time::Instant::now();
    let error = client.caps().await.map(|_| ()).unwrap_err();
    let waited = started.elapsed();
    // The connection gives up after 5 s, not the call's 30: a missed deadline, not retried.
    assert!(matches!(&error, RemoteError::Rpc { code: Code::DeadlineExceeded, .. }), "{error:?}");
    assert!(error.to_string().contains("no connection within 5s"), "{error}");
    assert!(waited >= CONNECT_TIMEOUT && waited < Duration::from_secs(6), "{waited:?}");
    assert!(client.circuit_open());
    // A shorter `timeout` bounds the connection too.
    let mut short = RemoteSettings::new("grpc://127.0.0.1:1");
    short.timeout = Duration::from_secs(2);
    assert_eq!(short.connect_timeout(), Duration::from_secs(2));
    drop((queued, listener));
}
