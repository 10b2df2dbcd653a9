//! Task files.
