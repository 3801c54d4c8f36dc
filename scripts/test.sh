#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs and starts everything the tests
# need, then runs every test:
#   - httpie (the seed walkthrough runs the seed's `http POST …` lines verbatim);
#   - chromium, chromium-driver (Debian) and selenium (PyPI) for the console's browser test;
#   - the real Apache Mesos 1.11 kit from ../shared/realmesos (built once, ~15 s), started on
#     127.0.0.1:5050 unless MESOS_MASTER already names a master;
#   - the node image (deploy/images/build-node-image.sh; rebuilt only when the binary changed).
# Idempotent. Stops only the Mesos kit it started itself.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# The real Mesos kit comes from the shared folder beside the checkout; its build output goes
# to $REALMESOS_HOME (the kit's own default when unset).
kit=$repo/../shared/realmesos
[[ -x $kit/build.sh ]] || { echo "cannot find the real Mesos kit at ../shared/realmesos" >&2; exit 1; }

if ! command -v http >/dev/null 2>&1; then
  python3 -m pip install -q httpie
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
# The product images' Debian base is made with debootstrap (deploy/images/base/build.sh);
# installed here, once, before tests run in parallel.
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
# The console's browser test (tests/console.rs) drives Debian's chromium with selenium; the
# script names the system's browser and driver, so selenium never downloads either.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -c 'import selenium' >/dev/null 2>&1 || python3 -m pip install -q selenium

echo "== node image" >&2
PAAS_NODE_IMAGE=$(deploy/images/build-node-image.sh)
export PAAS_NODE_IMAGE
echo "node image: $PAAS_NODE_IMAGE" >&2

# The kit's agent removes a finished executor's container 10 s after it ends
# (MESOS_DOCKER_REMOVE_DELAY in its start.sh); the containers of the last tests outlive the
# kit, which is stopped first. Remove those: exited `mesos-*` containers of our images (they
# carry the paas.binary.sha256 label), never a running one.
remove_finished_executors() {
  local ids
  ids=$(docker ps -aq --filter 'name=^mesos-' --filter status=exited --filter label=paas.binary.sha256 2>/dev/null) || return 0
  [[ -z $ids ]] || docker rm $ids >/dev/null 2>&1 || true
}

if [[ -z ${MESOS_MASTER:-} ]]; then
  echo "== real Mesos (../shared/realmesos)" >&2
  "$kit/build.sh" >&2
  if curl -sf -m 2 http://127.0.0.1:5050/master/slaves >/dev/null 2>&1; then
    echo "a Mesos master already answers on 127.0.0.1:5050; using it" >&2
    MESOS_MASTER=http://127.0.0.1:5050
  else
    MESOS_MASTER=$("$kit/start.sh")
    trap '"$kit/stop.sh" >&2 || true; remove_finished_executors' EXIT
  fi
  export MESOS_MASTER
fi
echo "MESOS_MASTER=$MESOS_MASTER" >&2

# Test binaries run one after another; the real-Mesos tests also lock among themselves,
# because they share one agent.
cargo test --all-targets --no-fail-fast "$@"
