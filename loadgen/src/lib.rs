//! Load generator, checker, embedded-broker launcher and the multi-region demo harness.

pub mod bench;
pub mod broker;
pub mod check;
pub mod cluster;
pub mod http_client;
pub mod netns;
pub mod process;
pub mod workload;
