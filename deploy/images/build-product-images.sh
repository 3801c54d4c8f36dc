#!/usr/bin/env bash
# Builds the product images locally (no registry): a Debian 12 base made with debootstrap and
# taken in with `docker import`, then one image per product FROM it, each holding the static
# `paas` binary at /paas with ENTRYPOINT ["/paas", "executor"] (the node executor).
#
# usage: deploy/images/build-product-images.sh [base|slurm|spark]...   (default: slurm spark)
#
# stdout: one line per image asked for, its immutable reference (<name>:<sha12>), in the
#         order asked. Everything else goes to stderr. Non-interactive (fine under CI=true).
#
# Caching: each image is tagged with the first 12 hex digits of its recipe's sha256 and
# labelled paas.recipe.sha256=<full>; an image whose tag exists is not rebuilt.
#   base recipe    = deploy/images/base/* (debootstrap script + package list)
#   product recipe = base reference + deploy/images/<product>/* + sha256 of the paas binary
# A product image is also tagged with its moving tag (paas-slurm:22.05, paas-spark:4.x), which
# is what the product templates name by default.
#
# The paas binary (first that applies):
#   PAAS_BINARY=/path/to/static/paas   use this file
#   PAAS_NODE_IMAGE=paas-node:<sha12>  copy /paas out of this node image
#                                      (deploy/images/build-node-image.sh)
#   otherwise                          build it: cargo build --release with crt-static
# PAAS_BUILD_CA: CA bundle that downloads inside a build trust (default: $PIP_CERT, else the
# host's /etc/ssl/certs/ca-certificates.crt), put in each build context as build-ca.crt.
set -euo pipefail
exec </dev/null
export CI=${CI:-true} DEBIAN_FRONTEND=noninteractive

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
triple=x86_64-unknown-linux-gnu
log() { printf 'build-product-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# One build at a time on this host: tests start this script from parallel threads, and two
# base builds would race for apt's lock and for the same image tags. A waiting caller then
# finds the images built and reuses them.
exec 9>"${TMPDIR:-/tmp}/paas-build-product-images.lock"
flock 9

tmp=()
trap 'rm -rf "${tmp[@]}"' EXIT
command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "docker daemon not reachable"

# Moving tag of each product image (what examples/products/<p>/<v>/template.json names).
declare -A moving=([slurm]=22.05 [spark]=4.x)

# sha256 of a list of files, each hashed with its path relative to $here (so a rename counts).
recipe_hash() {
  (cd "$here" && for f in "$@"; do printf '%s\n' "$f"; sha256sum <"$f"; done) | sha256sum | cut -d' ' -f1
}
dir_files() { (cd "$here" && find "$1" -type f | LC_ALL=C sort); }
have() { docker image inspect "$1" >/dev/null 2>&1; }

base_ref=
build_base() {
  [[ -n $base_ref ]] && return
  # shellcheck disable=SC2046
  local sha; sha=$(recipe_hash $(dir_files base))
  base_ref=paas-base:${sha:0:12}
  if have "$base_ref"; then
    log "$base_ref exists; not rebuilding"
  else
    local t0=$SECONDS
    bash "$here/base/build.sh" "$base_ref"
    log "built $base_ref in $((SECONDS - t0)) s"
  fi
}

binary= binary_sha=
find_binary() {
  [[ -n $binary ]] && return
  if [[ -n ${PAAS_BINARY:-} ]]; then
    binary=$PAAS_BINARY
    [[ -f $binary ]] || die "PAAS_BINARY=$binary does not exist"
  elif [[ -n ${PAAS_NODE_IMAGE:-} ]]; then
    have "$PAAS_NODE_IMAGE" || die "PAAS_NODE_IMAGE=$PAAS_NODE_IMAGE is not a local image"
    binary=$(mktemp /tmp/paas-binary.XXXXXX)
    tmp+=("$binary")
    local cid; cid=$(docker create "$PAAS_NODE_IMAGE")
    docker cp "$cid:/paas" "$binary" >&2 && docker rm "$cid" >/dev/null \
      || { docker rm "$cid" >/dev/null 2>&1; die "cannot copy /paas out of $PAAS_NODE_IMAGE"; }
    log "paas binary from $PAAS_NODE_IMAGE"
  else
    log "building a static paas (release, $triple)"
    (cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
       "${CARGO:-cargo}" build --release --locked --target "$triple" --bin paas >&2)
    binary=${CARGO_TARGET_DIR:-$repo/target}/$triple/release/paas
    [[ -f $binary ]] || die "cargo did not produce $binary"
  fi
  if command -v readelf >/dev/null && readelf -lW "$binary" | grep -q 'Requesting program interpreter'; then
    die "$binary is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
  fi
  binary_sha=$(sha256sum "$binary" | cut -d' ' -f1)
}

build_product() {
  local p=$1
  [[ -f $here/$p/Dockerfile ]] || die "no recipe deploy/images/$p/Dockerfile"
  build_base
  find_binary
  # shellcheck disable=SC2046
  local sha; sha=$( { echo "$base_ref"; echo "paas $binary_sha"; recipe_hash $(dir_files "$p"); } | sha256sum | cut -d' ' -f1)
  local ref=paas-$p:${sha:0:12}
  if have "$ref"; then
    log "$ref exists; not rebuilding"
  else
    local ctx t0=$SECONDS
    ctx=$(mktemp -d /tmp/paas-$p-ctx.XXXXXX)
    tmp+=("$ctx")
    cp -r "$here/$p/." "$ctx/"
    cp "$binary" "$ctx/paas"
    # Not part of the recipe: the trust of the machine that builds (see the Dockerfiles).
    cp "$build_ca" "$ctx/build-ca.crt"
    chmod 0755 "$ctx/paas"
    log "building $ref (FROM $base_ref)"
    if ! docker build --pull=false --build-arg "BASE=$base_ref" \
         --label "paas.recipe.sha256=$sha" --label "paas.binary.sha256=$binary_sha" \
         --tag "$ref" "$ctx" >&2; then
      die "docker build of $ref failed"
    fi
    log "built $ref in $((SECONDS - t0)) s"
  fi
  docker tag "$ref" "paas-$p:${moving[$p]}"
  log "tagged $ref and paas-$p:${moving[$p]}"
  echo "$ref"
}

# The CA bundle TLS downloads inside a build trust (pip); the host's own by default.
build_ca=${PAAS_BUILD_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
[[ -f $build_ca ]] || die "no CA bundle at $build_ca; set PAAS_BUILD_CA"

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(slurm spark)
for t in "${targets[@]}"; do
  case $t in
    base) build_base; echo "$base_ref" ;;
    slurm|spark) build_product "$t" ;;
    *) die "unknown image '$t' (base, slurm, spark)" ;;
  esac
done
