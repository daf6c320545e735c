#!/usr/bin/env bash
# Create .venv and install the workbench into it. Idempotent: a second run installs nothing new.
# torch is pinned first so pip takes a build that suits the machine (the CPU wheel where one is
# provided locally, the default CUDA wheel from PyPI elsewhere) instead of whatever a range picks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${JOSH_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "installed: $(.venv/bin/josh --help >/dev/null && echo 'josh CLI ok')"
