//! Remote cache tests against a real BuildGrid server.
