#!/usr/bin/env bash
# Run the whole test suite (unit, integration, embedded-model and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/josh ] || bash scripts/setup.sh
# The llama.cpp backend's tests need its optional extra: llama-cpp-python compiles from source
# (about 12 minutes on 2 cores, once; pip caches the wheel). Require it so they never skip.
# Ray (the [ray] extra) runs the distributed-rollout tests on a local two-node cluster.
.venv/bin/python -m pip install -q -e ".[dev,llamacpp,ray]"
export JOSH_REQUIRE_LLAMACPP=1
# Browser tests drive Debian's Chromium; install it when missing (needs root, as in CI).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium is missing: run 'sudo apt-get install chromium chromium-driver' for the browser tests" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
