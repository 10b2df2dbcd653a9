//! Global cache configuration: what the user sets in `cache.json` and `CUENV_*` variables, and
//! the single error type that reports everything wrong with it at once.
//!
//! [`GlobalCacheConfig::load`] is the entry point: defaults, then the JSON file, then
//! environment overrides, then [`GlobalCacheConfig::validate`]. The environment is always passed
//! in as an [`EnvMap`] snapshot (see [`process_env`]).

mod env;
mod flags;
mod global;
mod load;
mod mode;
mod size;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use env::{
    ENV_CACHE_CONFIG, ENV_CACHE_DIR, ENV_CACHE_MAX_SIZE, ENV_CACHE_MODE, ENV_ENHANCED_CACHE,
    ENV_PERSISTENT_CACHE, ENV_REMOTE_CACHE, ENV_REMOTE_CACHE_TOKEN, ENV_REMOTE_CACHE_URL, EnvMap,
    env_var_names, process_env, unspellable_env,
};
pub use flags::CacheFeatureFlags;
pub use global::{
    DEFAULT_ENV_EXCLUDE, DEFAULT_ENV_INCLUDE, DEFAULT_INLINE_THRESHOLD, DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_SIZE, DEFAULT_MEMORY_CAPACITY, DEFAULT_STATS_RETENTION_DAYS,
    DEFAULT_TIMEOUT_SECONDS, FALLBACK_CACHE_DIR, GlobalCacheConfig, MAX_INLINE_THRESHOLD,
    RemoteCacheConfig, StorageConfig, TlsConfig, default_cache_dir,
};
pub use load::default_config_path;
pub use mode::{CacheMode, EvictionPolicy, UnknownValueError};
pub use size::{GIB, KIB, MIB, TIB, format_size, parse_size};
pub use validate::RemoteEndpoint;
use validate::validate_endpoint;

use crate::fields::Problem;

/// Why the cache configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file exists but could not be read.
    #[error("cannot read cache config {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A config file named explicitly does not exist.
    #[error("cache config {} (named by {named_by}) does not exist", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
        /// What named it: `--cache-config` or `CUENV_CACHE_CONFIG`.
        named_by: &'static str,
    },
    /// The file, the environment or the combined values have problems.
    #[error("{}", InvalidDisplay { source_name, problems })]
    Invalid {
        /// The file's path, or `environment` when no file was read.
        source_name: String,
        /// Every problem, in the order found: file fields, environment variables, validation.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`]; empty for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Io { .. } | ConfigError::NotFound { .. } => &[],
        }
    }
}

/// Renders a header line naming the source, then one problem per indented line.
struct InvalidDisplay<'a> {
    source_name: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache configuration in {}:", self.source_name)?;
        for problem in self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}
