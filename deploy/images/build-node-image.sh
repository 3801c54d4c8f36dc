#!/usr/bin/env bash
# Builds the node image locally (no registry): FROM scratch, one statically linked `paas`,
# ENTRYPOINT ["/paas", "executor"]. Mesos runs it as the custom executor of every node.
#
# usage: deploy/images/build-node-image.sh            # build paas, then the image
#        PAAS_BINARY=/path/to/static/paas deploy/images/build-node-image.sh
#
# stdout: exactly one line, the immutable image reference `paas-node:<sha12>` (capture it:
#         IMAGE=$(deploy/images/build-node-image.sh)). Everything else goes to stderr.
# Tags:   <name>:<sha12> (first 12 hex digits of the binary's sha256) and <name>:latest.
# Labels: paas.binary.sha256=<full sha256>, org.opencontainers.image.version=<crate version>.
# Idempotent: when an image labelled with the same binary hash exists, nothing is rebuilt
# (the tags are re-pointed). Non-interactive; fine under CI=true with no stdin.
#
# Environment:
#   PAAS_NODE_IMAGE_NAME  repository name (default: paas-node)
#   PAAS_BINARY           package this static binary instead of building one
#   CARGO_TARGET_DIR      honoured by the build (default: <repo>/target)
#   CARGO                 cargo to use (default: cargo)
set -euo pipefail
exec </dev/null

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=${PAAS_NODE_IMAGE_NAME:-paas-node}
triple=x86_64-unknown-linux-gnu
log() { printf 'build-node-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "docker daemon not reachable"

if [[ -n ${PAAS_BINARY:-} ]]; then
  binary=$PAAS_BINARY
  [[ -f $binary ]] || die "PAAS_BINARY=$binary does not exist"
else
  log "building a static paas (release, $triple)"
  # crt-static on the gnu target yields a static-pie: it runs in an image with no libc.
  (cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
     "${CARGO:-cargo}" build --release --locked --target "$triple" --bin paas >&2)
  binary=${CARGO_TARGET_DIR:-$repo/target}/$triple/release/paas
  [[ -f $binary ]] || die "cargo did not produce $binary"
fi

# A dynamically linked binary would fail in the scratch image with a confusing "no such file".
if command -v readelf >/dev/null && readelf -lW "$binary" | grep -q 'Requesting program interpreter'; then
  die "$binary is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
fi

sha=$(sha256sum "$binary" | cut -d' ' -f1)
short=${sha:0:12}
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
ref=$name:$short

# The product images (build-product-images.sh) carry the same binary label: match the
# node image's own title too, or a product image would be tagged as the node image.
title="paas node executor"
existing=$(docker images -q --filter "label=paas.binary.sha256=$sha" \
  --filter "label=org.opencontainers.image.title=$title" | head -1)
if [[ -n $existing ]]; then
  log "image with binary sha256 $short exists ($existing); not rebuilding"
  docker tag "$existing" "$ref"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$binary" "$ctx/paas"
  chmod 0755 "$ctx/paas"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY paas /paas
LABEL paas.binary.sha256="$sha" org.opencontainers.image.version="$version" \
      org.opencontainers.image.title="$title"
ENTRYPOINT ["/paas", "executor"]
DOCKERFILE
  log "building $ref"
  docker build --quiet --tag "$ref" "$ctx" >&2
fi
docker tag "$ref" "$name:latest"
log "tagged $ref and $name:latest"
echo "$ref"
