//! cuenv's task cache: the configuration a user writes, the task files the CLI reads, and the
//! runtime that turns a task into a cached, replayable action.
//!
//! The actors that do the work (key generation, the memory and disk tiers, remote sync and
//! statistics) live in the `cuenv-actors` crate; this crate owns everything user-facing.

pub mod config;
mod fields;
pub mod task;

pub use fields::Problem;
