//! Config loading tests.
