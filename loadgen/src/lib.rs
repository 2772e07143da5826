//! Load generator, checker, embedded-broker launcher and the multi-region demo harness.

pub mod broker;
pub mod check;
pub mod cluster;
pub mod netns;
pub mod process;
pub mod workload;
