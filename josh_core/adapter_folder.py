"""What makes a folder a usable LoRA adapter, and the files a JOSH training keeps in it.

`josh train` writes `josh_training.json` last, once the adapter is complete, and keeps
`josh_resume.json` in the folder while a training runs (with its checkpoints). A folder with the
second and not the first holds a training that has not finished (still running, or killed):
its adapter files are missing or are a stale half. Agent SPECs (`embedded@DIR`, `hf:PATH@DIR`)
are checked with `adapter_problem` before any model is loaded, so such a folder is refused in
a line instead of failing after the base model loads, or playing an old adapter silently.

Low level on purpose: the launch checks (`josh_core.launch`) and the trainer both use it.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST_FILE = "josh_training.json"  # written last: the adapter in the folder is complete
RESUME_FILE = "josh_resume.json"  # a training into the folder is running or was interrupted
STAGING_DIR = ".josh-partial"  # the new adapter and its metrics, until they replace the old
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# Files and folders a JOSH training may leave in its folder (with `checkpoint-N/`).
JOSH_MARKERS = (MANIFEST_FILE, RESUME_FILE, STAGING_DIR)


def unfinished_training(folder: str | Path) -> str | None:
    """The refusal for a folder whose first JOSH training has not finished, else None."""
    path = Path(folder).expanduser()
    if (path / RESUME_FILE).exists() and not (path / MANIFEST_FILE).exists():
        return (f"the adapter in {folder} is incomplete: its training was interrupted or is still "
                "running (rerun the same `josh train` to resume it)")
    return None


def adapter_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be loaded as a LoRA adapter, or None when it can."""
    path = Path(folder).expanduser()
    if not path.exists():
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
