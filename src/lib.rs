//! cuenv's task cache: the configuration a user writes, the task files the CLI reads, and the
//! runtime that turns a task into a cached, replayable action.
//!
//! The actors that do the work (key generation, the memory and disk tiers, remote sync and
//! statistics) live in the `cuenv-actors` crate; this crate owns everything user-facing.

pub mod compat;
pub mod config;
mod error;
pub mod explain;
mod fields;
pub mod gate;
mod key;
pub mod manager;
pub mod runner;
pub mod single_flight;
mod sync;
pub mod task;

pub use cuenv_actors::result::{ActionResult, Log, TaskOutput};
pub use cuenv_actors::{Digest, stats::Counters};
pub use error::Error;
pub use fields::Problem;
pub use key::{TaskInvocation, env_left_out_of_a_key, key_request};
pub use manager::{EnhancedCacheManager, ExecuteOptions, Execution, Source, Tier};
