//! The load generator, the demo and the benchmarks (binaries in `src/bin/`); the harness
//! they run on is `rf-harness`.

pub mod bench;
