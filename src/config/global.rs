//! The shape of the global cache configuration and its defaults.
//!
//! These structs are what the rest of cuenv consumes once loading has succeeded; reading the
//! JSON file ([`super::load`]), applying environment overrides ([`super::env`]) and checking the
//! values ([`super::validate`]) live in their own files.

use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::env::{non_empty, process_env, xdg_dir};
use super::{CacheMode, EnvMap, EvictionPolicy, GIB, MIB};

/// Default `max_size`: 10 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 * GIB;
/// Default `storage.inline_threshold`: 4 KiB.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 4096;
/// Largest accepted `storage.inline_threshold`: 64 MiB.
pub const MAX_INLINE_THRESHOLD: u64 = 64 * MIB;
/// Default `storage.memory_capacity`: 256 MiB.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 * MIB;
/// Default `stats_retention_days`.
pub const DEFAULT_STATS_RETENTION_DAYS: u32 = 30;
/// Default `remote_cache.timeout_seconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Default `remote_cache.max_concurrent`. Lookups are latency-bound (one round trip each), so
/// the window is wide; a server that cannot take that many narrows it (`RESOURCE_EXHAUSTED`).
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Default `env_include`: variables that commonly change what a task does.
pub const DEFAULT_ENV_INCLUDE: [&str; 6] = ["PATH", "HOME", "USER", "SHELL", "LANG", "CUENV_*"];
/// Default `env_exclude`: variables that change on every run or only affect the terminal.
pub const DEFAULT_ENV_EXCLUDE: [&str; 5] = ["RANDOM", "TEMP", "TMP", "TERM", "SSH_*"];
/// Directory used when neither `XDG_CACHE_HOME` nor `HOME` is set, relative to the working
/// directory.
pub const FALLBACK_CACHE_DIR: &str = ".cuenv-cache";

/// Everything the user can configure about the task cache, after defaults, the config file and
/// environment overrides have been combined.
///
/// `Serialize` prints the effective config as JSON with the same field names as the file;
/// `remote_cache.auth_token` is printed as `"<redacted>"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalCacheConfig {
    /// Master switch; when false no task is cached whatever its mode.
    pub enabled: bool,
    /// Mode used for tasks that do not set their own.
    pub default_mode: CacheMode,
    /// Root of the local cache (blobs, action records, statistics).
    pub cache_dir: PathBuf,
    /// Size in bytes above which the local cache evicts entries.
    pub max_size: u64,
    /// Environment variable patterns (`*` wildcards) that take part in cache keys.
    pub env_include: Vec<String>,
    /// Patterns removed from `env_include`'s matches.
    pub env_exclude: Vec<String>,
    /// Which entries eviction drops first.
    pub eviction_policy: EvictionPolicy,
    /// How long cache statistics are kept, in days.
    pub stats_retention_days: u32,
    /// When true, results with a non-zero exit code are cached too.
    pub cache_failures: bool,
    /// Remote cache settings; `None` means local only.
    pub remote_cache: Option<RemoteCacheConfig>,
    /// How the local store writes and keeps data.
    pub storage: StorageConfig,
}

/// Tuning of the local storage tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageConfig {
    /// stdout/stderr smaller than this many bytes are kept inline in the action record instead
    /// of as separate blobs.
    pub inline_threshold: u64,
    /// Weight capacity of the in-memory tier, in bytes.
    pub memory_capacity: u64,
    /// fsync blobs and records before the rename that publishes them.
    pub fsync: bool,
}

/// Connection to a remote cache speaking the Bazel remote execution API.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct RemoteCacheConfig {
    /// `grpc://host:port` or `grpcs://host:port` (`http://` and `https://` are synonyms).
    pub endpoint: String,
    /// Remote instance name; empty for the server's default instance.
    pub instance_name: String,
    /// Bearer token sent with each request.
    #[serde(serialize_with = "redact")]
    pub auth_token: Option<String>,
    /// Per-request timeout in seconds.
    pub timeout_seconds: u64,
    /// Most requests in flight at once.
    pub max_concurrent: usize,
    /// Whether results are uploaded.
    pub upload_enabled: bool,
    /// Whether results are downloaded.
    pub download_enabled: bool,
    /// TLS settings; only valid with a `grpcs://` or `https://` endpoint.
    pub tls: Option<TlsConfig>,
}

/// TLS settings for the remote cache connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TlsConfig {
    /// PEM file of a custom certificate authority.
    pub ca_cert: Option<PathBuf>,
    /// Name to use for SNI and certificate verification instead of the endpoint's host.
    pub domain_name: Option<String>,
}

impl GlobalCacheConfig {
    /// The defaults, with `cache_dir` taken from `env`: `$XDG_CACHE_HOME/cuenv`, else
    /// `$HOME/.cache/cuenv`, else [`FALLBACK_CACHE_DIR`] relative to the working directory.
    pub fn defaults_from(env: &EnvMap) -> Self {
        GlobalCacheConfig {
            enabled: true,
            default_mode: CacheMode::default(),
            cache_dir: default_cache_dir(env),
            max_size: DEFAULT_MAX_SIZE,
            env_include: DEFAULT_ENV_INCLUDE.map(str::to_owned).to_vec(),
            env_exclude: DEFAULT_ENV_EXCLUDE.map(str::to_owned).to_vec(),
            eviction_policy: EvictionPolicy::default(),
            stats_retention_days: DEFAULT_STATS_RETENTION_DAYS,
            cache_failures: false,
            remote_cache: None,
            storage: StorageConfig::default(),
        }
    }
}

/// The default cache directory for `env`; see [`GlobalCacheConfig::defaults_from`].
pub fn default_cache_dir(env: &EnvMap) -> PathBuf {
    if let Some(xdg) = xdg_dir(env, "XDG_CACHE_HOME") {
        return xdg.join("cuenv");
    }
    match non_empty(env, "HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("cuenv"),
        None => PathBuf::from(FALLBACK_CACHE_DIR),
    }
}

impl Default for GlobalCacheConfig {
    /// [`GlobalCacheConfig::defaults_from`] the current process environment.
    fn default() -> Self {
        GlobalCacheConfig::defaults_from(&process_env())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            fsync: true,
        }
    }
}

impl RemoteCacheConfig {
    /// A remote cache at `endpoint` with every other setting at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        RemoteCacheConfig {
            endpoint: endpoint.into(),
            instance_name: String::new(),
            auth_token: None,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            upload_enabled: true,
            download_enabled: true,
            tls: None,
        }
    }
}

impl Default for RemoteCacheConfig {
    /// Defaults with an empty endpoint, which [`GlobalCacheConfig::validate`] rejects.
    fn default() -> Self {
        RemoteCacheConfig::new("")
    }
}

/// Written by hand so the token never reaches logs.
impl fmt::Debug for RemoteCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCacheConfig")
            .field("endpoint", &self.endpoint)
            .field("instance_name", &self.instance_name)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .field("timeout_seconds", &self.timeout_seconds)
            .field("max_concurrent", &self.max_concurrent)
            .field("upload_enabled", &self.upload_enabled)
            .field("download_enabled", &self.download_enabled)
            .field("tls", &self.tls)
            .finish()
    }
}

fn redact<S: Serializer>(token: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    token.as_ref().map(|_| "<redacted>").serialize(serializer)
}
