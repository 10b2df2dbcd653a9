//! The actors behind cuenv's task cache.
//!
//! This crate holds the engines that do the work: key generation (blake3 over input files on a
//! rayon pool, with a stat cache), and, around them, the actors that own each piece of state.

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
