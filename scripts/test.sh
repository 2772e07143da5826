#!/usr/bin/env bash
# The whole test suite: lints, unit and property tests, integration tests on real Tansu
# brokers started by the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/regionflow/target}"
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The kill -9 tests run the `processor` binary as a child process: build the binaries first.
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=1
