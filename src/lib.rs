//! End-to-end tests of shimmer-rs live in `tests/`; this crate has no code of its own.
