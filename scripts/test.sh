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
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
# Ray binds its nodes to the machine's interface address whenever it has one; in a network
# namespace of their own with only loopback, the Ray tests' cluster lives on 127.0.0.1 alone.
if unshare --net true 2>/dev/null; then
  .venv/bin/python -m pytest -q --ignore=tests/test_ray_rollout.py
  exec unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m pytest -q tests/test_ray_rollout.py'
fi
echo "unshare --net is not allowed here: the Ray tests' cluster uses this machine's interface address" >&2
exec .venv/bin/python -m pytest -q
