//! Capabilities negotiation and the remote side's digests.
//!
//! `GetCapabilities` decides three things once per client: the digest function blobs are
//! named by remote-side (BLAKE3 when offered, since it is what the local store already uses,
//! else SHA-256), how big a batch call may be, and whether the action cache takes updates.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use reapi::digest_function::Value as FunctionValue;
use sha2::{Digest as _, Sha256};

use super::resilience::Retry;
use super::{RemoteClient, RemoteError};
use crate::Digest;

/// gRPC's usual cap on one message, which servers advertising no batch limit (`0`) apply.
pub(crate) const GRPC_MESSAGE_CAP: u64 = 4 * 1024 * 1024;

/// Room left in a batch for the request's own framing.
const BATCH_HEADROOM: u64 = 64 * 1024;

/// Bytes a blob's entry in a batch costs besides its data (digest, tags, lengths).
pub(crate) const BATCH_ENTRY_OVERHEAD: u64 = 160;

/// A digest function cuenv can speak with a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestFunction {
    /// SHA-256, the REAPI default.
    Sha256,
    /// BLAKE3, cuenv's own; remote digests then equal the local ones.
    Blake3,
}

impl DigestFunction {
    /// The REAPI name (`SHA256`, `BLAKE3`).
    pub fn name(self) -> &'static str {
        self.value().as_str_name()
    }

    fn value(self) -> FunctionValue {
        match self {
            DigestFunction::Sha256 => FunctionValue::Sha256,
            DigestFunction::Blake3 => FunctionValue::Blake3,
        }
    }

    /// The enum value requests carry in their `digest_function` field.
    pub(crate) fn proto(self) -> i32 {
        self.value() as i32
    }

    /// The lowercase hex hash of `bytes`.
    pub(crate) fn hash(self, bytes: &[u8]) -> String {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        hasher.finish()
    }

    /// A hasher for content that arrives in pieces.
    pub(crate) fn hasher(self) -> StreamHasher {
        match self {
            DigestFunction::Sha256 => StreamHasher::Sha256(Sha256::new()),
            DigestFunction::Blake3 => StreamHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// The REAPI digest of `bytes`.
    pub(crate) fn digest(self, bytes: &[u8]) -> reapi::Digest {
        reapi::Digest { hash: self.hash(bytes), size_bytes: bytes.len() as i64 }
    }

    /// The segment ByteStream resource names carry for this function: none for SHA-256 (the
    /// original form every server accepts), the lowercase name for the others.
    pub(crate) fn resource_segment(self) -> &'static str {
        match self {
            DigestFunction::Sha256 => "",
            DigestFunction::Blake3 => "blake3/",
        }
    }
}

/// [`DigestFunction::hash`] over content fed piece by piece.
pub(crate) enum StreamHasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl StreamHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamHasher::Sha256(hasher) => hasher.update(bytes),
            StreamHasher::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    /// The lowercase hex hash of everything fed.
    pub(crate) fn finish(self) -> String {
        match self {
            StreamHasher::Sha256(hasher) => Digest(hasher.finalize().into()).to_hex(),
            StreamHasher::Blake3(hasher) => Digest::from(hasher.finalize()).to_hex(),
        }
    }
}

/// What a remote cache instance offers, as negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The function blobs and actions are named by.
    pub digest_function: DigestFunction,
    /// Every digest function the server advertised, by REAPI name.
    pub offered_digest_functions: Vec<String>,
    /// The batch limit the server advertised (`0`: none given).
    pub server_max_batch_bytes: u64,
    /// The size a batch call is kept under: the server's limit (or gRPC's 4 MiB) less
    /// headroom, capped by the tuning override.
    pub max_batch_bytes: u64,
    /// Whether the server accepts `UpdateActionResult`.
    pub update_enabled: bool,
    /// The highest API version the server speaks, e.g. `2.2`.
    pub api_version: Option<String>,
}

/// Picks what to use from a `GetCapabilities` answer.
pub(crate) fn negotiate(
    answer: &reapi::ServerCapabilities,
    batch_override: Option<u64>,
) -> Result<Capabilities, RemoteError> {
    let cache = answer.cache_capabilities.clone().unwrap_or_default();
    let offered: Vec<FunctionValue> = cache
        .digest_functions
        .iter()
        .filter_map(|value| FunctionValue::try_from(*value).ok())
        .collect();
    let names: Vec<String> = offered.iter().map(|value| value.as_str_name().to_owned()).collect();
    let digest_function = if offered.contains(&FunctionValue::Blake3) {
        DigestFunction::Blake3
    } else if offered.is_empty() || offered.contains(&FunctionValue::Sha256) {
        DigestFunction::Sha256
    } else {
        return Err(RemoteError::UnsupportedDigestFunction { offered: names.join(", ") });
    };
    let server_max = u64::try_from(cache.max_batch_total_size_bytes).unwrap_or(0);
    let limit = if server_max == 0 { GRPC_MESSAGE_CAP } else { server_max.min(GRPC_MESSAGE_CAP) };
    let mut max_batch_bytes = limit.saturating_sub(BATCH_HEADROOM).max(limit / 2);
    if let Some(cap) = batch_override {
        max_batch_bytes = max_batch_bytes.min(cap);
    }
    let update_enabled =
        cache.action_cache_update_capabilities.is_some_and(|update| update.update_enabled);
    let api_version = answer
        .high_api_version
        .as_ref()
        .map(|version| format!("{}.{}", version.major, version.minor));
    Ok(Capabilities {
        digest_function,
        offered_digest_functions: names,
        server_max_batch_bytes: server_max,
        max_batch_bytes,
        update_enabled,
        api_version,
    })
}

/// Checks that a digest the server sent is well formed: 64 lowercase hex
/// digits and a size that fits.
pub(crate) fn check_digest(digest: &reapi::Digest) -> Result<u64, String> {
    let hex_ok = digest.hash.len() == 64
        && digest.hash.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !hex_ok {
        return Err(format!("digest hash {:?} is not 64 lowercase hex digits", digest.hash));
    }
    u64::try_from(digest.size_bytes).map_err(|_| format!("negative size in digest {}", digest.hash))
}

impl RemoteClient {
    /// The negotiated capabilities, asking the server on first use. A failed negotiation is
    /// not cached: the next call asks again.
    pub async fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        self.caps().await.cloned()
    }

    pub(crate) async fn caps(&self) -> Result<&Capabilities, RemoteError> {
        self.inner.capabilities.get_or_try_init(|| self.fetch_capabilities()).await
    }

    async fn fetch_capabilities(&self) -> Result<Capabilities, RemoteError> {
        let request = reapi::GetCapabilitiesRequest {
            instance_name: self.inner.settings.instance_name.clone(),
        };
        // REAPI remote_execution.proto: service Capabilities, rpc GetCapabilities.
        let answer = self
            .call_with("Capabilities.GetCapabilities", Retry::UnlessStalled, |mut rpc| {
                let request = request.clone();
                async move { Ok(rpc.capabilities.get_capabilities(request).await?.into_inner()) }
            })
            .await;
        // Every call needs capabilities first: without them the remote is unusable, so a
        // server that failed to give them is not asked again until the breaker's cooldown.
        let answer = answer.inspect_err(|error| {
            if error.is_server_failure() {
                self.inner.breaker.trip(error);
            }
        })?;
        let caps = negotiate(&answer, self.inner.settings.tuning.max_batch_bytes)?;
        tracing::debug!(?caps, "negotiated remote cache capabilities");
        Ok(caps)
    }
}
