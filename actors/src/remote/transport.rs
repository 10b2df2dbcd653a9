//! The gRPC channel and the generated REAPI clients on it, built once per client.
//!
//! One lazily connected HTTP/2 channel carries every call; tonic reconnects it after a
//! failure. TLS (`grpcs://`) trusts a custom CA when one is configured, else the system's
//! roots; the bearer token rides on every request through an interceptor.

use std::fs;

use bazel_remote_apis::build::bazel::remote::execution::v2::action_cache_client::ActionCacheClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::content_addressable_storage_client::ContentAddressableStorageClient;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use super::{RemoteError, RemoteSettings};

/// The channel with the auth interceptor in front.
pub(crate) type Authed = InterceptedService<Channel, Auth>;

/// Responses (a `BatchReadBlobs` answer, a `Tree`) may exceed tonic's 4 MiB decoding default
/// when a server allows big batches; this bounds what one message may allocate.
const MAX_DECODED_MESSAGE: usize = 64 * 1024 * 1024;

/// The generated clients. Each is a cheap clone of the same channel.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) capabilities: CapabilitiesClient<Authed>,
    pub(crate) action_cache: ActionCacheClient<Authed>,
    pub(crate) cas: ContentAddressableStorageClient<Authed>,
    pub(crate) byte_stream: ByteStreamClient<Authed>,
}

impl Clients {
    /// Builds the channel (without connecting) and the clients on it.
    pub(crate) fn new(settings: &RemoteSettings) -> Result<Self, RemoteError> {
        let channel = endpoint(settings)?.connect_lazy();
        let auth = Auth::new(settings)?;
        let authed = InterceptedService::new(channel, auth);
        Ok(Clients {
            capabilities: CapabilitiesClient::new(authed.clone())
                .max_decoding_message_size(MAX_DECODED_MESSAGE),
            action_cache: ActionCacheClient::new(authed.clone())
                .max_decoding_message_size(MAX_DECODED_MESSAGE),
            cas: ContentAddressableStorageClient::new(authed.clone())
                .max_decoding_message_size(MAX_DECODED_MESSAGE)
                .max_encoding_message_size(MAX_DECODED_MESSAGE),
            byte_stream: ByteStreamClient::new(authed)
                .max_decoding_message_size(MAX_DECODED_MESSAGE),
        })
    }
}

/// The endpoint URL tonic understands (`http`/`https`), from the configured one.
pub(crate) fn channel_url(endpoint: &str) -> Result<(String, bool), RemoteError> {
    let invalid = |reason: &str| RemoteError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| invalid("expected grpc://host:port or grpcs://host:port"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "grpc" | "http" => false,
        "grpcs" | "https" => true,
        _ => return Err(invalid("the scheme must be grpc, grpcs, http or https")),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("no host"));
    }
    let url = format!("{}://{rest}", if tls { "https" } else { "http" });
    Ok((url, tls))
}

fn endpoint(settings: &RemoteSettings) -> Result<Endpoint, RemoteError> {
    let (url, tls) = channel_url(&settings.endpoint)?;
    let invalid = |reason: String| RemoteError::InvalidEndpoint {
        endpoint: settings.endpoint.clone(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|error| invalid(error.to_string()))?
        // No channel-wide request timeout: every attempt runs under the client's own deadline
        // (`resilience.rs`), which reports a missed one as DEADLINE_EXCEEDED.
        .connect_timeout(settings.connect_timeout())
        .tcp_nodelay(true);
    if !tls {
        if settings.ca_cert.is_some() || settings.domain_name.is_some() {
            return Err(invalid(
                "a CA certificate or domain name needs a grpcs:// endpoint".into(),
            ));
        }
        return Ok(endpoint);
    }
    endpoint.tls_config(tls_config(settings)?).map_err(|error| invalid(format!("TLS: {error}")))
}

fn tls_config(settings: &RemoteSettings) -> Result<ClientTlsConfig, RemoteError> {
    let mut config = ClientTlsConfig::new();
    config = match &settings.ca_cert {
        Some(path) => {
            let pem = fs::read(path)
                .map_err(|source| RemoteError::CaCert { path: path.clone(), source })?;
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    };
    if let Some(domain) = &settings.domain_name {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}

/// Adds `authorization: Bearer <token>` to every request when a token is configured.
#[derive(Clone)]
pub(crate) struct Auth {
    header: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("header", &self.header.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Auth {
    fn new(settings: &RemoteSettings) -> Result<Self, RemoteError> {
        let Some(token) = &settings.auth_token else { return Ok(Auth { header: None }) };
        let header = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| RemoteError::InvalidToken)?;
        Ok(Auth { header: Some(header) })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}
