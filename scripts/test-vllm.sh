#!/usr/bin/env bash
# The vLLM tests (tests/test_vllm_cpu.py) on vLLM's CPU build, in the venv of setup-vllm.sh:
# the offline `vllm:` backend and `vllm serve` behind `openai:`, with the embedded model.
# JOSH_REQUIRE_VLLM=1 makes a missing vLLM a failure rather than a skip. Several minutes: each
# engine start takes about half a minute here. Extra arguments go to pytest.
#   JOSH_VLLM_VENV   the venv (default .venv-vllm; built by scripts/setup-vllm.sh when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JOSH_VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/vllm" ] || bash scripts/setup-vllm.sh
export JOSH_REQUIRE_VLLM=1
# On a machine busy with other work a niced engine step can take minutes; vLLM's default of 300 s
# per step then kills the engine core ("RPC call to execute_model timed out", seen here).
export VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=${VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS:-1800}
# The backends' unit tests (request building) run here too, now against the installed vLLM.
exec "$VENV/bin/python" -m pytest -q tests/test_vllm_cpu.py tests/test_llm_backends.py "$@"
