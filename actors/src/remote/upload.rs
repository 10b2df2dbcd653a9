//! Upload: a local result goes to the remote, blobs first and the action result last, so a
//! remote result never names a blob that is not there.
//!
//! Logs always travel as CAS blobs (`stdout_digest`/`stderr_digest`), whether the local record
//! holds them inline or not. An output directory is sent as an `OutputDirectory` whose `Tree`
//! is empty: its files are already listed as output files, and only cuenv reads results under
//! a cuenv key (the `cuenv-action-key` property), so nothing expects the tree to list them.
//! Paths stay relative to the project root, not to the `Command`'s working directory, for the
//! same reason. The result's free-form `metadata` map travels as JSON in one
//! `ExecutedActionMetadata.auxiliary_metadata` entry of type [`METADATA_TYPE`].

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::protobuf::{Any, Timestamp, UInt32Value};
use prost::Message;

use super::action::remote_action;
use super::cas::{Body, Outgoing, local_blob_missing, read_local};
use super::negotiate::Capabilities;
use super::{RemoteClient, RemoteError, blocking, check_key, counters};
use crate::Digest;
use crate::disk::{BlobRead, DiskStore};
use crate::result::{ActionResult, LogRef};

/// The `type_url` of the auxiliary metadata entry that carries a result's `metadata` map.
pub(crate) const METADATA_TYPE: &str = "type.cuenv.dev/cuenv.ResultMetadata.json";

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The result is now in the remote action cache.
    Uploaded,
    /// Nothing was sent: uploads are disabled, or the server does not accept action cache
    /// updates (warned about once per client).
    Skipped,
}

impl RemoteClient {
    /// Uploads the result stored locally under `local_digest`: its logs and output files as
    /// CAS blobs, the action's protos, then the action result. Blobs the remote already holds
    /// are not sent again.
    pub async fn upload(
        &self,
        local_digest: &Digest,
        result: &ActionResult,
        store: &DiskStore,
    ) -> Result<UploadOutcome, RemoteError> {
        let counters = &self.inner.counters;
        match self.try_upload(local_digest, result, store).await {
            Ok(UploadOutcome::Uploaded) => {
                counters::bump(&counters.uploads);
                Ok(UploadOutcome::Uploaded)
            }
            Ok(UploadOutcome::Skipped) => {
                counters::bump(&counters.uploads_skipped);
                Ok(UploadOutcome::Skipped)
            }
            Err(error) => {
                counters::bump(&counters.errors);
                Err(error)
            }
        }
    }

    async fn try_upload(
        &self,
        local_digest: &Digest,
        result: &ActionResult,
        store: &DiskStore,
    ) -> Result<UploadOutcome, RemoteError> {
        check_key(local_digest, &result.manifest)?;
        if !self.inner.settings.upload_enabled {
            return Ok(self.skip_upload("uploads are disabled in the settings"));
        }
        let caps = self.caps().await?;
        if !caps.update_enabled {
            return Ok(self.skip_upload("the server does not accept action cache updates"));
        }
        let action = remote_action(caps.digest_function, local_digest, &result.manifest);
        // Reads (and hashes) the result's blobs from the store.
        let (remote_result, mut blobs) = blocking(|| to_remote(caps, result, store))?;
        blobs.extend(
            action
                .protos
                .into_iter()
                .map(|(digest, bytes)| Outgoing { digest, body: Body::Bytes(bytes) }),
        );
        self.put_blobs(caps, blobs, store).await?;
        self.update_action_result(caps, action.digest, remote_result).await?;
        tracing::debug!(action = %local_digest.short(), "uploaded a result to the remote cache");
        Ok(UploadOutcome::Uploaded)
    }

    /// Warns (once per client) that uploads are skipped, and why.
    fn skip_upload(&self, why: &str) -> UploadOutcome {
        let first = !self.inner.warned_upload_skip.swap(true, std::sync::atomic::Ordering::Relaxed);
        if first {
            tracing::warn!("remote cache uploads are skipped: {why}");
        }
        UploadOutcome::Skipped
    }

    async fn update_action_result(
        &self,
        caps: &Capabilities,
        action_digest: reapi::Digest,
        action_result: reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let request = reapi::UpdateActionResultRequest {
            instance_name: self.inner.settings.instance_name.clone(),
            action_digest: Some(action_digest),
            action_result: Some(action_result),
            results_cache_policy: None,
            digest_function: caps.digest_function.proto(),
        };
        // REAPI remote_execution.proto: service ActionCache, rpc UpdateActionResult.
        self.call("ActionCache.UpdateActionResult", |mut rpc| {
            let request = request.clone();
            async move { Ok(rpc.action_cache.update_action_result(request).await?.into_inner()) }
        })
        .await?;
        Ok(())
    }
}

/// The REAPI form of a local result, and the blobs it names.
fn to_remote(
    caps: &Capabilities,
    result: &ActionResult,
    store: &DiskStore,
) -> Result<(reapi::ActionResult, Vec<Outgoing>), RemoteError> {
    let mut blobs = Vec::new();
    let stdout_digest = log_blob(caps, &result.stdout, store, &mut blobs)?;
    let stderr_digest = log_blob(caps, &result.stderr, store, &mut blobs)?;
    let mut output_files = Vec::with_capacity(result.output_files.len());
    // Small outputs also travel inside the ActionResult (`OutputFile.contents`), so a reader
    // gets them with `GetActionResult` alone; the blobs are uploaded as well for any reader
    // that ignores the inlined bytes.
    let mut inline_budget = INLINE_BUDGET;
    for file in &result.output_files {
        let digest = stored_blob(caps, &file.digest, store, &mut blobs)?;
        let contents = match blobs.last().map(|blob| &blob.body) {
            Some(Body::Bytes(bytes))
                if bytes.len() as u64 <= INLINE_FILE && bytes.len() as u64 <= inline_budget =>
            {
                inline_budget -= bytes.len() as u64;
                bytes.clone()
            }
            _ => Vec::new(),
        };
        output_files.push(reapi::OutputFile {
            path: file.path.clone(),
            digest: Some(digest),
            is_executable: file.executable(),
            contents,
            node_properties: Some(reapi::NodeProperties {
                unix_mode: Some(UInt32Value { value: file.mode }),
                ..Default::default()
            }),
        });
    }
    let output_directories = output_directories(caps, &result.output_dirs, &mut blobs);
    let output_symlinks = result
        .output_symlinks
        .iter()
        .map(|link| reapi::OutputSymlink {
            path: link.path.clone(),
            target: link.target.clone(),
            node_properties: None,
        })
        .collect();
    let remote = reapi::ActionResult {
        output_files,
        output_symlinks,
        output_directories,
        exit_code: result.exit_code,
        stdout_digest,
        stderr_digest,
        stdout_raw: inline_log(&result.stdout),
        stderr_raw: inline_log(&result.stderr),
        execution_metadata: Some(metadata(result)),
        ..Default::default()
    };
    Ok((remote, blobs))
}

/// Output files up to this size are inlined in the uploaded ActionResult.
const INLINE_FILE: u64 = 64 * 1024;
/// At most this many bytes of one ActionResult are inlined (well under gRPC's 4 MiB).
const INLINE_BUDGET: u64 = 1 << 20;

/// A small log's bytes, also sent inline (`stdout_raw`), so a reader needs no fetch for it.
fn inline_log(log: &LogRef) -> Vec<u8> {
    match log {
        LogRef::Inline(bytes) if bytes.len() as u64 <= INLINE_FILE => bytes.clone(),
        _ => Vec::new(),
    }
}

/// A log as a blob; `None` for an empty log.
fn log_blob(
    caps: &Capabilities,
    log: &LogRef,
    store: &DiskStore,
    blobs: &mut Vec<Outgoing>,
) -> Result<Option<reapi::Digest>, RemoteError> {
    match log {
        LogRef::Inline(bytes) if bytes.is_empty() => Ok(None),
        LogRef::Inline(bytes) => {
            let digest = caps.digest_function.digest(bytes);
            blobs.push(Outgoing { digest: digest.clone(), body: Body::Bytes(bytes.clone()) });
            Ok(Some(digest))
        }
        LogRef::Blob { digest, .. } => stored_blob(caps, digest, store, blobs).map(Some),
    }
}

/// A blob of the local store, hashed for the remote. Bytes that fit a batch are kept; a bigger
/// blob is hashed through its file, verified on the way, and streamed from it when sent.
fn stored_blob(
    caps: &Capabilities,
    local: &Digest,
    store: &DiskStore,
    blobs: &mut Vec<Outgoing>,
) -> Result<reapi::Digest, RemoteError> {
    if store.blob_size(local).is_some_and(|size| size >= caps.max_batch_bytes) {
        let (mut hasher, mut len) = (caps.digest_function.hasher(), 0);
        let scanned = store.scan_blob(local, |chunk| {
            hasher.update(chunk);
            len += chunk.len() as u64;
        });
        if !matches!(scanned, BlobRead::Found(_)) {
            return Err(local_blob_missing(local));
        }
        let digest = reapi::Digest { hash: hasher.finish(), size_bytes: len as i64 };
        blobs.push(Outgoing { digest: digest.clone(), body: Body::Stored(*local) });
        return Ok(digest);
    }
    let bytes = read_local(store, local)?;
    let digest = caps.digest_function.digest(&bytes);
    blobs.push(Outgoing { digest: digest.clone(), body: Body::Bytes(bytes) });
    Ok(digest)
}

/// Output directories, each with an empty `Tree` (see the module docs).
fn output_directories(
    caps: &Capabilities,
    dirs: &[String],
    blobs: &mut Vec<Outgoing>,
) -> Vec<reapi::OutputDirectory> {
    if dirs.is_empty() {
        return Vec::new();
    }
    let empty_dir = reapi::Directory::default().encode_to_vec();
    let tree = reapi::Tree { root: Some(reapi::Directory::default()), children: Vec::new() }
        .encode_to_vec();
    let (dir_digest, tree_digest) =
        (caps.digest_function.digest(&empty_dir), caps.digest_function.digest(&tree));
    blobs.push(Outgoing { digest: tree_digest.clone(), body: Body::Bytes(tree) });
    dirs.iter()
        .map(|path| reapi::OutputDirectory {
            path: path.clone(),
            tree_digest: Some(tree_digest.clone()),
            is_topologically_sorted: true,
            root_directory_digest: Some(dir_digest.clone()),
        })
        .collect()
}

/// When the execution ran, so a download can restore `executed_at_ms` and `duration_ms`.
fn metadata(result: &ActionResult) -> reapi::ExecutedActionMetadata {
    let completed = result.executed_at_ms;
    let started = completed.saturating_sub(result.duration_ms);
    let mut auxiliary_metadata = Vec::new();
    if !result.metadata.is_empty() {
        // Serialising a map of strings into a Vec cannot fail.
        let value = serde_json::to_vec(&result.metadata).unwrap_or_default();
        auxiliary_metadata.push(Any { type_url: METADATA_TYPE.to_owned(), value });
    }
    reapi::ExecutedActionMetadata {
        worker: "cuenv".to_owned(),
        execution_start_timestamp: Some(timestamp(started)),
        execution_completed_timestamp: Some(timestamp(completed)),
        auxiliary_metadata,
        ..Default::default()
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Milliseconds since the epoch of a timestamp (0 for one before it).
pub(crate) fn timestamp_ms(timestamp: &Timestamp) -> u64 {
    let seconds = u64::try_from(timestamp.seconds).unwrap_or(0);
    let nanos = u64::try_from(timestamp.nanos).unwrap_or(0);
    seconds * 1000 + nanos / 1_000_000
}
