//! A remote outage remembered across runs.
//!
//! The breaker lives in one process, so without this every `cuenv run` with a local miss would
//! wait out a dead remote afresh: retries against a refused connection (under a second), or a
//! whole deadline against a server that accepts connections and never answers (30 s by
//! default). When the breaker opens, the remote (endpoint and instance) and the end of its
//! cooldown are written to the cache directory's `v1/remote-outage`; a client that starts
//! before that end starts with its breaker open for the rest of the cooldown, saying so once.
//! Afterwards a probe call goes through as usual. The first call of a process that reaches the
//! server removes the file, and `cuenv cache test`, which always calls, removes it when the
//! remote passes.
//!
//! The file is a hint, never trusted further: unreadable or another remote's, it is ignored;
//! a recorded end further away than the cooldown is cut to the cooldown.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::RemoteSettings;
use crate::fsio;

/// Where outages of one remote are remembered.
#[derive(Debug)]
pub(crate) struct OutageFile {
    path: PathBuf,
    /// The remote, as the file names it: endpoint and instance.
    remote: String,
    /// Set once this process removed the file (or found none), until it records again.
    cleared: AtomicBool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    remote: String,
    /// The end of the cooldown, in milliseconds since the Unix epoch.
    until_ms: u64,
    /// The failure that opened the breaker.
    reason: String,
}

impl OutageFile {
    pub(crate) fn new(path: PathBuf, settings: &RemoteSettings) -> Self {
        let remote = format!("{} instance {:?}", settings.endpoint, settings.instance_name);
        OutageFile { path, remote, cleared: AtomicBool::new(false) }
    }

    /// The time left, at `now`, of an outage of this remote recorded by an earlier client
    /// (at most `cooldown`), and the failure recorded with it.
    pub(crate) fn remaining(
        &self,
        now: SystemTime,
        cooldown: Duration,
    ) -> Option<(Duration, String)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let recorded: Recorded = serde_json::from_slice(&bytes).ok()?;
        if recorded.remote != self.remote {
            return None;
        }
        let until = UNIX_EPOCH + Duration::from_millis(recorded.until_ms);
        let left = until.duration_since(now).ok()?.min(cooldown);
        (!left.is_zero()).then_some((left, recorded.reason))
    }

    /// Records that calls are suspended until `until` because of `reason`.
    pub(crate) fn record(&self, until: SystemTime, reason: &str) {
        self.cleared.store(false, Ordering::Relaxed);
        let until_ms = until.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let recorded = Recorded {
            remote: self.remote.clone(),
            until_ms: u64::try_from(until_ms).unwrap_or(u64::MAX),
            reason: reason.to_owned(),
        };
        let written = serde_json::to_vec(&recorded)
            .map_err(io::Error::other)
            .and_then(|bytes| fsio::write_atomic(&self.path, &bytes, false));
        if let Err(error) = written {
            tracing::debug!(path = %self.path.display(), %error, "cannot record the remote outage");
        }
    }

    /// Whether the file may hold an outage this process has not cleared.
    pub(crate) fn may_be_recorded(&self) -> bool {
        !self.cleared.load(Ordering::Relaxed)
    }

    /// Forgets a recorded outage: the remote answered. Touches the file once per process
    /// (and again only after this process recorded one).
    pub(crate) fn clear(&self) {
        if self.cleared.swap(true, Ordering::Relaxed) {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!("remote cache answered; forgot its recorded outage"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "cannot remove the remote outage record");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, endpoint: &str) -> OutageFile {
        OutageFile::new(dir.path().join("remote-outage"), &RemoteSettings::new(endpoint))
    }

    const COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn an_outage_is_remembered_until_its_cooldown_ends() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        file(&dir, "grpc://a:1").record(now + Duration::from_secs(20), "connection refused");
        let later = file(&dir, "grpc://a:1");
        let (left, reason) = later.remaining(now, COOLDOWN).expect("remembered");
        assert!(left > Duration::from_secs(19) && left <= Duration::from_secs(20), "{left:?}");
        assert_eq!(reason, "connection refused");
        assert_eq!(later.remaining(now + Duration::from_secs(20), COOLDOWN), None);
    }

    #[test]
    fn another_remote_an_unreadable_file_or_a_far_end_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        file(&dir, "grpc://a:1").record(now + Duration::from_secs(3600), "down");
        assert_eq!(file(&dir, "grpc://b:1").remaining(now, COOLDOWN), None);
        let (left, _) = file(&dir, "grpc://a:1").remaining(now, COOLDOWN).unwrap();
        assert_eq!(left, COOLDOWN, "a recorded end past the cooldown is cut to it");
        std::fs::write(dir.path().join("remote-outage"), b"{not json").unwrap();
        assert_eq!(file(&dir, "grpc://a:1").remaining(now, COOLDOWN), None);
    }

    #[test]
    fn clearing_removes_the_record_once_until_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remote-outage");
        let outage = file(&dir, "grpc://a:1");
        outage.record(SystemTime::now() + COOLDOWN, "down");
        outage.clear();
        assert!(!path.exists());
        // Another process records one; this one has already cleared, and leaves it...
        file(&dir, "grpc://a:1").record(SystemTime::now() + COOLDOWN, "down");
        outage.clear();
        assert!(path.exists());
        // ...until it records one itself.
        outage.record(SystemTime::now() + COOLDOWN, "down");
        outage.clear();
        assert!(!path.exists());
    }
}
