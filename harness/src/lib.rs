//! The test harness, shared by the integration tests (`tests/`), the demo and the
//! benchmarks (`loadgen/`): embedded Tansu brokers on free ports (`broker`), multi-region
//! clusters with in-process services (`cluster`), network namespaces to cut a region off
//! (`netns`), the services as child processes for kill -9 (`process`), a deterministic
//! workload with retries, failovers and malformed records (`workload`), and the checker that
//! recomputes the expected state from what was sent (`check`).

pub mod broker;
pub mod check;
pub mod cluster;
pub mod http_client;
pub mod netns;
pub mod process;
pub mod python;
pub mod workload;
