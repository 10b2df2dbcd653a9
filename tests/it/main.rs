//! cuenv's integration tests: one binary, a module per behaviour.

mod cli;
mod compat;
mod config;
mod manager;
mod remote;
mod remote_cli;
mod support;
mod task_file;
mod tidy;
