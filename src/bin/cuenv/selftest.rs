//! `cuenv cache test`: checks that the cache directory works, end to end, with a probe entry.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cuenv::config::{GlobalCacheConfig, format_size};
use cuenv::manager::disk_settings;
use cuenv_actors::disk::{BlobRead, DiskStore, Layout, RecordLookup, now_ms};
use cuenv_actors::key_gen::{KeyManifest, hash_pool};
use cuenv_actors::remote::RemoteClient;
use cuenv_actors::result::{ActionResult, LogRef, OutputFile};

type Check = (&'static str, Result<String, String>);

/// The remote cache: capabilities, a probe blob written and read back, a lookup that must miss.
/// Checked whatever outage runs remember; a pass forgets it.
pub(crate) async fn remote(config: &cuenv::config::RemoteCacheConfig, cache_dir: &Path) -> Check {
    let settings = cuenv::manager::remote_settings(config);
    let outcome = match RemoteClient::connect(settings).await {
        Ok(client) => {
            let checked = client.check().await;
            if checked.is_ok() {
                client.forget_outages(Layout::new(cache_dir).remote_outage());
            }
            checked
        }
        Err(error) => Err(error),
    };
    let detail = outcome
        .map(|report| {
            let caps = &report.capabilities;
            format!(
                "{} (instance {:?}): digest {}, batch limit {}, result uploads {}; probe of {} B written and read back in {} ms",
                report.endpoint,
                report.instance_name,
                caps.digest_function.name(),
                format_size(caps.max_batch_bytes),
                if caps.update_enabled { "allowed" } else { "refused by the server" },
                report.probe_bytes,
                report.elapsed.as_millis()
            )
        })
        .map_err(|error| error.to_string());
    ("remote cache", detail)
}

/// Every local check, in order; later checks are skipped when the store cannot be opened.
pub(crate) fn local(config: &GlobalCacheConfig) -> Vec<Check> {
    let dir = &config.cache_dir;
    let settings = disk_settings(config, dir.clone());
    let store = hash_pool(1).map_err(|error| error.to_string()).and_then(|pool| {
        DiskStore::open(settings, pool).map_err(|error| format!("{}: {error}", dir.display()))
    });
    let mut checks: Vec<Check> = vec![(
        "cache directory",
        store.as_ref().map(|_| dir.display().to_string()).map_err(Clone::clone),
    )];
    let Ok(store) = store else { return checks };
    checks.push(("permissions", permissions(dir)));
    checks.push(("free space", free_space(dir, config.max_size)));
    checks.push(("write, read, verify, remove a probe entry", probe(&store)));
    checks
}

fn permissions(dir: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(dir).map_err(|error| error.to_string())?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mode = metadata.mode() & 0o777;
    if metadata.uid() != uid && mode & 0o002 == 0 && mode & 0o020 == 0 {
        return Err(format!("owned by uid {} (you are {uid}) with mode {mode:o}", metadata.uid()));
    }
    Ok(format!("mode {mode:o}, owner uid {}", metadata.uid()))
}

fn free_space(dir: &Path, max_size: u64) -> Result<String, String> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|error| error.to_string())?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let message = format!("{} free (max_size {})", format_size(free), format_size(max_size));
    if free < 64 << 20 { Err(format!("only {message}")) } else { Ok(message) }
}

fn probe(store: &DiskStore) -> Result<String, String> {
    let content = format!("cuenv cache probe {} {}", std::process::id(), now_ms()).into_bytes();
    let blob = store.put_bytes(&content).map_err(|error| format!("write blob: {error}"))?;
    let manifest = KeyManifest::for_command("cuenv cache test", &String::from_utf8_lossy(&content));
    let digest = manifest.digest();
    let result = ActionResult {
        exit_code: 0,
        stdout: LogRef::EMPTY,
        stderr: LogRef::EMPTY,
        output_files: vec![OutputFile {
            path: "probe".into(),
            digest: blob,
            size: content.len() as u64,
            mode: 0o644,
        }],
        output_dirs: Vec::new(),
        output_symlinks: Vec::new(),
        executed_at_ms: now_ms(),
        duration_ms: 0,
        manifest,
        metadata: BTreeMap::new(),
    };
    store.put_record(&digest, &result).map_err(|error| format!("write record: {error}"))?;
    match store.get_record(&digest) {
        RecordLookup::Hit(read) if *read == result => {}
        other => return Err(format!("read back the probe record: {other:?}")),
    }
    if store.read_blob(&blob) != BlobRead::Found(content) {
        return Err("read back the probe blob: content differs".to_owned());
    }
    let layout = store.layout();
    std::fs::remove_file(layout.record(&digest))
        .map_err(|error| format!("remove probe record: {error}"))?;
    std::fs::remove_file(layout.blob(&blob))
        .map_err(|error| format!("remove probe blob: {error}"))?;
    Ok(format!("record {} and its blob", digest.short()))
}
