//! loom models of cuenv's concurrency logic live in `tests/`; they compile only under
//! `RUSTFLAGS="--cfg cuenv_loom"`, which switches `cuenv`'s sync facade to loom's types.
