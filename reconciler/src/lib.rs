//! Reconciler: reads every region's `history`, merges per partition in (hlc, region,
//! event_id) order behind per-region watermarks, and writes `reconciled` and `conflicts`
//! to the home cluster transactionally. Same shape as the processor: `config`, `merge`
//! (the I/O-free core), `restore` (adopt our own output), `pipeline`.

pub mod config;
pub mod merge;
pub mod metrics;
pub mod pipeline;
pub mod restore;

pub use config::{Config, RegionSource};
pub use pipeline::{run, run_with, Stats};
pub use rf_processor::{Error, Shutdown};
