#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs
# every test. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# httpie: the seed walkthrough test runs the seed's `http POST …` lines verbatim.
if ! command -v http >/dev/null 2>&1; then
  python3 -m pip install -q httpie
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

cargo test --all-targets --no-fail-fast "$@"
