//! The library's error type. Cloneable, because one execution's error is shared with every
//! caller that waited on it.

use std::sync::Arc;

use crate::config::ConfigError;
use crate::task::TaskFileError;

/// Why a cache operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The global configuration is invalid.
    #[error(transparent)]
    Config(Arc<ConfigError>),
    /// The task file is invalid.
    #[error(transparent)]
    TaskFile(Arc<TaskFileError>),
    /// The cache runtime failed (an actor is gone, a key could not be computed, I/O).
    #[error(transparent)]
    Runtime(Arc<cuenv_actors::Error>),
    /// The task's own execution failed (not a non-zero exit: the execution could not happen).
    #[error("task \"{task}\": {source}")]
    Execute {
        /// The task.
        task: String,
        /// What went wrong.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The execution panicked or was abandoned; a later call may retry.
    #[error("task \"{task}\": the execution panicked or was abandoned")]
    Abandoned {
        /// The task.
        task: String,
    },
    /// The run cannot start as planned (tasks whose outputs overlap, an unknown task).
    #[error("{0}")]
    Plan(String),
    /// The manager is shutting down and accepts no new work.
    #[error("the cache manager is shutting down")]
    ShuttingDown,
}

impl From<cuenv_actors::Error> for Error {
    fn from(error: cuenv_actors::Error) -> Self {
        Error::Runtime(Arc::new(error))
    }
}

impl From<cuenv_actors::ActorGone> for Error {
    fn from(error: cuenv_actors::ActorGone) -> Self {
        Error::Runtime(Arc::new(error.into()))
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::Config(Arc::new(error))
    }
}

impl From<TaskFileError> for Error {
    fn from(error: TaskFileError) -> Self {
        Error::TaskFile(Arc::new(error))
    }
}
