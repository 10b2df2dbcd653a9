//! Moving blobs to and from the remote CAS: batches for small blobs, ByteStream for big ones.
//!
//! Blobs whose data (plus an entry's overhead) fits the negotiated batch size travel in
//! `BatchUpdateBlobs`/`BatchReadBlobs` calls packed up to that size; larger ones are streamed
//! in 1 MiB chunks, from and into the local store's files, so a blob of any size is never held
//! in memory whole. Empty blobs never travel: REAPI servers hold them implicitly. Every blob
//! read is checked against its remote digest before anyone sees it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use bazel_remote_apis::google::rpc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

use super::negotiate::{BATCH_ENTRY_OVERHEAD, Capabilities, StreamHasher};
use super::resilience::Progress;
use super::{RemoteClient, RemoteError, blocking, counters};
use crate::disk::{BlobRead, BlobWriter, DiskStore};

/// ByteStream chunks stay well under gRPC's 4 MiB message cap.
const CHUNK: usize = 1024 * 1024;

/// Digests per `FindMissingBlobs` call, so the request stays far below the message cap.
const FIND_MISSING_CHUNK: usize = 8 * 1024;

/// A blob to upload: its remote digest and where its bytes are.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) digest: reapi::Digest,
    pub(crate) body: Body,
}

/// Where an outgoing blob's bytes are.
#[derive(Debug)]
pub(crate) enum Body {
    /// In memory (small blobs, logs, protos).
    Bytes(Vec<u8>),
    /// In the local store under this blake3 digest: read when its turn comes, a batch's worth
    /// at a time, or chunk by chunk from the file when it is streamed.
    Stored(crate::Digest),
}

/// A fetched and verified blob as it reaches a sink.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Its bytes.
    Bytes(Vec<u8>),
    /// Too big for a batch: streamed into the local store, under this blake3 digest.
    Stored(crate::Digest),
}

/// How one streamed download ended.
enum Streamed {
    Stored(crate::Digest),
    Missing,
    Corrupt,
}

/// The bytes of one `ByteStream.Write`.
#[derive(Clone)]
enum Source {
    Bytes(Arc<Vec<u8>>),
    /// A blob of the local store, read chunk by chunk as the stream is sent.
    File(Arc<File>),
}

/// How a set of blob reads ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// Every blob arrived, verified, and went to the sink.
    All,
    /// The remote lacks at least one blob.
    Missing,
    /// At least one blob did not match its digest.
    Corrupt,
}

fn size_of(digest: &reapi::Digest) -> u64 {
    u64::try_from(digest.size_bytes).unwrap_or(0)
}

/// Splits digests into batches under `limit` bytes and the ones too big for any batch.
pub(super) fn plan(
    digests: Vec<reapi::Digest>,
    limit: u64,
) -> (Vec<Vec<reapi::Digest>>, Vec<reapi::Digest>) {
    let (mut batches, mut large, mut current, mut used) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for digest in digests {
        let cost = size_of(&digest) + BATCH_ENTRY_OVERHEAD;
        if cost > limit {
            large.push(digest);
            continue;
        }
        if used + cost > limit {
            batches.push(std::mem::take(&mut current));
            used = 0;
        }
        used += cost;
        current.push(digest);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    (batches, large)
}

/// A per-blob status from a batch answer as a `tonic::Status`, `None` when it is OK.
fn entry_status(status: Option<&rpc::Status>) -> Option<Status> {
    let status = status.filter(|status| status.code != 0)?;
    Some(Status::new(Code::from(status.code), status.message.clone()))
}

/// A random version-4 UUID, for ByteStream upload names.
pub(super) fn uuid() -> String {
    let bits = (fastrand::u128(..) & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

impl RemoteClient {
    /// The prefix of resource names: `instance/`, or nothing for the default instance.
    fn instance_prefix(&self) -> String {
        match self.inner.settings.instance_name.as_str() {
            "" => String::new(),
            name => format!("{name}/"),
        }
    }

    /// Uploads the blobs the remote lacks; returns the bytes sent.
    pub(crate) async fn put_blobs(
        &self,
        caps: &Capabilities,
        blobs: Vec<Outgoing>,
        store: &DiskStore,
    ) -> Result<u64, RemoteError> {
        let mut seen = HashSet::new();
        let blobs: Vec<Outgoing> = blobs
            .into_iter()
            .filter(|blob| blob.digest.size_bytes > 0 && seen.insert(blob.digest.hash.clone()))
            .collect();
        let missing = self.find_missing(caps, blobs.iter().map(|blob| blob.digest.clone())).await?;
        let (wanted, mut bodies): (Vec<reapi::Digest>, HashMap<String, Body>) = blobs
            .into_iter()
            .filter(|blob| missing.contains(&blob.digest.hash))
            .map(|blob| (blob.digest.clone(), (blob.digest.hash, blob.body)))
            .unzip();
        // A stored body is read only when its batch or stream is sent.
        let mut sent = 0;
        let mut bytes_of = |digest: &reapi::Digest| -> Result<Vec<u8>, RemoteError> {
            let bytes = match bodies.remove(&digest.hash) {
                Some(Body::Bytes(bytes)) => bytes,
                Some(Body::Stored(local)) => read_local(store, &local)?,
                None => Vec::new(),
            };
            sent += bytes.len() as u64;
            Ok(bytes)
        };
        let (batches, large) = plan(wanted, caps.max_batch_bytes);
        for batch in batches {
            let requests = batch
                .into_iter()
                .map(|digest| {
                    let data = bytes_of(&digest)?;
                    Ok(reapi::batch_update_blobs_request::Request {
                        digest: Some(digest),
                        data,
                        compressor: 0,
                    })
                })
                .collect::<Result<_, RemoteError>>()?;
            self.batch_update(caps, requests).await?;
        }
        for digest in large {
            let source = match bodies.remove(&digest.hash) {
                Some(Body::Bytes(bytes)) => Source::Bytes(Arc::new(bytes)),
                Some(Body::Stored(local)) => Source::File(Arc::new(store.open_blob(&local)?)),
                None => continue,
            };
            sent += size_of(&digest);
            self.write_stream(caps, digest, source).await?;
        }
        counters::add(&self.inner.counters.bytes_up, sent);
        Ok(sent)
    }

    /// The hashes among `digests` that the remote does not hold.
    async fn find_missing(
        &self,
        caps: &Capabilities,
        digests: impl Iterator<Item = reapi::Digest>,
    ) -> Result<HashSet<String>, RemoteError> {
        let digests: Vec<reapi::Digest> = digests.collect();
        let mut missing = HashSet::new();
        for chunk in digests.chunks(FIND_MISSING_CHUNK) {
            let request = reapi::FindMissingBlobsRequest {
                instance_name: self.inner.settings.instance_name.clone(),
                blob_digests: chunk.to_vec(),
                digest_function: caps.digest_function.proto(),
            };
            // REAPI remote_execution.proto: rpc FindMissingBlobs(FindMissingBlobsRequest).
            let answer = self
                .call("ContentAddressableStorage.FindMissingBlobs", |mut rpc| {
                    let request = request.clone();
                    async move { Ok(rpc.cas.find_missing_blobs(request).await?.into_inner()) }
                })
                .await?;
            missing.extend(answer.missing_blob_digests.into_iter().map(|digest| digest.hash));
        }
        Ok(missing)
    }

    pub(crate) async fn batch_update(
        &self,
        caps: &Capabilities,
        requests: Vec<reapi::batch_update_blobs_request::Request>,
    ) -> Result<(), RemoteError> {
        const RPC: &str = "ContentAddressableStorage.BatchUpdateBlobs";
        let request = reapi::BatchUpdateBlobsRequest {
            instance_name: self.inner.settings.instance_name.clone(),
            requests,
            digest_function: caps.digest_function.proto(),
        };
        // REAPI remote_execution.proto: rpc BatchUpdateBlobs(BatchUpdateBlobsRequest).
        let answer = self
            .call(RPC, |mut rpc| {
                let request = request.clone();
                async move { Ok(rpc.cas.batch_update_blobs(request).await?.into_inner()) }
            })
            .await?;
        match answer.responses.iter().find_map(|entry| entry_status(entry.status.as_ref())) {
            Some(status) => {
                Err(RemoteError::from_status(RPC, &self.inner.settings.instance_name, status))
            }
            None => Ok(()),
        }
    }

    /// Streams one blob up with `ByteStream.Write`.
    async fn write_stream(
        &self,
        caps: &Capabilities,
        digest: reapi::Digest,
        source: Source,
    ) -> Result<(), RemoteError> {
        const RPC: &str = "ByteStream.Write";
        let name = format!(
            "{}uploads/{}/blobs/{}{}/{}",
            self.instance_prefix(),
            uuid(),
            caps.digest_function.resource_segment(),
            digest.hash,
            digest.size_bytes
        );
        let len = size_of(&digest);
        // A local read that fails ends the stream early (the server then refuses the write);
        // the failure itself is what this call reports.
        let failed = Arc::new(Mutex::new(None));
        let progress = Progress::default();
        // google/bytestream/bytestream.proto: rpc Write(stream WriteRequest).
        let answer = self
            .call_streaming(RPC, &progress, |mut rpc| {
                let requests =
                    write_requests(name.clone(), &source, len, &progress, Arc::clone(&failed));
                async move { Ok(rpc.byte_stream.write(requests).await?.into_inner()) }
            })
            .await;
        if let Some(error) = failed.lock().unwrap_or_else(|poison| poison.into_inner()).take() {
            return Err(RemoteError::LocalStore(error));
        }
        let answer = answer?;
        if answer.committed_size != digest.size_bytes {
            return Err(RemoteError::Protocol {
                rpc: RPC,
                reason: format!(
                    "committed {} of {} bytes",
                    answer.committed_size, digest.size_bytes
                ),
            });
        }
        Ok(())
    }

    /// Fetches `digests`, verifies each, and hands it to `sink` (remote digest, blob). Blobs
    /// too big for a batch are streamed into `store` when there is one, else read into memory.
    /// Empty blobs are handed over without a call.
    pub(crate) async fn get_blobs(
        &self,
        caps: &Capabilities,
        digests: Vec<reapi::Digest>,
        store: Option<&DiskStore>,
        sink: &mut impl FnMut(&reapi::Digest, Incoming) -> io::Result<()>,
    ) -> Result<Fetched, RemoteError> {
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        for digest in digests.into_iter().filter(|digest| seen.insert(digest.hash.clone())) {
            if digest.size_bytes == 0 {
                sink(&digest, Incoming::Bytes(Vec::new()))?;
            } else {
                wanted.push(digest);
            }
        }
        let (batches, large) = plan(wanted, caps.max_batch_bytes);
        for batch in batches {
            let outcome = self.batch_read(caps, batch, sink).await?;
            if outcome != Fetched::All {
                return Ok(outcome);
            }
        }
        for digest in large {
            let Some(store) = store else {
                let capacity = usize::try_from(size_of(&digest)).unwrap_or(0).min(64 << 20);
                let fresh = || Vec::with_capacity(capacity);
                let Some(bytes) = self.read_stream(caps, &digest, fresh).await? else {
                    return Ok(Fetched::Missing);
                };
                if !self.accept(caps, &digest, bytes, sink)? {
                    return Ok(Fetched::Corrupt);
                }
                continue;
            };
            match self.read_stream_into(caps, &digest, store).await? {
                Streamed::Stored(local) => sink(&digest, Incoming::Stored(local))?,
                Streamed::Missing => return Ok(Fetched::Missing),
                Streamed::Corrupt => return Ok(Fetched::Corrupt),
            }
        }
        Ok(Fetched::All)
    }

    /// Verifies one fetched blob and passes it on; `false` when it does not match.
    fn accept(
        &self,
        caps: &Capabilities,
        digest: &reapi::Digest,
        bytes: Vec<u8>,
        sink: &mut impl FnMut(&reapi::Digest, Incoming) -> io::Result<()>,
    ) -> Result<bool, RemoteError> {
        counters::add(&self.inner.counters.bytes_down, bytes.len() as u64);
        if bytes.len() as i64 != digest.size_bytes
            || caps.digest_function.hash(&bytes) != digest.hash
        {
            warn_mismatch(digest);
            return Ok(false);
        }
        sink(digest, Incoming::Bytes(bytes))?;
        Ok(true)
    }

    async fn batch_read(
        &self,
        caps: &Capabilities,
        digests: Vec<reapi::Digest>,
        sink: &mut impl FnMut(&reapi::Digest, Incoming) -> io::Result<()>,
    ) -> Result<Fetched, RemoteError> {
        const RPC: &str = "ContentAddressableStorage.BatchReadBlobs";
        let request = reapi::BatchReadBlobsRequest {
            instance_name: self.inner.settings.instance_name.clone(),
            digests: digests.clone(),
            acceptable_compressors: Vec::new(),
            digest_function: caps.digest_function.proto(),
        };
        // REAPI remote_execution.proto: rpc BatchReadBlobs(BatchReadBlobsRequest).
        let answer = self
            .call(RPC, |mut rpc| {
                let request = request.clone();
                async move { Ok(rpc.cas.batch_read_blobs(request).await?.into_inner()) }
            })
            .await?;
        let mut got = HashSet::new();
        for entry in answer.responses {
            let digest = entry.digest.unwrap_or_default();
            if let Some(status) = entry_status(entry.status.as_ref()) {
                if status.code() == Code::NotFound {
                    return Ok(Fetched::Missing);
                }
                return Err(RemoteError::from_status(
                    RPC,
                    &self.inner.settings.instance_name,
                    status,
                ));
            }
            if !self.accept(caps, &digest, entry.data, sink)? {
                return Ok(Fetched::Corrupt);
            }
            got.insert(digest.hash);
        }
        let complete = digests.iter().all(|digest| got.contains(&digest.hash));
        Ok(if complete { Fetched::All } else { Fetched::Missing })
    }

    /// The `ByteStream.Read` resource name of `digest`.
    fn read_resource(&self, caps: &Capabilities, digest: &reapi::Digest) -> String {
        format!(
            "{}blobs/{}{}/{}",
            self.instance_prefix(),
            caps.digest_function.resource_segment(),
            digest.hash,
            digest.size_bytes
        )
    }

    /// Streams one blob down with `ByteStream.Read` into `store`, hashed and written chunk by
    /// chunk as it arrives, and published only if it matches `digest`.
    async fn read_stream_into(
        &self,
        caps: &Capabilities,
        digest: &reapi::Digest,
        store: &DiskStore,
    ) -> Result<Streamed, RemoteError> {
        let fresh = || StreamInto::new(store, caps.digest_function.hasher());
        let Some(into) = self.read_stream(caps, digest, fresh).await? else {
            return Ok(Streamed::Missing);
        };
        counters::add(&self.inner.counters.bytes_down, into.len);
        into.finish(digest)
    }

    /// Streams one blob down with `ByteStream.Read` into what `fresh` makes for each attempt;
    /// `None` when the remote lacks it. The stream stops one byte past the expected size
    /// (verification then fails cheaply), or when the chunks are refused.
    async fn read_stream<C: Chunks + Send>(
        &self,
        caps: &Capabilities,
        digest: &reapi::Digest,
        fresh: impl Fn() -> C,
    ) -> Result<Option<C>, RemoteError> {
        let name = self.read_resource(caps, digest);
        let expected = size_of(digest);
        let progress = Progress::default();
        // google/bytestream/bytestream.proto: rpc Read(ReadRequest) returns (stream ReadResponse).
        let read = self
            .call_streaming("ByteStream.Read", &progress, |mut rpc| {
                let request =
                    ReadRequest { resource_name: name.clone(), read_offset: 0, read_limit: 0 };
                let (progress, mut chunks) = (progress.clone(), fresh());
                async move {
                    let mut stream = rpc.byte_stream.read(request).await?.into_inner();
                    while let Some(message) = stream.message().await? {
                        progress.made();
                        if !chunks.take(&message.data) || chunks.received() > expected {
                            break;
                        }
                    }
                    Ok(chunks)
                }
            })
            .await;
        match read {
            Ok(chunks) => Ok(Some(chunks)),
            Err(error) if error.is_miss() => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// Where the chunks of a `ByteStream.Read` go.
trait Chunks {
    /// Takes one chunk; `false` ends the stream.
    fn take(&mut self, chunk: &[u8]) -> bool;
    /// Bytes taken so far.
    fn received(&self) -> u64;
}

/// Into memory (only for callers without a store: the remote check's probe).
impl Chunks for Vec<u8> {
    fn take(&mut self, chunk: &[u8]) -> bool {
        self.extend_from_slice(chunk);
        true
    }

    fn received(&self) -> u64 {
        self.len() as u64
    }
}

/// The requests of one `ByteStream.Write` of `len` bytes, chunked lazily: from the shared
/// bytes, or read from the file as the stream is sent; each counts as `progress`. A failed read
/// ends the stream and is left in `failed`.
fn write_requests(
    name: String,
    source: &Source,
    len: u64,
    progress: &Progress,
    failed: Arc<Mutex<Option<io::Error>>>,
) -> impl Stream<Item = WriteRequest> + Send + 'static {
    let count = len.div_ceil(CHUNK as u64).max(1);
    let (source, progress) = (source.clone(), progress.clone());
    // Asked for once the transport has room for it: the chunk before has gone.
    let chunk = move |index: u64| -> io::Result<Vec<u8>> {
        progress.made();
        let start = index * CHUNK as u64;
        let end = (start + CHUNK as u64).min(len);
        match &source {
            Source::Bytes(bytes) => Ok(bytes[start as usize..end as usize].to_vec()),
            Source::File(file) => {
                let mut data = vec![0; (end - start) as usize];
                blocking(|| file.read_exact_at(&mut data, start)).map(|()| data)
            }
        }
    };
    let requests = tokio_stream::iter(0..count).map(move |index| match chunk(index) {
        Ok(data) => Some(WriteRequest {
            resource_name: if index == 0 { name.clone() } else { String::new() },
            write_offset: (index * CHUNK as u64) as i64,
            finish_write: index + 1 == count,
            data,
        }),
        Err(error) => {
            *failed.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(error);
            None
        }
    });
    requests.map_while(|request| request)
}

/// A blob being streamed into the store: written and hashed (for the remote digest) as its
/// chunks arrive. A local write failure is kept and ends the stream.
struct StreamInto<'a> {
    writer: io::Result<BlobWriter<'a>>,
    hasher: StreamHasher,
    len: u64,
}

impl<'a> StreamInto<'a> {
    fn new(store: &'a DiskStore, hasher: StreamHasher) -> Self {
        StreamInto { writer: blocking(|| store.blob_writer()), hasher, len: 0 }
    }

    /// Publishes the blob if it is what `digest` names; a blob that is not is dropped, its
    /// temp file with it.
    fn finish(self, digest: &reapi::Digest) -> Result<Streamed, RemoteError> {
        let writer = self.writer?;
        if self.len != size_of(digest) || self.hasher.finish() != digest.hash {
            warn_mismatch(digest);
            return Ok(Streamed::Corrupt);
        }
        Ok(Streamed::Stored(blocking(|| writer.finish())?))
    }
}

/// A local write failure ends the stream (and is kept for `finish`).
impl Chunks for StreamInto<'_> {
    fn take(&mut self, chunk: &[u8]) -> bool {
        self.len += chunk.len() as u64;
        let Ok(writer) = &mut self.writer else { return false };
        let hasher = &mut self.hasher;
        let written = blocking(|| {
            hasher.update(chunk);
            writer.write(chunk)
        });
        if let Err(error) = written {
            self.writer = Err(error);
            return false;
        }
        true
    }

    fn received(&self) -> u64 {
        self.len
    }
}

fn warn_mismatch(digest: &reapi::Digest) {
    tracing::warn!(blob = %digest.hash, "remote blob does not match its digest; treating the result as a miss");
}

/// A blob from the local store, verified.
pub(crate) fn read_local(
    store: &DiskStore,
    digest: &crate::Digest,
) -> Result<Vec<u8>, RemoteError> {
    match store.read_blob(digest) {
        BlobRead::Found(bytes) => Ok(bytes),
        BlobRead::Missing | BlobRead::Corrupt => Err(local_blob_missing(digest)),
    }
}

/// The error for a blob a result names that the local store no longer has intact.
pub(crate) fn local_blob_missing(digest: &crate::Digest) -> RemoteError {
    RemoteError::LocalStore(io::Error::new(
        io::ErrorKind::NotFound,
        format!("blob {digest} is missing or damaged in the local store"),
    ))
}
