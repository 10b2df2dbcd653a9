//! cuenv's integration tests: one binary, a module per behaviour.

mod config;
mod manager;
mod remote;
mod support;
mod task_file;
