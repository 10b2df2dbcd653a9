//! The errors the actors return to their callers.

use crate::disk::{CaptureError, RestoreError};
use crate::key_gen::KeyError;

/// An actor stopped (it panicked, or the runtime was shut down) before it answered. Callers get
/// this instead of a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {actor} actor is gone (panicked or shut down)")]
pub struct ActorGone {
    /// Which actor.
    pub actor: &'static str,
}

/// Why a request to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An actor is gone.
    #[error(transparent)]
    ActorGone(#[from] ActorGone),
    /// No tokio runtime to start on.
    #[error("the cache runtime must be started from inside a tokio runtime")]
    NoTokioRuntime,
    /// Computing a key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Collecting outputs failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Restoring outputs failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The cache directory could not be used.
    #[error("cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The remote cache settings are unusable (bad endpoint, unreadable CA file).
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Other I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
