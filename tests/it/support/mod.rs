//! Test support: helpers shared by the integration tests.
