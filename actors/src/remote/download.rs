//! Download: a remote result comes into the local store, verified, and becomes a local record.
//!
//! Every blob is checked against its remote digest before it is stored; one that does not
//! match turns the whole result into a miss (counted as corrupt). Blobs are stored first and
//! the record last, as for a local write, so the record is usable the moment it exists.
//! Logs smaller than the store's inline threshold become inline logs again.

use std::collections::{BTreeMap, HashMap};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;

use super::action::remote_action;
use super::cas::{Fetched, Incoming};
use super::negotiate::{Capabilities, check_digest};
use super::upload::{METADATA_TYPE, timestamp_ms};
use super::{RemoteClient, RemoteError, blocking, check_key, counters};
use crate::Digest;
use crate::disk::{DiskStore, now_ms, undeclared_output};
use crate::key_gen::KeyManifest;
use crate::result::{ActionResult, LogRef, OutputFile, OutputSymlink};

/// How a download ended, before counting.
enum Downloaded {
    Hit(Box<ActionResult>),
    Miss,
    Corrupt,
}

/// Blobs received: small ones (under the inline threshold) in memory, the rest stored.
#[derive(Default)]
struct Received {
    small: HashMap<String, Vec<u8>>,
    stored: HashMap<String, Digest>,
}

/// Bytes of received blobs held before they are stored together.
const STORE_BATCH_BYTES: usize = 8 << 20;

/// Takes blobs as they arrive. Small ones are kept in memory. Larger ones are stored in
/// groups, together so that their fsyncs overlap (see [`DiskStore::store_each`]): a group is
/// stored as soon as it holds [`STORE_BATCH_BYTES`], so at most that much plus one blob is
/// ever held.
struct Intake<'a> {
    store: &'a DiskStore,
    received: Received,
    pending: Vec<(String, Vec<u8>)>,
    pending_bytes: usize,
}

impl<'a> Intake<'a> {
    fn new(store: &'a DiskStore) -> Self {
        Intake { store, received: Received::default(), pending: Vec::new(), pending_bytes: 0 }
    }

    fn take(&mut self, digest: &reapi::Digest, blob: Incoming) -> std::io::Result<()> {
        let hash = digest.hash.clone();
        let bytes = match blob {
            Incoming::Bytes(bytes) => bytes,
            Incoming::Stored(local) => {
                self.received.stored.insert(hash, local);
                return Ok(());
            }
        };
        if (bytes.len() as u64) < self.store.settings().inline_threshold {
            self.received.small.insert(hash, bytes);
        } else {
            self.pending_bytes += bytes.len();
            self.pending.push((hash, bytes));
            if self.pending_bytes >= STORE_BATCH_BYTES {
                self.store_pending()?;
            }
        }
        Ok(())
    }

    fn store_pending(&mut self) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let store = self.store;
        let digests = blocking(|| store.store_each(&pending, |(_, bytes)| store.put_bytes(bytes)))?;
        self.received.stored.extend(pending.into_iter().map(|(hash, _)| hash).zip(digests));
        Ok(())
    }

    /// Everything received, the last group stored.
    fn finish(mut self) -> std::io::Result<Received> {
        self.store_pending()?;
        Ok(self.received)
    }
}

impl RemoteClient {
    /// Looks the action up remotely. On a hit, every blob is fetched, verified and stored in
    /// `store`, the result is written as the record of `local_digest` and returned. A result
    /// the remote lacks, or one with a missing or damaged blob, is `Ok(None)`. With downloads
    /// disabled this is `Ok(None)` without a call (counted as a miss).
    pub async fn download(
        &self,
        local_digest: &Digest,
        manifest: &KeyManifest,
        store: &DiskStore,
    ) -> Result<Option<ActionResult>, RemoteError> {
        let counters = &self.inner.counters;
        match self.try_download(local_digest, manifest, store).await {
            Ok(Downloaded::Hit(result)) => {
                counters::bump(&counters.hits);
                Ok(Some(*result))
            }
            Ok(Downloaded::Miss) => {
                counters::bump(&counters.misses);
                Ok(None)
            }
            Ok(Downloaded::Corrupt) => {
                counters::bump(&counters.corrupt);
                Ok(None)
            }
            Err(error) => {
                counters::bump(&counters.errors);
                Err(error)
            }
        }
    }

    async fn try_download(
        &self,
        local_digest: &Digest,
        manifest: &KeyManifest,
        store: &DiskStore,
    ) -> Result<Downloaded, RemoteError> {
        check_key(local_digest, manifest)?;
        if !self.inner.settings.download_enabled {
            return Ok(Downloaded::Miss);
        }
        let caps = self.caps().await?;
        let action = remote_action(caps.digest_function, local_digest, manifest);
        let Some(remote) = self.get_action_result(caps, action.digest).await? else {
            return Ok(Downloaded::Miss);
        };
        let checked = wanted_blobs(&remote).and_then(|wanted| Ok((wanted, metadata(&remote)?)));
        let (wanted, metadata) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::warn!(%reason, "remote action result is malformed; treating it as a miss");
                return Ok(Downloaded::Corrupt);
            }
        };
        // Only where the task's own outputs go: a result is never a way to write elsewhere in
        // the project (`.git/hooks`, sources).
        let paths = remote.output_files.iter().map(|file| file.path.as_str());
        let links = remote.output_symlinks.iter().map(|link| link.path.as_str());
        let dirs = remote.output_directories.iter().map(|dir| dir.path.as_str());
        if let Some(path) = undeclared_output(manifest, paths.chain(links), dirs) {
            tracing::warn!(
                task = %manifest.task,
                path,
                "remote result names an output the task does not declare; treating it as a miss"
            );
            return Ok(Downloaded::Corrupt);
        }
        let mut received = match self.receive(caps, wanted, store).await? {
            Ok(received) => received,
            Err(outcome) => return Ok(outcome),
        };
        if !inlined(caps, &remote, &mut received) {
            tracing::warn!(
                "remote result has inlined output contents that do not match their digests; treating it as a miss"
            );
            return Ok(Downloaded::Corrupt);
        }
        // The rest of the blobs and the record are written (and fsynced) off the async workers.
        let result = blocking(|| -> Result<ActionResult, RemoteError> {
            let mut result = to_local(&remote, manifest, &received, store)?;
            result.metadata = metadata;
            store.put_record(local_digest, &result)?;
            Ok(result)
        })?;
        tracing::debug!(action = %local_digest.short(), "downloaded a result from the remote cache");
        Ok(Downloaded::Hit(Box::new(result)))
    }

    /// Fetches `wanted` into memory (small blobs) and the store (the rest, in groups: see
    /// `Intake`). Blobs of a result that turns out a miss may stay stored, unreferenced, as
    /// before: gc removes them.
    async fn receive(
        &self,
        caps: &Capabilities,
        wanted: Vec<reapi::Digest>,
        store: &DiskStore,
    ) -> Result<Result<Received, Downloaded>, RemoteError> {
        let mut intake = Intake::new(store);
        let mut sink = |digest: &reapi::Digest, blob: Incoming| intake.take(digest, blob);
        match self.get_blobs(caps, wanted, Some(store), &mut sink).await? {
            Fetched::All => Ok(Ok(intake.finish()?)),
            Fetched::Missing => Ok(Err(Downloaded::Miss)),
            Fetched::Corrupt => Ok(Err(Downloaded::Corrupt)),
        }
    }

    /// The remote result under `action_digest`; `None` on a miss.
    pub(crate) async fn get_action_result(
        &self,
        caps: &Capabilities,
        action_digest: reapi::Digest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let request = reapi::GetActionResultRequest {
            instance_name: self.inner.settings.instance_name.clone(),
            action_digest: Some(action_digest),
            inline_stdout: true,
            inline_stderr: true,
            inline_output_files: Vec::new(),
            digest_function: caps.digest_function.proto(),
        };
        // REAPI remote_execution.proto: service ActionCache, rpc GetActionResult.
        let answer = self
            .call("ActionCache.GetActionResult", |mut rpc| {
                let request = request.clone();
                async move { Ok(rpc.action_cache.get_action_result(request).await?.into_inner()) }
            })
            .await;
        match answer {
            Ok(result) => Ok(Some(result)),
            Err(error) if error.is_miss() => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// The blobs a remote result needs fetched: output files, and logs not sent inline.
fn wanted_blobs(remote: &reapi::ActionResult) -> Result<Vec<reapi::Digest>, String> {
    let mut wanted = Vec::new();
    for file in &remote.output_files {
        let digest =
            file.digest.clone().ok_or_else(|| format!("output {} has no digest", file.path))?;
        check_digest(&digest)?;
        // Inlined contents need no fetch (they are verified like fetched blobs).
        if file.contents.is_empty() {
            wanted.push(digest);
        }
    }
    let logs =
        [(&remote.stdout_raw, &remote.stdout_digest), (&remote.stderr_raw, &remote.stderr_digest)];
    for (raw, digest) in logs {
        if let (true, Some(digest)) = (raw.is_empty(), digest) {
            check_digest(digest)?;
            wanted.push(digest.clone());
        }
    }
    Ok(wanted)
}

/// Adds the output files inlined in `remote` to `received`, each checked against its digest,
/// and checks inlined logs likewise; `false` if anything does not match.
fn inlined(caps: &Capabilities, remote: &reapi::ActionResult, received: &mut Received) -> bool {
    for file in remote.output_files.iter().filter(|file| !file.contents.is_empty()) {
        let Some(digest) = &file.digest else { return false };
        if caps.digest_function.digest(&file.contents) != *digest {
            return false;
        }
        received.small.insert(digest.hash.clone(), file.contents.clone());
    }
    // Inlined logs must match their digests too, when the server sent both.
    let logs =
        [(&remote.stdout_raw, &remote.stdout_digest), (&remote.stderr_raw, &remote.stderr_digest)];
    logs.into_iter().all(|(raw, digest)| match digest {
        Some(digest) if !raw.is_empty() => caps.digest_function.digest(raw) == *digest,
        _ => true,
    })
}

/// The result's `metadata` map, from the auxiliary metadata entry the uploader wrote.
fn metadata(remote: &reapi::ActionResult) -> Result<BTreeMap<String, String>, String> {
    let entries =
        remote.execution_metadata.iter().flat_map(|metadata| &metadata.auxiliary_metadata);
    match entries.into_iter().find(|entry| entry.type_url == METADATA_TYPE) {
        Some(entry) => serde_json::from_slice(&entry.value)
            .map_err(|error| format!("result metadata: {error}")),
        None => Ok(BTreeMap::new()),
    }
}

/// The local digest of a received blob, by remote hash.
fn local_blob(local: &HashMap<&str, Digest>, hash: &str) -> Result<Digest, RemoteError> {
    local.get(hash).copied().ok_or_else(|| RemoteError::Protocol {
        rpc: "ContentAddressableStorage.BatchReadBlobs",
        reason: format!("blob {hash} was not received"),
    })
}

/// The local digests of every received blob: the ones stored as they arrived, and the output
/// files held in memory, stored now (in parallel when there are many; see
/// [`DiskStore::store_each`]).
fn store_received<'a>(
    remote: &'a reapi::ActionResult,
    received: &'a Received,
    store: &DiskStore,
) -> Result<HashMap<&'a str, Digest>, RemoteError> {
    // Distinct hashes, each stored once.
    let held: BTreeMap<&str, &Vec<u8>> = remote
        .output_files
        .iter()
        .filter_map(|file| received.small.get_key_value(&file.digest.as_ref()?.hash))
        .map(|(hash, bytes)| (hash.as_str(), bytes))
        .collect();
    let held: Vec<(&str, &Vec<u8>)> = held.into_iter().collect();
    let digests = store.store_each(&held, |(_, bytes)| store.put_bytes(bytes))?;
    let mut local: HashMap<&str, Digest> =
        received.stored.iter().map(|(hash, digest)| (hash.as_str(), *digest)).collect();
    local.extend(held.iter().map(|(hash, _)| *hash).zip(digests));
    Ok(local)
}

fn local_log(
    raw: &[u8],
    digest: Option<&reapi::Digest>,
    received: &Received,
    local: &HashMap<&str, Digest>,
    store: &DiskStore,
) -> Result<LogRef, RemoteError> {
    if !raw.is_empty() {
        return Ok(store.log_ref(raw.to_vec())?);
    }
    let Some(digest) = digest.filter(|digest| digest.size_bytes > 0) else {
        return Ok(LogRef::EMPTY);
    };
    if let Some(bytes) = received.small.get(&digest.hash) {
        return Ok(store.log_ref(bytes.clone())?);
    }
    let size = u64::try_from(digest.size_bytes).unwrap_or(0);
    Ok(LogRef::Blob { digest: local_blob(local, &digest.hash)?, size })
}

/// The local form of a remote result whose blobs have all been received.
fn to_local(
    remote: &reapi::ActionResult,
    manifest: &KeyManifest,
    received: &Received,
    store: &DiskStore,
) -> Result<ActionResult, RemoteError> {
    let local = store_received(remote, received, store)?;
    let mut output_files = Vec::with_capacity(remote.output_files.len());
    for file in &remote.output_files {
        let digest = file.digest.clone().unwrap_or_default();
        output_files.push(OutputFile {
            path: file.path.clone(),
            digest: local_blob(&local, &digest.hash)?,
            size: u64::try_from(digest.size_bytes).unwrap_or(0),
            // The recorded mode when the uploader sent one, else what the execute bit says.
            mode: file
                .node_properties
                .as_ref()
                .and_then(|properties| properties.unix_mode.as_ref())
                .map_or(OutputFile::mode_of(file.is_executable), |mode| mode.value & 0o777),
        });
    }
    output_files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut output_dirs: Vec<String> =
        remote.output_directories.iter().map(|dir| dir.path.clone()).collect();
    output_dirs.sort();
    let mut output_symlinks: Vec<OutputSymlink> = remote
        .output_symlinks
        .iter()
        .map(|link| OutputSymlink { path: link.path.clone(), target: link.target.clone() })
        .collect();
    output_symlinks.sort_by(|a, b| a.path.cmp(&b.path));
    let (executed_at_ms, duration_ms) = timing(remote.execution_metadata.as_ref());
    Ok(ActionResult {
        exit_code: remote.exit_code,
        stdout: local_log(
            &remote.stdout_raw,
            remote.stdout_digest.as_ref(),
            received,
            &local,
            store,
        )?,
        stderr: local_log(
            &remote.stderr_raw,
            remote.stderr_digest.as_ref(),
            received,
            &local,
            store,
        )?,
        output_files,
        output_dirs,
        output_symlinks,
        executed_at_ms,
        duration_ms,
        manifest: manifest.clone(),
        metadata: BTreeMap::new(),
    })
}

/// When the execution finished and how long it took, from the metadata the uploader wrote
/// (now and zero when there is none).
fn timing(metadata: Option<&reapi::ExecutedActionMetadata>) -> (u64, u64) {
    let Some(metadata) = metadata else { return (now_ms(), 0) };
    let completed = metadata.execution_completed_timestamp.as_ref().map(timestamp_ms);
    let started = metadata.execution_start_timestamp.as_ref().map(timestamp_ms);
    match (completed, started) {
        (Some(completed), Some(started)) => (completed, completed.saturating_sub(started)),
        (Some(completed), None) => (completed, 0),
        _ => (now_ms(), 0),
    }
}
