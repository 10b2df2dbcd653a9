//! The last digest stored for each task of a project, so `cache explain` can diff a miss
//! against it.
//!
//! Stores note it in memory; a flush merges the notes into one small JSON file per project
//! (`v1/tasks/<project>.json`) under the index lock, so a run of a hundred tasks writes one file,
//! and processes sharing the cache dir merge instead of overwriting each other.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use super::index;
use super::layout::Layout;
use crate::{Digest, fsio};

type Tasks = BTreeMap<String, Digest>;

/// Notes not yet flushed, by project id.
#[derive(Debug, Default)]
pub(super) struct LastDigests {
    /// A std mutex: held to insert or take, never across I/O.
    pending: Mutex<BTreeMap<String, Tasks>>,
}

fn file(layout: &Layout, project_id: &str) -> PathBuf {
    let name = Digest::of(project_id.as_bytes());
    layout.tasks().join(format!("{}.json", &name.to_hex()[..32]))
}

fn read(layout: &Layout, project_id: &str) -> Tasks {
    fs::read(file(layout, project_id))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

impl LastDigests {
    pub(super) fn set(&self, project_id: &str, task: &str, digest: Digest) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.entry(project_id.to_owned()).or_default().insert(task.to_owned(), digest);
    }

    pub(super) fn get(&self, layout: &Layout, project_id: &str, task: &str) -> Option<Digest> {
        let noted = {
            let pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.get(project_id).and_then(|tasks| tasks.get(task)).copied()
        };
        noted.or_else(|| read(layout, project_id).get(task).copied())
    }

    /// Merges the notes into their projects' files.
    pub(super) fn flush(&self, layout: &Layout) -> io::Result<()> {
        let pending = std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if pending.is_empty() {
            return Ok(());
        }
        let _lock = index::lock_index(layout)?;
        for (project_id, tasks) in pending {
            let mut merged = read(layout, &project_id);
            merged.extend(tasks);
            let bytes = serde_json::to_vec_pretty(&merged).map_err(io::Error::other)?;
            fsio::write_atomic_via(&layout.tmp(), &file(layout, &project_id), &bytes, false)?;
        }
        Ok(())
    }
}
