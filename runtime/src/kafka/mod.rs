//! Kafka plumbing for both services: client settings written once (`client`), the
//! transactional producer and its drained commit (`txn`), read-to-end of one partition as
//! readers see it (`read_to_end`), and fencing of writers that died inside a transaction
//! (`fence`), and waiting for a cluster that does not answer yet (`wait`).

mod client;
mod fence;
mod read_to_end;
mod txn;
mod wait;

pub use client::{client_config, header_i64, header_str, read_committed};
pub use fence::{abort_orphaned, fence_writer};
pub use read_to_end::{log_end, read_to_end};
pub use txn::{
    abort, commit_drained, send, transactional_producer, Delivered, DeliveryCtx, TxnProducer,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
};
pub use wait::{wait_for_cluster, WAIT_LOG_EVERY};
