//! The floor both services stand on, knowing neither (as Materialize's `kafka-util` and
//! Arroyo's `arroyo-server-common`): Kafka client settings written once, the transactional
//! producer and its drained commit, read-to-end of one partition, fencing of orphaned
//! writers, the HTTP base (`/health`, `/ready`, `/metrics`) with each service's routes on
//! top, the one shutdown path, logging, process memory settings and the command-line plumbing.
//!
//! Import rule (checked by `tests/tests/import_rules.rs`): this crate never names
//! `rf-processor`, `rf-reconciler` or `rocksdb`.

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod memory;
pub mod shutdown;

pub use error::{Error, ErrorClass, Result};
pub use shutdown::Shutdown;
