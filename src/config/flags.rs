//! Kill switches for the cache's larger subsystems, read from the environment.
//!
//! They let a user (or CI) turn off the enhanced cache, the remote cache or on-disk storage
//! without editing the config file, e.g. to rule the cache out while debugging a build.

use super::env::{ENV_ENHANCED_CACHE, ENV_PERSISTENT_CACHE, ENV_REMOTE_CACHE};
use super::{ConfigError, EnvMap};
use crate::fields::Problem;

/// Which cache subsystems are switched on. Each defaults to true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheFeatureFlags {
    /// The enhanced (action-key) cache; `CUENV_ENHANCED_CACHE`.
    pub enhanced_cache_enabled: bool,
    /// The remote cache; `CUENV_REMOTE_CACHE`.
    pub remote_cache_enabled: bool,
    /// The on-disk storage tier; `CUENV_PERSISTENT_CACHE`.
    pub persistent_storage_enabled: bool,
}

impl Default for CacheFeatureFlags {
    fn default() -> Self {
        CacheFeatureFlags {
            enhanced_cache_enabled: true,
            remote_cache_enabled: true,
            persistent_storage_enabled: true,
        }
    }
}

impl CacheFeatureFlags {
    /// Reads the flags from `env`. Each accepts `1`, `true`, `0` or `false` (case-insensitive,
    /// surrounding whitespace ignored); unset or empty means true. Every bad value is reported
    /// in one [`ConfigError::Invalid`] naming the variable and the value.
    pub fn from_env(env: &EnvMap) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut read = |name: &str| {
            flag(env, name).unwrap_or_else(|problem| {
                problems.push(problem);
                true
            })
        };
        let flags = CacheFeatureFlags {
            enhanced_cache_enabled: read(ENV_ENHANCED_CACHE),
            remote_cache_enabled: read(ENV_REMOTE_CACHE),
            persistent_storage_enabled: read(ENV_PERSISTENT_CACHE),
        };
        if problems.is_empty() {
            Ok(flags)
        } else {
            Err(ConfigError::Invalid { source_name: "environment".to_owned(), problems })
        }
    }
}

fn flag(env: &EnvMap, name: &str) -> Result<bool, Problem> {
    let Some(raw) = env.get(name) else { return Ok(true) };
    let value = raw.trim();
    if value.is_empty() || value == "1" || value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value == "0" || value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        let message = format!("expected 1, true, 0 or false, found {raw:?}");
        Err(Problem { field: name.to_owned(), message })
    }
}
