//! The synchronisation primitives the single-flight and shutdown state machines use: `loom`'s
//! under `--cfg cuenv_loom` (so the loom models in `loom-tests` explore every interleaving),
//! `std`'s otherwise.
//!
//! A project-specific cfg, not `--cfg loom`: that one also switches code paths inside
//! dependencies (tokio, moka), which is not what these models test.

#[cfg(cuenv_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(cuenv_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, recovering the data if a panicking holder poisoned it: every state machine
/// here keeps its data consistent at each unlock, so poison carries no meaning.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
