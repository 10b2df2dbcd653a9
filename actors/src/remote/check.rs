//! `cuenv cache test`: proves a remote cache works end to end before a build relies on it.
//!
//! It negotiates capabilities, writes a fresh probe blob and reads it back, and looks up an
//! action that cannot exist (which must be a plain miss). Each step's failure comes back as
//! the error that names the fix: refused credentials, an unknown instance name, an
//! unreachable server.

use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;

use super::cas::{Fetched, Incoming};
use super::negotiate::Capabilities;
use super::{RemoteClient, RemoteError, counters};
use crate::disk::now_ms;

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The endpoint checked.
    pub endpoint: String,
    /// The instance name used.
    pub instance_name: String,
    /// What the server offers.
    pub capabilities: Capabilities,
    /// The size of the probe blob written and read back.
    pub probe_bytes: u64,
    /// How long the whole check took.
    pub elapsed: Duration,
}

impl RemoteClient {
    /// Checks the remote end to end: capabilities, a probe blob written and read back, and an
    /// action cache lookup. Works even with uploads disabled (the probe is a CAS blob, not a
    /// result).
    pub async fn check(&self) -> Result<CheckReport, RemoteError> {
        let outcome = self.try_check().await;
        if outcome.is_err() {
            counters::bump(&self.inner.counters.errors);
        }
        outcome
    }

    async fn try_check(&self) -> Result<CheckReport, RemoteError> {
        let started = Instant::now();
        let caps = self.caps().await?;
        let probe =
            format!("cuenv cache test probe {} {:016x}", now_ms(), fastrand::u64(..)).into_bytes();
        let digest = caps.digest_function.digest(&probe);
        let entry = reapi::batch_update_blobs_request::Request {
            digest: Some(digest.clone()),
            data: probe.clone(),
            compressor: 0,
        };
        self.batch_update(caps, vec![entry]).await?;
        let mut read_back = None;
        let fetched = self
            .get_blobs(caps, vec![digest], None, &mut |_, blob| {
                if let Incoming::Bytes(bytes) = blob {
                    read_back = Some(bytes);
                }
                Ok(())
            })
            .await?;
        match (fetched, read_back) {
            (Fetched::All, Some(bytes)) if bytes == probe => {}
            (Fetched::Missing, _) => {
                return Err(RemoteError::CheckFailed(
                    "the probe blob just written cannot be read back".into(),
                ));
            }
            _ => {
                return Err(RemoteError::CheckFailed(
                    "the probe blob read back differs from what was written".into(),
                ));
            }
        }
        // A random action digest: the lookup must reach the action cache and miss.
        let absent = caps.digest_function.digest(&probe[..probe.len() - 1]);
        self.get_action_result(caps, absent).await?;
        Ok(CheckReport {
            endpoint: self.inner.settings.endpoint.clone(),
            instance_name: self.inner.settings.instance_name.clone(),
            capabilities: caps.clone(),
            probe_bytes: probe.len() as u64,
            elapsed: started.elapsed(),
        })
    }
}
