//! Integration tests live in `tests/`; the harness is `rf_loadgen::{broker, cluster}`.
