//! Global cache configuration.
