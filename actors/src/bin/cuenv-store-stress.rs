//! A test tool, not part of cuenv: it drives a [`DiskStore`] from a separate process, so that
//! `actors/tests/processes.rs` can SIGKILL writers mid-write and run many processes against one
//! cache directory, as real `cuenv` processes sharing a cache do.
//!
//! ```text
//! cuenv-store-stress write-loop CACHE_DIR SEED       write keys forever (killed by the test)
//! cuenv-store-stress mixed CACHE_DIR SEED SECONDS    read, write and gc; verify every hit
//! cuenv-store-stress same CACHE_DIR ROLE ROUNDS      ROLE 0 and 1 publish the same keys in step
//! cuenv-store-stress short-of-files CACHE_DIR        read key 1 with no file left to open
//! ```
//!
//! Every key `n` determines its result (see [`content`]): task `k{n}`, a stdout (inline for even
//! keys, a blob for odd ones), four outputs (a small file, a 4 KiB-ish file, one over
//! [`LARGE_FILE`] stored with `put_file` from a source file, and one blob shared by every key),
//! an output directory and a symlink. A hit is correct only if it equals [`expected`] and
//! restores byte for byte. Scratch files live under `CACHE_DIR/stress-scratch/<pid>`, which the
//! store never looks at.
//!
//! # What `mixed`'s gc exercises
//! gc never removes a record or blob younger than `cuenv_actors::disk::GRACE` (60 s), and a 10-second run writes nothing
//! older. So before each gc, `mixed` sets the modification time of a random quarter of the
//! records and blobs two hours back, as if they had been written long ago. That exercises
//! eviction and orphan removal racing readers (a hit whose blob is evicted before its restore)
//! and writers (a blob touched for reuse, then collected before its record is written: the
//! record write fails with `NotFound`, counted as `lost`). It does not exercise the grace period
//! itself (aging defeats it on purpose), nor the sweep of temp files (`v1/tmp` is never aged: a
//! live writer's temp file is by definition not abandoned).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line test tool")]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use cuenv_actors::Digest;
use cuenv_actors::disk::{
    BlobRead, DiskSettings, DiskStore, EvictionPolicy, GcTarget, RecordLookup,
};
use cuenv_actors::key_gen::{InputPart, KEY_FORMAT_VERSION, KeyManifest, LARGE_FILE, hash_pool};
use cuenv_actors::result::{ActionResult, LogRef, OutputFile, OutputSymlink};

/// Keys `write-loop` and `mixed` pick from: all processes share this space.
pub(crate) const KEYS: u64 = 32;
/// Logs shorter than this stay inline in the record.
pub(crate) const INLINE: u64 = 1024;
/// The size `mixed`'s gc evicts down to: far below the ~6 MiB the key space fills.
const GC_MAX_SIZE: u64 = 512 * 1024;
/// How far back `mixed` sets the modification time of the files it ages.
const AGED: Duration = Duration::from_secs(2 * 3600);

/// Opens the store of `cache_dir` as the tests and tools use it (no fsync: the tests kill
/// processes, they do not cut power).
pub(crate) fn open(cache_dir: &Path) -> io::Result<DiskStore> {
    let settings = DiskSettings {
        cache_dir: cache_dir.to_owned(),
        max_size: GC_MAX_SIZE,
        policy: EvictionPolicy::Lru,
        fsync: false,
        inline_threshold: INLINE,
    };
    DiskStore::open(settings, hash_pool(2).map_err(io::Error::other)?)
}

/// What key `n` produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    /// The task's stdout.
    pub(crate) stdout: Vec<u8>,
    /// Output files by path, sorted.
    pub(crate) outputs: Vec<(String, Vec<u8>)>,
}

/// Deterministic bytes: a splitmix64 stream from `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The content of key `n`.
pub(crate) fn content(n: u64) -> Content {
    let small = n as usize % 64;
    let stdout_len = if n.is_multiple_of(2) { 200 } else { 3000 } + small;
    let mut stdout = format!("k{n} stdout\n").into_bytes();
    stdout.extend(bytes(n << 8, stdout_len));
    let outputs = vec![
        ("out/a.txt".to_owned(), bytes((n << 8) + 1, 100 + 7 * small)),
        ("out/b.bin".to_owned(), bytes((n << 8) + 2, 4096 + 13 * small)),
        ("out/big.bin".to_owned(), bytes((n << 8) + 3, 160 * 1024 + 1021 * small)),
        ("out/shared.txt".to_owned(), b"the same in every key\n".repeat(50)),
    ];
    Content { stdout, outputs }
}

/// The manifest of key `n`; its digest is the key's action digest.
pub(crate) fn manifest(n: u64) -> KeyManifest {
    KeyManifest {
        format: KEY_FORMAT_VERSION,
        task: format!("k{n}"),
        command: "stress".to_owned(),
        args: Vec::new(),
        working_dir: String::new(),
        env: BTreeMap::new(),
        inputs: InputPart::CacheKey(n.to_string()),
        outputs: vec!["out".to_owned()],
        custom: BTreeMap::new(),
        dependencies: BTreeMap::new(),
        cuenv_version: "stress".to_owned(),
        platform: "test".to_owned(),
    }
}

/// The result key `n` must read back as, computed without a store.
pub(crate) fn expected(n: u64) -> (Digest, ActionResult) {
    let content = content(n);
    let stdout = if (content.stdout.len() as u64) < INLINE {
        LogRef::Inline(content.stdout.clone())
    } else {
        LogRef::Blob { digest: Digest::of(&content.stdout), size: content.stdout.len() as u64 }
    };
    let output_files = content
        .outputs
        .iter()
        .map(|(path, bytes)| OutputFile {
            path: path.clone(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            mode: 0o644,
        })
        .collect();
    result_of(n, stdout, output_files)
}

fn result_of(n: u64, stdout: LogRef, output_files: Vec<OutputFile>) -> (Digest, ActionResult) {
    let manifest = manifest(n);
    let result = ActionResult {
        exit_code: 0,
        stdout,
        stderr: LogRef::EMPTY,
        output_files,
        output_dirs: vec!["out".to_owned()],
        output_symlinks: vec![OutputSymlink {
            path: "out/latest".to_owned(),
            target: "big.bin".to_owned(),
        }],
        executed_at_ms: 1_700_000_000_000 + n,
        duration_ms: n,
        manifest,
        metadata: BTreeMap::from([("stress-key".to_owned(), n.to_string())]),
    };
    (result.manifest.digest(), result)
}

/// Where the source file of key `n`'s large output lives; written on first use.
pub(crate) fn large_source(n: u64, scratch: &Path) -> io::Result<PathBuf> {
    let path = scratch.join(format!("k{n}.big"));
    if !path.exists() {
        let content = content(n);
        let large = content.outputs.iter().find(|(_, bytes)| bytes.len() as u64 >= LARGE_FILE);
        let temp = scratch.join(format!("k{n}.big.partial"));
        fs::write(&temp, &large.expect("every key has a large output").1)?;
        fs::rename(&temp, &path)?;
    }
    Ok(path)
}

/// Stores key `n` as the cache does: blobs first (the large one with `put_file`), then the
/// record.
pub(crate) fn write_key(store: &DiskStore, n: u64, scratch: &Path) -> io::Result<Digest> {
    let content = content(n);
    let mut output_files = Vec::new();
    for (path, bytes) in &content.outputs {
        let (digest, size) = if bytes.len() as u64 >= LARGE_FILE {
            store.put_file(&large_source(n, scratch)?)?
        } else {
            (store.put_bytes(bytes)?, bytes.len() as u64)
        };
        output_files.push(OutputFile { path: path.clone(), digest, size, mode: 0o644 });
    }
    let stdout = store.log_ref(content.stdout)?;
    let (digest, result) = result_of(n, stdout, output_files);
    store.put_record(&digest, &result)?;
    Ok(digest)
}

/// How a key read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// No record, or one whose blobs are gone.
    Miss,
    /// A hit equal to [`expected`] that restored byte for byte.
    Exact,
    /// A correct hit whose blob was removed before it could be read: a miss to the caller.
    Vanished(String),
}

/// Reads key `n` and, on a hit, verifies it completely, restoring under `restore_root`. `Err`
/// is a wrong answer: a damaged record, a different result, or different bytes.
pub(crate) fn check_key(store: &DiskStore, n: u64, restore_root: &Path) -> Result<Checked, String> {
    let (digest, want) = expected(n);
    let result = match store.get_record(&digest) {
        RecordLookup::Miss => return Ok(Checked::Miss),
        RecordLookup::Corrupt { reason } => return Err(format!("k{n}: corrupt record: {reason}")),
        RecordLookup::Hit(result) => result,
    };
    if *result != want {
        return Err(format!("k{n}: hit with another result:\n{result:?}\nwanted\n{want:?}"));
    }
    let content = content(n);
    match store.read_log(&result.stdout) {
        Some(stdout) if stdout == content.stdout => {}
        Some(_) => return Err(format!("k{n}: stdout differs")),
        None => return Ok(Checked::Vanished("stdout blob".to_owned())),
    }
    let root = restore_root.join(format!("k{n}"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|error| format!("{}: {error}", root.display()))?;
    let checked = match store.restore_outputs(&result, &root) {
        Ok(_) => compare_restored(n, &content, &root).map(|()| Checked::Exact),
        Err(error) if error.is_cache_fault() => Ok(Checked::Vanished(error.to_string())),
        Err(error) => Err(format!("k{n}: restore failed: {error}")),
    };
    let _ = fs::remove_dir_all(&root);
    checked
}

fn compare_restored(n: u64, content: &Content, root: &Path) -> Result<(), String> {
    for (path, bytes) in &content.outputs {
        let restored =
            fs::read(root.join(path)).map_err(|error| format!("k{n} {path}: {error}"))?;
        if restored != *bytes {
            return Err(format!("k{n}: restored {path} differs ({} bytes)", restored.len()));
        }
    }
    match fs::read_link(root.join("out/latest")) {
        Ok(target) if target == Path::new("big.bin") => Ok(()),
        other => Err(format!("k{n}: restored symlink is {other:?}")),
    }
}

/// This process's scratch directory, inside the cache directory but outside the store.
fn scratch_dir(cache_dir: &Path) -> io::Result<PathBuf> {
    let scratch = cache_dir.join("stress-scratch").join(std::process::id().to_string());
    fs::create_dir_all(&scratch)?;
    Ok(scratch)
}

/// Writes random keys until killed, flushing the journal every fourth write.
fn write_loop(cache_dir: &Path, seed: u64) -> Result<String, String> {
    let store = open(cache_dir).map_err(|error| format!("open: {error}"))?;
    let scratch = scratch_dir(cache_dir).map_err(|error| format!("scratch: {error}"))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    for writes in 1u64.. {
        let n = rng.u64(0..KEYS);
        write_key(&store, n, &scratch).map_err(|error| format!("write k{n}: {error}"))?;
        if writes.is_multiple_of(4) {
            store.flush().map_err(|error| format!("flush: {error}"))?;
        }
    }
    unreachable!("the loop above runs until the process is killed")
}

/// What one `mixed` run did.
#[derive(Debug, Default)]
struct Tally {
    reads: u64,
    hits: u64,
    vanished: u64,
    writes: u64,
    lost: u64,
    gcs: u64,
    evicted: u64,
    blobs_removed: u64,
    /// Records gc reported damaged: nothing here damages one, so any is a misreport.
    corrupt: u64,
}

/// For `seconds`, reads (55%), writes (44%) and collects (1%) random keys.
fn mixed(cache_dir: &Path, seed: u64, seconds: u64) -> Result<String, String> {
    let store = open(cache_dir).map_err(|error| format!("open: {error}"))?;
    let scratch = scratch_dir(cache_dir).map_err(|error| format!("scratch: {error}"))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for ops in 1u64.. {
        if Instant::now() >= deadline {
            break;
        }
        let n = rng.u64(0..KEYS);
        // One gc at op 100 at least, so even a starved run collects once.
        match rng.u32(0..100) {
            _ if ops == 100 => gc_one(&store, &mut rng, &mut tally)?,
            0..55 => read_one(&store, n, &scratch, &mut tally)?,
            55..99 => write_one(&store, n, &scratch, &mut tally)?,
            _ => gc_one(&store, &mut rng, &mut tally)?,
        }
        if ops.is_multiple_of(16) {
            store.flush().map_err(|error| format!("flush: {error}"))?;
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    let Tally { reads, hits, vanished, writes, lost, gcs, evicted, blobs_removed, corrupt } = tally;
    Ok(format!(
        "mixed seed={seed} reads={reads} hits={hits} vanished={vanished} writes={writes} \
         lost={lost} gcs={gcs} evicted={evicted} blobs_removed={blobs_removed} corrupt={corrupt}"
    ))
}

fn read_one(store: &DiskStore, n: u64, scratch: &Path, tally: &mut Tally) -> Result<(), String> {
    tally.reads += 1;
    match check_key(store, n, scratch)? {
        Checked::Miss => {}
        Checked::Exact => tally.hits += 1,
        Checked::Vanished(_) => tally.vanished += 1,
    }
    Ok(())
}

fn write_one(store: &DiskStore, n: u64, scratch: &Path, tally: &mut Tally) -> Result<(), String> {
    match write_key(store, n, scratch) {
        Ok(_) => tally.writes += 1,
        // A blob this write reused was aged and collected before its record was written.
        Err(error) if error.kind() == io::ErrorKind::NotFound => tally.lost += 1,
        Err(error) => return Err(format!("write k{n}: {error}")),
    }
    Ok(())
}

fn gc_one(store: &DiskStore, rng: &mut fastrand::Rng, tally: &mut Tally) -> Result<(), String> {
    let when = SystemTime::now() - AGED;
    for dir in [store.layout().ac(), store.layout().cas()] {
        for path in store_files(&dir) {
            if rng.u32(0..4) == 0 {
                // The file may be gone already (evicted by another process): fine.
                let _ = File::open(&path).and_then(|file| file.set_modified(when));
            }
        }
    }
    let report = store
        .gc(GcTarget { max_size: GC_MAX_SIZE, max_age: None })
        .map_err(|error| format!("gc: {error}"))?;
    tally.gcs += 1;
    tally.evicted += report.records_evicted;
    tally.blobs_removed += report.blobs_removed;
    tally.corrupt += report.corrupt_removed;
    Ok(())
}

/// The files in the shard directories of `dir` (a CAS or record directory).
pub(crate) fn store_files(dir: &Path) -> Vec<PathBuf> {
    let shards = fs::read_dir(dir).into_iter().flatten().flatten();
    shards
        .flat_map(|shard| fs::read_dir(shard.path()).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .collect()
}

/// Publishes keys `1000..1000 + rounds` in step with the other role: before each round, each
/// process marks it in `CACHE_DIR/stress-barrier` and waits for the other's mark, so both write
/// the same blobs and record at the same moment. Every write and the read after it must succeed.
fn same(cache_dir: &Path, role: u64, rounds: u64) -> Result<String, String> {
    let store = open(cache_dir).map_err(|error| format!("open: {error}"))?;
    let scratch = scratch_dir(cache_dir).map_err(|error| format!("scratch: {error}"))?;
    let barrier = cache_dir.join("stress-barrier");
    fs::create_dir_all(&barrier).map_err(|error| format!("barrier: {error}"))?;
    let mut exact = 0;
    for round in 0..rounds {
        let n = 1000 + round;
        large_source(n, &scratch).map_err(|error| format!("source: {error}"))?;
        fs::write(barrier.join(format!("{round}.{role}")), b"")
            .map_err(|error| format!("barrier: {error}"))?;
        wait_for(&barrier.join(format!("{round}.{}", 1 - role)))?;
        write_key(&store, n, &scratch).map_err(|error| format!("write k{n}: {error}"))?;
        match check_key(&store, n, &scratch)? {
            Checked::Exact => exact += 1,
            other => return Err(format!("k{n}: read {other:?} right after writing it")),
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(format!("same role={role} rounds={rounds} exact={exact}"))
}

/// Spins (yielding) until `path` exists; the other process is at most a round behind.
fn wait_for(path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(format!("the other process never reached {}", path.display()));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Reads key 1 (stored by the caller) with no file descriptor left to open, then again with
/// the limit back: `record Miss, blob Missing; then Exact`, when running out of files costs
/// a miss and not the entry.
fn short_of_files(cache_dir: &Path) -> Result<String, String> {
    let store = open(cache_dir).map_err(|error| format!("open the store: {error}"))?;
    let (digest, want) = expected(1);
    let blob = want.output_files[0].digest;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    // The lowest free descriptor becomes the limit: every open from here fails (EMFILE).
    let lowest = File::open("/dev/null").map_err(|error| error.to_string())?;
    let short = libc::rlimit { rlim_cur: lowest.as_raw_fd() as libc::rlim_t, ..limit };
    drop(lowest);
    // SAFETY: setrlimit only reads the structs; lowering the soft limit is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &short) };
    let record = match store.get_record(&digest) {
        RecordLookup::Miss => "Miss".to_owned(),
        RecordLookup::Corrupt { reason } => format!("Corrupt ({reason})"),
        RecordLookup::Hit(_) => "Hit".to_owned(),
    };
    let read = store.read_blob(&blob);
    // SAFETY: as above; the hard limit was never lowered, so the soft one may go back.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let blob = match read {
        BlobRead::Found(_) => "Found",
        BlobRead::Missing => "Missing",
        BlobRead::Corrupt => "Corrupt",
    };
    let scratch = scratch_dir(cache_dir).map_err(|error| error.to_string())?;
    let then = check_key(&store, 1, &scratch)?;
    Ok(format!("record {record}, blob {blob}; then {then:?}"))
}

fn run(args: &[&str]) -> Result<String, String> {
    let number = |text: &str| text.parse::<u64>().map_err(|error| format!("{text:?}: {error}"));
    match args {
        ["write-loop", dir, seed] => write_loop(Path::new(dir), number(seed)?),
        ["mixed", dir, seed, seconds] => mixed(Path::new(dir), number(seed)?, number(seconds)?),
        ["same", dir, role @ ("0" | "1"), rounds] => {
            same(Path::new(dir), number(role)?, number(rounds)?)
        }
        ["short-of-files", dir] => short_of_files(Path::new(dir)),
        _ => Err("usage: cuenv-store-stress write-loop CACHE_DIR SEED \
                  | mixed CACHE_DIR SEED SECONDS | same CACHE_DIR 0|1 ROUNDS \
                  | short-of-files CACHE_DIR"
            .to_owned()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("cuenv-store-stress: {message}");
            ExitCode::FAILURE
        }
    }
}
