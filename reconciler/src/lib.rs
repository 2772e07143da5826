//! Reconciler: reads every region's `history`, merges per partition in (hlc, region,
//! event_id) order behind per-region watermarks, and writes `reconciled` and `conflicts`
//! to the home cluster transactionally.
//!
//! Same shape as the processor: `config` (validated settings), `merge` (the I/O-free
//! core, invariants 5 and 6), `restore` (adopt our own output, invariant 3), `reconciler`
//! (the `Reconciler` value: its offer and release steps), `membership` (which partition
//! indexes this instance owns, by a consumer group), `metrics` and `stats`, `pipeline`
//! (the loop). Kafka plumbing, HTTP base, shutdown and CLI come from `rf-runtime`.

pub mod config;
pub mod membership;
pub mod merge;
pub mod metrics;
pub mod pipeline;
pub mod reconciler;
pub mod restore;
pub mod stats;
pub mod store;

pub use config::{Config, RegionSource};
pub use pipeline::{run, run_with};
pub use reconciler::Reconciler;
pub use rf_runtime::{Error, Shutdown};
pub use stats::Stats;
