//! The environment side of the config: the `CUENV_*` variables it reads and how they override
//! the file.
//!
//! The environment is passed around as an [`EnvMap`] snapshot instead of being read with
//! `std::env::var` on the spot, so tests can describe any environment without mutating the real
//! one (which is process-global and racy under a parallel test runner).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CacheMode, GlobalCacheConfig, RemoteCacheConfig, parse_size, validate_endpoint};
use crate::fields::Problem;

/// A snapshot of environment variables, name to value.
pub type EnvMap = BTreeMap<String, String>;

/// Path of the cache config file, overriding the default location.
pub const ENV_CACHE_CONFIG: &str = "CUENV_CACHE_CONFIG";
/// Overrides `cache_dir`.
pub const ENV_CACHE_DIR: &str = "CUENV_CACHE_DIR";
/// Overrides `default_mode`.
pub const ENV_CACHE_MODE: &str = "CUENV_CACHE_MODE";
/// Overrides `max_size` (bytes or a size like `10GiB`).
pub const ENV_CACHE_MAX_SIZE: &str = "CUENV_CACHE_MAX_SIZE";
/// Overrides `remote_cache.endpoint`, creating a remote cache section if there is none.
pub const ENV_REMOTE_CACHE_URL: &str = "CUENV_REMOTE_CACHE_URL";
/// Overrides `remote_cache.auth_token`.
pub const ENV_REMOTE_CACHE_TOKEN: &str = "CUENV_REMOTE_CACHE_TOKEN";
/// Feature flag for the enhanced cache ([`super::CacheFeatureFlags::enhanced_cache_enabled`]).
pub const ENV_ENHANCED_CACHE: &str = "CUENV_ENHANCED_CACHE";
/// Feature flag for the remote cache ([`super::CacheFeatureFlags::remote_cache_enabled`]).
pub const ENV_REMOTE_CACHE: &str = "CUENV_REMOTE_CACHE";
/// Feature flag for on-disk storage ([`super::CacheFeatureFlags::persistent_storage_enabled`]).
pub const ENV_PERSISTENT_CACHE: &str = "CUENV_PERSISTENT_CACHE";

const ENV_VAR_NAMES: [&str; 9] = [
    ENV_CACHE_CONFIG,
    ENV_CACHE_DIR,
    ENV_CACHE_MODE,
    ENV_CACHE_MAX_SIZE,
    ENV_REMOTE_CACHE_URL,
    ENV_REMOTE_CACHE_TOKEN,
    ENV_ENHANCED_CACHE,
    ENV_REMOTE_CACHE,
    ENV_PERSISTENT_CACHE,
];

/// Every `CUENV_*` variable the cache config reads. These are cuenv's own settings, so the key
/// generator leaves them out of cache keys even when `env_include` matches `CUENV_*`.
pub fn env_var_names() -> &'static [&'static str] {
    &ENV_VAR_NAMES
}

/// A snapshot of the current process environment. Entries whose name or value is not valid
/// UTF-8 are skipped (see [`unspellable_env`]).
pub fn process_env() -> EnvMap {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The names (undecodable bytes replaced) of the variables [`process_env`] skips. A task still
/// runs with them, so one that a key's env filter would keep cannot be left out of the key in
/// silence: [`crate::env_left_out_of_a_key`] finds it.
pub fn unspellable_env() -> Vec<String> {
    std::env::vars_os()
        .filter(|(name, value)| name.to_str().is_none() || value.to_str().is_none())
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect()
}

/// The value of `name` if it is set to something other than the empty string.
pub(super) fn non_empty<'e>(env: &'e EnvMap, name: &str) -> Option<&'e str> {
    env.get(name).map(String::as_str).filter(|value| !value.is_empty())
}

/// An absolute directory from an XDG base-directory variable; the XDG spec says relative values
/// are invalid and must be ignored.
pub(super) fn xdg_dir(env: &EnvMap, name: &str) -> Option<PathBuf> {
    non_empty(env, name).map(PathBuf::from).filter(|path| path.is_absolute())
}

/// Expands a leading `~` or `~/` with `$HOME`. `~user` forms are not supported.
pub(super) fn expand_home(text: &str, env: &EnvMap) -> Result<PathBuf, String> {
    let rest = match text.strip_prefix('~') {
        None => return Ok(PathBuf::from(text)),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
        Some(_) => {
            return Err(format!("cannot expand {text:?}: only `~/` is supported, not `~user`"));
        }
    };
    let home = non_empty(env, "HOME")
        .ok_or_else(|| format!("cannot expand {text:?} because HOME is not set"))?;
    Ok(if rest.is_empty() { PathBuf::from(home) } else { Path::new(home).join(rest) })
}

fn problem(variable: &str, message: String) -> Problem {
    Problem { field: variable.to_owned(), message }
}

impl GlobalCacheConfig {
    /// Applies `CUENV_CACHE_DIR`, `CUENV_CACHE_MODE`, `CUENV_CACHE_MAX_SIZE`,
    /// `CUENV_REMOTE_CACHE_URL` and `CUENV_REMOTE_CACHE_TOKEN` on top of the current values.
    ///
    /// Variables set to the empty string count as unset. A bad value is left unapplied and
    /// reported as a problem whose `field` is the variable name; every problem is returned.
    pub fn apply_env_overrides(&mut self, env: &EnvMap) -> Vec<Problem> {
        let results = [
            self.override_cache_dir(env),
            self.override_mode(env),
            self.override_max_size(env),
            self.override_remote_url(env),
            self.override_remote_token(env),
        ];
        results.into_iter().filter_map(Result::err).collect()
    }

    fn override_cache_dir(&mut self, env: &EnvMap) -> Result<(), Problem> {
        if let Some(text) = non_empty(env, ENV_CACHE_DIR) {
            self.cache_dir =
                expand_home(text, env).map_err(|message| problem(ENV_CACHE_DIR, message))?;
        }
        Ok(())
    }

    fn override_mode(&mut self, env: &EnvMap) -> Result<(), Problem> {
        if let Some(text) = non_empty(env, ENV_CACHE_MODE) {
            self.default_mode = text
                .parse::<CacheMode>()
                .map_err(|error| problem(ENV_CACHE_MODE, error.to_string()))?;
        }
        Ok(())
    }

    fn override_max_size(&mut self, env: &EnvMap) -> Result<(), Problem> {
        if let Some(text) = non_empty(env, ENV_CACHE_MAX_SIZE) {
            self.max_size =
                parse_size(text).map_err(|message| problem(ENV_CACHE_MAX_SIZE, message))?;
        }
        Ok(())
    }

    fn override_remote_url(&mut self, env: &EnvMap) -> Result<(), Problem> {
        let Some(text) = non_empty(env, ENV_REMOTE_CACHE_URL) else { return Ok(()) };
        validate_endpoint(text).map_err(|message| problem(ENV_REMOTE_CACHE_URL, message))?;
        match &mut self.remote_cache {
            Some(remote) => remote.endpoint = text.to_owned(),
            None => self.remote_cache = Some(RemoteCacheConfig::new(text)),
        }
        Ok(())
    }

    fn override_remote_token(&mut self, env: &EnvMap) -> Result<(), Problem> {
        let Some(token) = non_empty(env, ENV_REMOTE_CACHE_TOKEN) else { return Ok(()) };
        let Some(remote) = &mut self.remote_cache else {
            let message = format!(
                "a token is set but no remote cache is configured; set remote_cache.endpoint in the \
                 config file or {ENV_REMOTE_CACHE_URL}"
            );
            return Err(problem(ENV_REMOTE_CACHE_TOKEN, message));
        };
        remote.auth_token = Some(token.to_owned());
        Ok(())
    }
}
