//! Key generation bench (filled in below).
fn main() {}
