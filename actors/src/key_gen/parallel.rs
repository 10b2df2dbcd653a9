//! The parallel walk for tasks with many input files: every directory and every batch of files
//! becomes a rayon task, so readdir, stat, read and hash spread over the pool.

use std::fs;
use std::sync::Mutex;

use super::KeyError;
use super::inputs::{Candidate, Visited, Walk};

/// Files handed to rayon per task, so a directory of 10,000 files still spreads over every
/// thread.
const BATCH: usize = 64;

/// What the rayon tasks of one walk share.
struct Shared<'a> {
    walk: &'a Walk<'a>,
    literal_dirs: &'a [String],
    /// A std mutex: each task takes it once to hand over its batch, never while it works.
    visited: Mutex<Result<Vec<Visited>, KeyError>>,
}

/// Walks `bases` and visits every wanted file plus `literal_files`. Call inside the pool.
pub(super) fn walk<'a>(
    walk: &'a Walk<'a>,
    bases: &[String],
    literal_dirs: &'a [String],
    literal_files: &[String],
) -> Result<Vec<Visited>, KeyError> {
    let literal_files = literal_files.iter().map(|path| Candidate::literal(path)).collect();
    let shared = Shared { walk, literal_dirs, visited: Mutex::new(Ok(Vec::new())) };
    rayon::scope(|scope| {
        batch(scope, &shared, literal_files);
        for base in bases {
            dir(scope, &shared, base.clone());
        }
    });
    shared.visited.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn add(shared: &Shared<'_>, outcome: Result<Vec<Visited>, KeyError>) {
    let mut visited = shared.visited.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match (&mut *visited, outcome) {
        (Ok(all), Ok(more)) => all.extend(more),
        (Ok(_), Err(error)) => *visited = Err(error),
        (Err(_), _) => {}
    }
}

fn dir<'s>(scope: &rayon::Scope<'s>, shared: &'s Shared<'s>, dir_path: String) {
    scope.spawn(move |scope| {
        let walk = shared.walk;
        let absolute =
            if dir_path.is_empty() { walk.root.to_path_buf() } else { walk.root.join(&dir_path) };
        let entries = match fs::read_dir(&absolute) {
            Ok(entries) => entries,
            // A glob's base that does not exist simply matches nothing.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => return add(shared, Err(KeyError::io(walk.task, &absolute, error))),
        };
        let mut files = Vec::with_capacity(BATCH);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => return add(shared, Err(KeyError::io(walk.task, &absolute, error))),
            };
            let file_type = entry.file_type();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let is_dir = file_type.as_ref().is_ok_and(|kind| kind.is_dir());
                match walk.unspellable(&dir_path, &entry, is_dir, shared.literal_dirs) {
                    Ok(()) => continue,
                    Err(error) => return add(shared, Err(error)),
                }
            };
            let path =
                if dir_path.is_empty() { name.to_owned() } else { format!("{dir_path}/{name}") };
            match file_type {
                Ok(kind) if kind.is_dir() => {
                    if walk.enters(name, &entry) {
                        dir(scope, shared, path);
                    }
                }
                Ok(_) if walk.wanted(shared.literal_dirs, &path) => {
                    files.push(Candidate { path, entry: Some(entry) });
                    if files.len() == BATCH {
                        batch(
                            scope,
                            shared,
                            std::mem::replace(&mut files, Vec::with_capacity(BATCH)),
                        );
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    return add(shared, Err(KeyError::io(walk.task, &entry.path(), error)));
                }
            }
        }
        batch(scope, shared, files);
    });
}

fn batch<'s>(scope: &rayon::Scope<'s>, shared: &'s Shared<'s>, files: Vec<Candidate>) {
    if files.is_empty() {
        return;
    }
    scope.spawn(move |_| {
        let outcome =
            files.into_iter().map(|candidate| shared.walk.stat_and_visit(candidate)).collect();
        add(shared, outcome);
    });
}
