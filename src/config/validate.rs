//! Semantic checks of a [`GlobalCacheConfig`]: values that are well-typed but unusable.
//!
//! Runs after the file and the environment have both been applied, so a value is judged once,
//! in its final form, and every problem is reported together rather than one per attempt.

use url::Url;

use super::{GlobalCacheConfig, MAX_INLINE_THRESHOLD, RemoteCacheConfig, format_size};
use crate::fields::{Problem, Problems};

/// A remote cache endpoint split into what a gRPC client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// Whether the connection uses TLS (`grpcs://` or `https://`).
    pub tls: bool,
    /// Host name or IP address (IPv6 addresses keep their brackets).
    pub host: String,
    /// Port; defaults to 443 with TLS and 80 without when the endpoint has none.
    pub port: u16,
}

impl RemoteEndpoint {
    /// The endpoint as an `http://` or `https://` URI, the form HTTP/2 gRPC clients expect.
    pub fn http_uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl RemoteCacheConfig {
    /// Parses [`RemoteCacheConfig::endpoint`]; the error message quotes the bad value.
    pub fn parse_endpoint(&self) -> Result<RemoteEndpoint, String> {
        validate_endpoint(&self.endpoint)
    }
}

/// Parses a remote cache endpoint: `grpc`, `grpcs`, `http` or `https` scheme, a host, an
/// optional port, and nothing else (no credentials, path, query or fragment).
pub(crate) fn validate_endpoint(text: &str) -> Result<RemoteEndpoint, String> {
    let bad = |why: &str| format!("invalid endpoint {text:?}: {why}");
    let expected = "expected grpc://host:port or grpcs://host:port";
    let url = Url::parse(text).map_err(|error| bad(&format!("{error}; {expected}")))?;
    let tls = match url.scheme() {
        "grpcs" | "https" => true,
        "grpc" | "http" => false,
        other => return Err(bad(&format!("unsupported scheme `{other}`; {expected}"))),
    };
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(|| bad("missing host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials do not belong in the URL; use auth_token"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("unexpected path, query or fragment; use instance_name for the instance"));
    }
    let port = url.port().unwrap_or(if tls { 443 } else { 80 });
    Ok(RemoteEndpoint { tls, host: host.to_owned(), port })
}

impl GlobalCacheConfig {
    /// Checks every semantic rule and returns all problems at once, each naming the field path
    /// and the bad value.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Problems::default();
        self.validate_local(&mut problems);
        validate_patterns("env_include", &self.env_include, &mut problems);
        validate_patterns("env_exclude", &self.env_exclude, &mut problems);
        if let Some(remote) = &self.remote_cache {
            validate_remote(remote, &mut problems);
        }
        if problems.0.is_empty() { Ok(()) } else { Err(problems.0) }
    }

    fn validate_local(&self, problems: &mut Problems) {
        if self.cache_dir.as_os_str().is_empty() {
            problems.push("cache_dir", "must not be empty");
        }
        if self.max_size == 0 {
            problems.push("max_size", "must be greater than 0, found 0");
        }
        if self.stats_retention_days == 0 {
            problems.push("stats_retention_days", "must be at least 1 day, found 0");
        }
        let threshold = self.storage.inline_threshold;
        if threshold > MAX_INLINE_THRESHOLD {
            let message = format!(
                "must be at most {MAX_INLINE_THRESHOLD} bytes (64 MiB), found {threshold} ({})",
                format_size(threshold)
            );
            problems.push("storage.inline_threshold", message);
        }
        if self.storage.memory_capacity == 0 {
            problems.push("storage.memory_capacity", "must be greater than 0, found 0");
        }
    }
}

fn validate_patterns(field: &str, patterns: &[String], problems: &mut Problems) {
    for (index, pattern) in patterns.iter().enumerate() {
        if pattern.trim().is_empty() {
            problems.push(format!("{field}[{index}]"), format!("empty pattern {pattern:?}"));
        }
    }
}

fn validate_remote(remote: &RemoteCacheConfig, problems: &mut Problems) {
    let endpoint = if remote.endpoint.is_empty() {
        problems.push(
            "remote_cache.endpoint",
            "required when remote_cache is set, e.g. \"grpcs://cache.example.com:443\"",
        );
        None
    } else {
        remote
            .parse_endpoint()
            .map_err(|message| problems.push("remote_cache.endpoint", message))
            .ok()
    };
    if remote.timeout_seconds == 0 {
        problems.push("remote_cache.timeout_seconds", "must be greater than 0, found 0");
    }
    if remote.max_concurrent == 0 {
        problems.push("remote_cache.max_concurrent", "must be greater than 0, found 0");
    }
    if remote.auth_token.as_deref().is_some_and(|token| token.trim().is_empty()) {
        problems.push("remote_cache.auth_token", "must not be empty when given");
    }
    if remote.tls.is_some() && endpoint.is_some_and(|endpoint| !endpoint.tls) {
        let message = format!(
            "TLS settings need a grpcs:// or https:// endpoint, found {:?}",
            remote.endpoint
        );
        problems.push("remote_cache.tls", message);
    }
}
