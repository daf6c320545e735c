"""What makes a folder a usable LoRA adapter, and the files a JOSH training keeps in it.

`josh train` writes `josh_training.json` last, once the adapter is complete, and keeps
`josh_resume.json` in the folder while a training runs (with its checkpoints). A folder with the
second and not the first holds a training that has not finished (still running, or killed):
its adapter files are missing or are a stale half. Agent SPECs (`embedded@DIR`, `hf:PATH@DIR`)
are checked with `adapter_problem` before any model is loaded, so such a folder is refused in
a line instead of failing after the base model loads, or playing an old adapter silently.

Shipped adapters: the repository's `adapters/` folder holds our own trained adapters, each in
a folder with its manifest (`josh adapters`, `josh_core/train/shipping.py`). An adapter
written `shipped:NAME` (`embedded@shipped:NAME`) is that folder whatever the working directory,
so a stored run that names it resumes from anywhere. `JOSH_SHIPPED_ADAPTERS` points elsewhere
(tests).

Low level on purpose: the launch checks (`josh_core.launch`), the backends and the trainer use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MANIFEST_FILE = "josh_training.json"  # written last: the adapter in the folder is complete
RESUME_FILE = "josh_resume.json"  # a training into the folder is running or was interrupted
STAGING_DIR = ".josh-partial"  # the new adapter and its metrics, until they replace the old
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# Files and folders a JOSH training may leave in its folder (with `checkpoint-N/`).
JOSH_MARKERS = (MANIFEST_FILE, RESUME_FILE, STAGING_DIR)

SHIPPED_PREFIX = "shipped:"  # `embedded@shipped:NAME`: the repository's adapters/NAME
SHIPPED_DIR_ENV = "JOSH_SHIPPED_ADAPTERS"
# A shipped adapter's name is one folder name: no path, nothing hidden.
SHIPPED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def shipped_adapters_dir() -> Path:
    """The folder of shipped adapters: `JOSH_SHIPPED_ADAPTERS`, else `adapters/` at the root of
    the repository this code runs from (an installed wheel has none: run from a clone)."""
    override = os.environ.get(SHIPPED_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parent.parent / "adapters"


def check_shipped_name(name: str) -> str:
    """`name` if it can name a shipped adapter's folder, else ValueError saying why."""
    if not SHIPPED_NAME.fullmatch(name or ""):
        raise ValueError(f"{name!r} cannot name a shipped adapter: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 64 characters")
    return name


def resolve_adapter(adapter: str) -> str:
    """The folder an adapter reference names: `shipped:NAME` -> the shipped adapters' NAME
    folder (ValueError for a name that is not one folder name); anything else as given."""
    if adapter.startswith(SHIPPED_PREFIX):
        name = check_shipped_name(adapter[len(SHIPPED_PREFIX):])
        return str(shipped_adapters_dir() / name)
    return adapter


def unfinished_training(folder: str | Path) -> str | None:
    """The refusal for a folder whose first JOSH training has not finished, else None."""
    try:
        path = Path(resolve_adapter(str(folder))).expanduser()
    except ValueError as error:
        return str(error)
    if (path / RESUME_FILE).exists() and not (path / MANIFEST_FILE).exists():
        return (f"the adapter in {folder} is incomplete: its training was interrupted or is still "
                "running (rerun the same `josh train` to resume it)")
    return None


def adapter_problem(folder: str | Path) -> str | None:
    """Why `folder` (a path or `shipped:NAME`) cannot be loaded as a LoRA adapter, or None when it can."""
    try:
        path = Path(resolve_adapter(str(folder))).expanduser()
    except ValueError as error:
        return str(error)
    if not path.exists():
        if str(folder).startswith(SHIPPED_PREFIX):
            return f"no shipped adapter {str(folder)[len(SHIPPED_PREFIX):]!r} in {path.parent} (`josh adapters list`)"
        return f"no adapter folder at {folder}"
    if not path.is_dir():
        return f"{folder} is a file, not an adapter folder"
    unfinished = unfinished_training(path)
    if unfinished:
        return unfinished
    if not (path / ADAPTER_CONFIG).is_file():
        return f"no LoRA adapter in {folder} ({ADAPTER_CONFIG} missing)"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return f"no LoRA adapter weights in {folder} ({' or '.join(WEIGHT_FILES)} missing)"
    return None
