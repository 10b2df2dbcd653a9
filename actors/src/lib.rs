//! The actors behind cuenv's task cache.
//!
//! This crate holds the engines that do the work — key generation (blake3 over input files on a
//! rayon pool, with a stat cache), the disk tier (CAS and action records), the memory tier
//! (moka), statistics and the REAPI remote client — and, around each, the actor that owns it.
//! Every actor is a cloneable `Handle` over a bounded `mpsc` mailbox and a task that owns the
//! state and answers on `oneshot`s; [`Runtime`] starts them on the caller's tokio runtime and
//! stops them in order.
//!
//! # Message flow
//! ```text
//!   caller (manager) ──► KeyGen ──► rayon pool ─┐
//!        │  │  │  │                              └─► oneshot reply ──► caller
//!        │  │  │  └───► MemoryTier ─────────────────► oneshot reply ──► caller
//!        │  │  └──────► DiskTier ──► blocking jobs ──► oneshot reply ──► caller
//!        │  └─────────► RemoteSync ─► download/upload tasks ─► oneshot reply ──► caller
//!        │                  └─ try_send ─► Stats
//!        └─ try_send ─► Stats ──────► DiskTier (merge buckets)
//! ```
//! Every arrow into an actor is a bounded mailbox; every answer is a oneshot. The
//! actor-to-actor edges are RemoteSync → Stats (`try_send`, never waits) and Stats → DiskTier;
//! nothing flows back along either, so bounded channels never form a cycle.

mod actor;
pub mod digest;
pub mod disk;
pub mod env_filter;
pub mod envelope;
pub mod error;
pub mod fsio;
pub mod key_gen;
pub mod memory;
pub mod remote;
pub mod result;
pub mod runtime;
pub mod stats;

pub use digest::Digest;
pub use env_filter::EnvFilter;
pub use error::{ActorGone, Error};
pub use runtime::{Runtime, RuntimeSettings};
