//! Finding and reading the global cache config file.
//!
//! The file is read field by field with [`Fields`] rather than with serde, so that one run
//! reports every problem (with its field path, the bad value and, for unknown fields, the
//! nearest valid name) together with the environment and validation problems.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use super::env::{ENV_CACHE_CONFIG, expand_home, non_empty, xdg_dir};
use super::{
    ConfigError, EnvMap, GlobalCacheConfig, RemoteCacheConfig, StorageConfig, TlsConfig, parse_size,
};
use crate::fields::{Fields, Problem, Problems, describe};

/// `source_name` used when no file was read.
const ENVIRONMENT: &str = "environment";

/// The default config file: `$XDG_CONFIG_HOME/cuenv/cache.json`, else
/// `$HOME/.config/cuenv/cache.json`; `None` when neither variable is set.
pub fn default_config_path(env: &EnvMap) -> Option<PathBuf> {
    if let Some(xdg) = xdg_dir(env, "XDG_CONFIG_HOME") {
        return Some(xdg.join("cuenv").join("cache.json"));
    }
    non_empty(env, "HOME")
        .map(|home| Path::new(home).join(".config").join("cuenv").join("cache.json"))
}

/// Where the config file comes from, which decides whether its absence is an error.
struct Location {
    path: PathBuf,
    /// What named the file (`--cache-config`, `CUENV_CACHE_CONFIG`), or `None` for the default.
    named_by: Option<&'static str>,
}

fn locate(explicit_path: Option<&Path>, env: &EnvMap) -> Option<Location> {
    if let Some(path) = explicit_path {
        return Some(Location { path: path.to_owned(), named_by: Some("--cache-config") });
    }
    if let Some(path) = non_empty(env, ENV_CACHE_CONFIG) {
        return Some(Location { path: PathBuf::from(path), named_by: Some(ENV_CACHE_CONFIG) });
    }
    default_config_path(env).map(|path| Location { path, named_by: None })
}

/// The file's text, or `None` if it is missing from the default location.
fn read(location: &Location) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(&location.path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => match location.named_by {
            None => Ok(None),
            Some(named_by) => Err(ConfigError::NotFound { path: location.path.clone(), named_by }),
        },
        Err(source) => Err(ConfigError::Io { path: location.path.clone(), source }),
    }
}

impl GlobalCacheConfig {
    /// Loads the effective config: defaults, then the file, then environment overrides, then
    /// [`GlobalCacheConfig::validate`].
    ///
    /// The file is `explicit_path` (the CLI's `--cache-config`), else `$CUENV_CACHE_CONFIG`,
    /// else [`default_config_path`]. A missing file at the default location means defaults; a
    /// missing file that was named explicitly is [`ConfigError::NotFound`]. Problems from the
    /// file, the environment and validation are all returned in one [`ConfigError::Invalid`].
    pub fn load(explicit_path: Option<&Path>, env: &EnvMap) -> Result<Self, ConfigError> {
        let text = match locate(explicit_path, env) {
            Some(location) => read(&location)?.map(|text| (text, location.path)),
            None => None,
        };
        let (mut config, mut problems, source_name) = match text {
            Some((text, path)) => {
                let (config, problems) = parse_document(&text, env);
                (config, problems, path.display().to_string())
            }
            None => (GlobalCacheConfig::defaults_from(env), Vec::new(), ENVIRONMENT.to_owned()),
        };
        problems.extend(config.apply_env_overrides(env));
        finish(config, problems, source_name)
    }

    /// Parses a config file's JSON text and validates it, without environment overrides. `env`
    /// supplies `HOME` for `~/` paths and the default `cache_dir`; `source_name` heads the
    /// error message.
    pub fn from_json_str(text: &str, source_name: &str, env: &EnvMap) -> Result<Self, ConfigError> {
        let (config, problems) = parse_document(text, env);
        finish(config, problems, source_name.to_owned())
    }
}

/// Adds the validation problems and turns a non-empty list into [`ConfigError::Invalid`].
fn finish(
    config: GlobalCacheConfig,
    mut problems: Vec<Problem>,
    source_name: String,
) -> Result<GlobalCacheConfig, ConfigError> {
    if let Err(invalid) = config.validate() {
        problems.extend(invalid);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { source_name, problems })
    }
}

/// The defaults with every readable field of `text` applied, and every problem found.
fn parse_document(text: &str, env: &EnvMap) -> (GlobalCacheConfig, Vec<Problem>) {
    let mut config = GlobalCacheConfig::defaults_from(env);
    let mut problems = Problems::default();
    // A leading byte order mark, as some Windows editors write, is skipped.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            if let Some(fields) = Fields::new("", &value, &mut problems) {
                read_top(fields, &mut config, env, &mut problems);
            }
        }
        Err(error) => problems.push("", syntax_message(&error)),
    }
    (config, problems.0)
}

/// `invalid JSON at line 3, column 5: expected `,` or `}``.
fn syntax_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    format!("invalid JSON at line {}, column {}: {reason}", error.line(), error.column())
}

fn read_top(
    mut fields: Fields<'_>,
    config: &mut GlobalCacheConfig,
    env: &EnvMap,
    problems: &mut Problems,
) {
    set(&mut config.enabled, fields.take_bool("enabled", problems));
    set(&mut config.default_mode, take_parsed(&mut fields, "default_mode", problems));
    if let Some(text) = fields.take_string("cache_dir", problems) {
        set(&mut config.cache_dir, take_path(&fields, "cache_dir", &text, env, problems));
    }
    set(&mut config.max_size, take_size(&mut fields, "max_size", problems));
    set(&mut config.env_include, fields.take_string_list("env_include", problems));
    set(&mut config.env_exclude, fields.take_string_list("env_exclude", problems));
    set(&mut config.eviction_policy, take_parsed(&mut fields, "eviction_policy", problems));
    set(&mut config.stats_retention_days, take_int(&mut fields, "stats_retention_days", problems));
    set(&mut config.cache_failures, fields.take_bool("cache_failures", problems));
    if let Some(remote) = fields.take_object("remote_cache", problems) {
        config.remote_cache = Some(read_remote(remote, env, problems));
    }
    if let Some(storage) = fields.take_object("storage", problems) {
        read_storage(storage, &mut config.storage, problems);
    }
    fields.finish(problems);
}

fn read_storage(mut fields: Fields<'_>, storage: &mut StorageConfig, problems: &mut Problems) {
    set(&mut storage.inline_threshold, take_size(&mut fields, "inline_threshold", problems));
    set(&mut storage.memory_capacity, take_size(&mut fields, "memory_capacity", problems));
    set(&mut storage.fsync, fields.take_bool("fsync", problems));
    fields.finish(problems);
}

/// Reads `remote_cache`; a missing `endpoint` is left empty for validation to report, so that
/// `CUENV_REMOTE_CACHE_URL` can still supply it.
fn read_remote(mut fields: Fields<'_>, env: &EnvMap, problems: &mut Problems) -> RemoteCacheConfig {
    let mut remote = RemoteCacheConfig::default();
    set(&mut remote.endpoint, fields.take_string("endpoint", problems));
    set(&mut remote.instance_name, fields.take_string("instance_name", problems));
    remote.auth_token = fields.take_string("auth_token", problems);
    set(&mut remote.timeout_seconds, fields.take_u64("timeout_seconds", problems));
    set(&mut remote.max_concurrent, take_int(&mut fields, "max_concurrent", problems));
    set(&mut remote.upload_enabled, fields.take_bool("upload_enabled", problems));
    set(&mut remote.download_enabled, fields.take_bool("download_enabled", problems));
    if let Some(tls) = fields.take_object("tls", problems) {
        remote.tls = Some(read_tls(tls, env, problems));
    }
    fields.finish(problems);
    remote
}

fn read_tls(mut fields: Fields<'_>, env: &EnvMap, problems: &mut Problems) -> TlsConfig {
    let mut tls = TlsConfig::default();
    if let Some(text) = fields.take_string("ca_cert", problems) {
        tls.ca_cert = take_path(&fields, "ca_cert", &text, env, problems);
    }
    tls.domain_name = fields.take_string("domain_name", problems);
    fields.finish(problems);
    tls
}

/// Overwrites `target` when a value was read.
fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// A path with `~/` expanded; the field is already taken so its name is passed separately.
fn take_path(
    fields: &Fields<'_>,
    key: &str,
    text: &str,
    env: &EnvMap,
    problems: &mut Problems,
) -> Option<PathBuf> {
    expand_home(text, env).map_err(|message| problems.push(fields.child(key), message)).ok()
}

/// A string field parsed with `FromStr`; the parse error names the bad and the valid values.
fn take_parsed<T>(fields: &mut Fields<'_>, key: &'static str, problems: &mut Problems) -> Option<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = fields.take_string(key, problems)?;
    text.parse().map_err(|error: T::Err| problems.push(fields.child(key), error.to_string())).ok()
}

/// A non-negative integer that must fit `T` (`u32`, `usize`).
fn take_int<T: TryFrom<u64>>(
    fields: &mut Fields<'_>,
    key: &'static str,
    problems: &mut Problems,
) -> Option<T> {
    let number = fields.take_u64(key, problems)?;
    T::try_from(number)
        .map_err(|_| problems.push(fields.child(key), format!("number {number} is too large")))
        .ok()
}

/// A size: a number of bytes or a string such as `"10GiB"`.
fn take_size(fields: &mut Fields<'_>, key: &'static str, problems: &mut Problems) -> Option<u64> {
    let value = fields.take(key)?;
    match value {
        Value::String(text) => {
            parse_size(text).map_err(|message| problems.push(fields.child(key), message)).ok()
        }
        other => other.as_u64().or_else(|| {
            let message = format!(
                "expected a number of bytes or a size like \"10GiB\", found {}",
                describe(other)
            );
            problems.push(fields.child(key), message);
            None
        }),
    }
}
