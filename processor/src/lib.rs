//! Regional processor: consumes `events`, deduplicates, stamps an HLC, folds state into
//! RocksDB and writes `history` + input offsets in one Kafka transaction.
//!
//! One concept per module (same shape as the reconciler): `config` (validated settings),
//! `fold` (I/O-free per-partition decisions), `store` (StateStore trait + RocksDB),
//! `restore` (adopt the log before producing, invariant 3), `engine` (what the loop holds
//! and its steps), `commit` (the commit protocol, invariant 2), `rebalance` (partition
//! moves), `records` (history records and dead letters), `schedules` (timers and firing), `view` (the regional view's one
//! entry point, invariant 7), `follow` (reading `reconciled` back), `metrics` and `stats`
//! (counters, where they are counted), `serve` and `feed` (HTTP routes on top of the
//! runtime's base), `pipeline` (the loop). Kafka plumbing, HTTP base, shutdown and CLI
//! come from `rf-runtime`.

pub mod catch_up;
pub mod commit;
pub mod config;
pub mod engine;
pub mod failpoints;
pub mod feed;
pub mod fold;
pub mod follow;
pub mod metrics;
pub mod pipeline;
pub mod rebalance;
pub mod records;
pub mod restore;
pub mod schedules;
pub mod serve;
pub mod stats;
pub mod store;
pub mod view;

pub use config::Config;
pub use pipeline::{run, run_with};
pub use rf_runtime::{Error, Shutdown};
pub use stats::{SharedStats, Stats};
