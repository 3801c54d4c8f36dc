#!/usr/bin/env bash
# The README's main command: builds paas (one static binary), builds the node image from it
# when a Docker daemon answers, and runs `paas serve` on the embedded mesos-local (no Mesos
# needed). Extra arguments go to `paas serve` (e.g. --master http://127.0.0.1:5050).
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu
# crt-static on the gnu target gives a static-pie binary: the same file runs here and in the
# FROM scratch node image, so it is built once.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release --locked --target "$triple" --bin paas
bin=${CARGO_TARGET_DIR:-target}/$triple/release/paas
if docker info >/dev/null 2>&1; then
  PAAS_BINARY=$bin deploy/images/build-node-image.sh >/dev/null
else
  echo "no Docker daemon: mesos-local runs node executors as plain processes" >&2
fi
exec "$bin" serve "$@"
