#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) base root filesystem with debootstrap and takes it into
# Docker with `docker import` as the image named by $1 (e.g. paas-base:<sha12>).
# Called by ../build-product-images.sh, which decides whether a build is needed; this file is
# part of the base recipe (its hash names the image).
#
# Environment:
#   DEBIAN_MIRROR           the Debian archive to use (default: the first one in this host's
#                           apt sources)
#   DEBIAN_SECURITY_MIRROR  the security archive (default: from this host's apt sources, if any)
set -euo pipefail
exec </dev/null
ref=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=bookworm
log() { printf 'base: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >&2 \
    || die "cannot install debootstrap"
}

# The archive URIs this host's apt already uses (deb822 .sources files, then one-line lists).
host_uris() {
  {
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -E '^https?://' || true
}
mirror=${DEBIAN_MIRROR:-$(host_uris | grep -E '/debian/?$' | head -1)}
security=${DEBIAN_SECURITY_MIRROR:-$(host_uris | grep -E '/debian-security/?$' | head -1)}
[[ -n $mirror ]] || die "no Debian mirror found in this host's apt sources; set DEBIAN_MIRROR"

include=$(grep -v '^[[:space:]]*\(#\|$\)' "$here/packages" | tr -s ' \n' ',' | sed 's/,$//')
root=$(mktemp -d /tmp/paas-base.XXXXXX)
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT

log "debootstrap $suite (minbase + $include) into $root"
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >&2 \
  || { tail -30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true; die "debootstrap failed"; }

{
  echo "deb $mirror $suite main"
  echo "deb $mirror $suite-updates main"
  [[ -z $security ]] || echo "deb $security $suite-security main"
} >"$root/etc/apt/sources.list"
# Images, not machines: no recommends, no docs, no caches.
cat >"$root/etc/apt/apt.conf.d/90paas" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
APT
cat >"$root/etc/dpkg/dpkg.cfg.d/90paas-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
DPKG
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* \
       "$root"/var/log/*.log "$root"/debootstrap
: >"$root/etc/hostname"
# The host's resolver is bind-mounted by docker at run time.
rm -f "$root/etc/resolv.conf"

log "docker import as $ref"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --message "paas base: debian $suite minbase" - "$ref" >&2
