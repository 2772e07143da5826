#!/usr/bin/env bash
# The main job: the multi-region demo on embedded Tansu brokers. Extra args go to the demo
# (e.g. --regions 2 --events 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/regionflow/target}"
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/demo" "$@"
