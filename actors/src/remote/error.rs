//! What can go wrong talking to a remote cache, in words a user can act on.
//!
//! gRPC status codes become cache meaning here, at the edge: `NOT_FOUND` and `OUT_OF_RANGE`
//! are misses (callers see `Ok(None)`, never these errors), refused credentials and unknown
//! instance names get their own variants so `cuenv cache test` can say what to fix, and the
//! rest keep the `tonic::Status` as their source.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// An error from the remote cache client.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The endpoint is not a `grpc://`, `grpcs://`, `http://` or `https://` URL.
    #[error("invalid remote cache endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The custom CA certificate could not be read.
    #[error("cannot read the remote cache CA certificate {}: {source}", path.display())]
    CaCert {
        /// The configured path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The auth token cannot be sent as a gRPC header (control characters, non-ASCII).
    #[error("the remote cache auth token has characters a gRPC header cannot carry")]
    InvalidToken,
    /// The server refused the credentials (`UNAUTHENTICATED`).
    #[error(
        "remote cache refused the credentials (UNAUTHENTICATED): {message}; check the auth token"
    )]
    Unauthenticated {
        /// The server's message.
        message: String,
        /// The status as received.
        #[source]
        status: Box<Status>,
    },
    /// The credentials do not allow the call (`PERMISSION_DENIED`).
    #[error(
        "remote cache denied access (PERMISSION_DENIED): {message}; check the token's permissions"
    )]
    PermissionDenied {
        /// The server's message.
        message: String,
        /// The status as received.
        #[source]
        status: Box<Status>,
    },
    /// The server does not serve the configured instance name.
    #[error(
        "remote rejected instance name {instance:?}: {message}; check remote_cache.instance_name"
    )]
    UnknownInstance {
        /// The configured instance name.
        instance: String,
        /// The server's message.
        message: String,
        /// The status as received.
        #[source]
        status: Box<Status>,
    },
    /// Any other failed RPC, after retries.
    #[error("remote cache call {rpc} failed ({code:?}): {message}")]
    Rpc {
        /// The REAPI method, e.g. `ActionCache.GetActionResult`.
        rpc: &'static str,
        /// The status code.
        code: Code,
        /// The server's (or transport's) message.
        message: String,
        /// The status as received.
        #[source]
        status: Box<Status>,
    },
    /// The circuit breaker is open after repeated failures; no call was made.
    #[error("remote cache calls are suspended after repeated failures; next try in {retry_in:?}")]
    CircuitOpen {
        /// Time left until a probe call is allowed.
        retry_in: Duration,
    },
    /// The server offers no digest function cuenv speaks.
    #[error("remote cache offers no digest function cuenv supports (SHA-256, BLAKE3): {offered}")]
    UnsupportedDigestFunction {
        /// The functions it offers, by name.
        offered: String,
    },
    /// The server answered with something REAPI does not allow.
    #[error("remote cache sent a malformed answer to {rpc}: {reason}")]
    Protocol {
        /// The REAPI method.
        rpc: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A blob the probe wrote read back different or not at all.
    #[error("remote cache check failed: {0}")]
    CheckFailed(String),
    /// The local store could not be read or written.
    #[error("local cache store: {0}")]
    LocalStore(#[from] io::Error),
    /// The caller's digest is not the digest of the manifest it came with.
    #[error("action digest {given} does not match its manifest ({computed})")]
    KeyMismatch {
        /// The digest given.
        given: String,
        /// The manifest's digest.
        computed: String,
    },
}

/// What a status code means to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// The thing asked for is not there.
    Miss,
    /// Worth another attempt after a pause.
    Transient,
    /// An answer from a working server (bad request, refused credentials, …).
    Rejected,
    /// The server or the path to it is failing.
    Broken,
}

/// Classifies a status code.
pub(crate) fn meaning(code: Code) -> Meaning {
    match code {
        Code::NotFound | Code::OutOfRange => Meaning::Miss,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => Meaning::Transient,
        Code::Unknown | Code::Internal | Code::DataLoss | Code::Cancelled | Code::Aborted => {
            Meaning::Broken
        }
        _ => Meaning::Rejected,
    }
}

impl RemoteError {
    /// Turns a final status into an error, recognising refused credentials and an unknown
    /// instance name. BuildGrid answers `INVALID_ARGUMENT` "Invalid instance name: [foo]".
    pub(crate) fn from_status(rpc: &'static str, instance: &str, status: Status) -> Self {
        let message = status.message().to_owned();
        let status = Box::new(status);
        match status.code() {
            Code::Unauthenticated => RemoteError::Unauthenticated { message, status },
            Code::PermissionDenied => RemoteError::PermissionDenied { message, status },
            Code::InvalidArgument if names_instance(rpc, &message) => {
                RemoteError::UnknownInstance { instance: instance.to_owned(), message, status }
            }
            code => RemoteError::Rpc { rpc, code, message, status },
        }
    }

    /// Whether the server (or the path to it) failed: no answer, or a broken one. Refused
    /// credentials, bad requests and misses are answers.
    pub(crate) fn is_server_failure(&self) -> bool {
        matches!(self, RemoteError::Rpc { code, .. }
            if matches!(meaning(*code), Meaning::Transient | Meaning::Broken))
    }

    /// Whether this error is a plain miss (`NOT_FOUND`, `OUT_OF_RANGE`).
    pub(crate) fn is_miss(&self) -> bool {
        matches!(self, RemoteError::Rpc { code, .. } if meaning(*code) == Meaning::Miss)
    }
}

/// `INVALID_ARGUMENT` is about the instance when the call has no other argument
/// (`GetCapabilities`) or the message says so.
fn names_instance(rpc: &str, message: &str) -> bool {
    rpc == "Capabilities.GetCapabilities" || message.to_ascii_lowercase().contains("instance")
}
