//! Regional processor: consumes `events`, deduplicates, stamps an HLC, folds state into
//! RocksDB and writes `history` + input offsets in one Kafka transaction.
//!
//! Shape (same as the reconciler): `config` (validated settings), `fold` (I/O-free
//! per-partition decisions), `store` (StateStore trait + RocksDB), `kafka` (clients,
//! read-to-end, transactional commit), `restore` (adopt the log before producing),
//! `pipeline` (the loop), `shutdown`.

pub mod config;
pub mod error;
pub mod failpoints;
pub mod feed;
pub mod fold;
pub mod follow;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod restore;
pub mod shutdown;
pub mod store;

pub use config::Config;
pub use error::Error;
pub use pipeline::run;
pub use shutdown::Shutdown;
