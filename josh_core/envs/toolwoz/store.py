"""Where prepared ToolWOZ data lives under the data dir, and how splits are written and read.

    <data_dir>/downloads/convlab-3.0.1.tar.gz      the fetched sdist (offline cache)
    <data_dir>/multiwoz/<domain>_db.json           cleaned databases
    <data_dir>/multiwoz/goal_model.json            goal statistics (converted from the pickle)
    <data_dir>/toolwoz-synth/<split>.jsonl         one Scenario per line; manifest.json
    <data_dir>/toolwoz-official/<split>.jsonl      official scenarios, when a user has them

official-test is not stored: it is the first 450 scenarios of test.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from josh_core.paths import data_dir
from josh_core.envs.toolwoz.types import DOMAINS, Scenario

SOURCES = {"synth": "toolwoz-synth", "official": "toolwoz-official"}
STORED_SPLITS = ("train", "val", "test")
SPLITS = ("train", "val", "test", "official-test")
OFFICIAL_TEST_SIZE = 450
DB_FILES = tuple(f"{domain}_db.json" for domain in DOMAINS)  # as named in the convlab sdist too
GOAL_MODEL_JSON = "goal_model.json"


def multiwoz_dir() -> Path:
    return data_dir() / "multiwoz"


def downloads_dir() -> Path:
    return data_dir() / "downloads"


def source_dir(source: str = "synth") -> Path:
    if source not in SOURCES:
        raise ValueError(f"unknown scenario source {source!r}; use one of {', '.join(SOURCES)}")
    return data_dir() / SOURCES[source]


def split_path(source: str, split: str) -> Path:
    return source_dir(source) / f"{split}.jsonl"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, ensure_ascii=False).encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_split(source: str, split: str, scenarios: Iterable[Scenario], folder: Path | None = None) -> int:
    """Write a split (into `folder` instead of the source's own folder when given: a
    preparation builds aside and swaps folders in when everything succeeded)."""
    lines = [s.model_dump_json() for s in scenarios]
    path = (folder / f"{split}.jsonl") if folder is not None else split_path(source, split)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return len(lines)


def read_split_lines(source: str, split: str) -> list[str]:
    path = split_path(source, split)
    return [line for line in path.read_text().splitlines() if line.strip()]


def manifest_path(source: str) -> Path:
    return source_dir(source) / "manifest.json"


def read_manifest(source: str) -> dict[str, Any] | None:
    path = manifest_path(source)
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def split_counts(counts: dict[str, int]) -> dict[str, int]:
    """Counts per split as printed by `josh data prepare`, official-test included."""
    out = {split: counts.get(split, 0) for split in STORED_SPLITS}
    out["official-test"] = min(OFFICIAL_TEST_SIZE, out["test"])
    return out
