//! Task file tests.
