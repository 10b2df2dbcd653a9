//! cuenv's integration tests: one binary, a module per behaviour.

mod config;
mod task_file;
