//! Integration tests live in `tests/`; the harness is `rf_harness::{broker, cluster}`.
