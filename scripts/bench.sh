#!/usr/bin/env bash
# The benchmarks of docs/BENCHMARKS.md: prints a table and rewrites the generated part of
# docs/BENCHMARKS.md. Extra arguments go to `bench` (`--small` for the quick run CI makes,
# `--only micro,merge,pipeline`, `--out FILE`). The full run takes about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/regionflow/target}"
cargo build --release --workspace --bins
"$CARGO_TARGET_DIR/release/bench" "$@"
