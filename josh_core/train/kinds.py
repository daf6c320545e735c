"""The training kinds: one table that `josh train`, `josh selftrain`, the runner and the app read.

A kind is

- a **config dataclass** in TRL's style (a `TrainConfig` subclass whose own fields carry
  `metadata={"help": ...}`): its fields are the kind's settings everywhere, in `--config`
  files, as `josh train --KEY VALUE`, as `josh selftrain --set KIND.KEY=VALUE` and in the app's
  form, with the defaults written once, in the class;
- a **trainer**: a function building a transformers `Trainer` (TRL's or our own) from
  `TrainerInputs` (config.py);
- what it learns from: `export`, the `josh export --kind` whose JSONL its `--data` is (offline
  kinds), or `episodes`, a function giving the scenarios it plays itself (online kinds);
- and one `register(...)` line below.

Adding a kind is its module (config class and trainer) and its line here; docs/training.md,
"How to add a training kind", walks through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from josh_core.train.config import (
    DPOTrainConfig,
    KTOTrainConfig,
    SFTTrainConfig,
    TrainConfig,
    TrainerInputs,
    TrainingConfigError,
    resolve_config,
)
from josh_core.train.data import TrainingData, TrainingDataError, load_training_data
from josh_core.train.dpo import build_dpo_trainer
from josh_core.train.grpo import GRPOTrainConfig, build_grpo_trainer, grpo_episodes
from josh_core.train.kto import build_kto_trainer
from josh_core.train.sft import build_sft_trainer

# The settings the app's form offers for every kind (each kind adds its own `form`).
COMMON_FORM = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
               "gradient_accumulation_steps", "max_length", "warmup_steps", "lora_r", "lora_alpha")


@dataclass(frozen=True)
class TrainingKind:
    name: str  # `--kind NAME`
    title: str  # how people write it: "SFT"
    config: type[TrainConfig]
    build: Callable[[TrainerInputs], Any]  # -> a transformers Trainer
    summary: str  # one line: what it learns from (the CLI's help, the app)
    export: str | None = None  # offline: the `josh export --kind` its --data is
    # online: (the --data scenario file or None, the config) -> the scenarios it plays
    episodes: Callable[[str | Path | None, Any], TrainingData] | None = None
    form: tuple[str, ...] = ()  # its own settings the app's form offers, besides COMMON_FORM

    @property
    def online(self) -> bool:
        """It plays the environment itself (no exported data)."""
        return self.export is None

    def training_data(self, data: str | Path | None, config: TrainConfig) -> TrainingData:
        """What the training learns from: the exported JSONL (checked), or the scenarios it plays."""
        if self.episodes is not None:
            return self.episodes(data, config)
        if data is None:
            raise TrainingDataError(f"--data is required for {self.name}: a `josh export --kind {self.export}` JSONL")
        assert self.export is not None
        return load_training_data(data, self.export)

    def form_settings(self) -> tuple[str, ...]:
        names = {f.name for f in dataclasses.fields(self.config)}
        return tuple(n for n in (*COMMON_FORM, *self.form) if n in names)


KINDS: dict[str, TrainingKind] = {}


def register(kind: TrainingKind) -> TrainingKind:
    if not (kind.export is None) ^ (kind.episodes is None):
        raise ValueError(f"training kind {kind.name}: give exactly one of export (offline) and episodes (online)")
    KINDS[kind.name] = kind
    return kind


register(TrainingKind("sft", "SFT", SFTTrainConfig, build_sft_trainer, export="sft",
                      summary="supervised fine-tuning on ideal-path conversations"))
register(TrainingKind("kto", "KTO", KTOTrainConfig, build_kto_trainer, export="kto",
                      summary="desirable (ideal) and undesirable (negative) generations", form=("beta",)))
register(TrainingKind("dpo", "DPO", DPOTrainConfig, build_dpo_trainer, export="dpo",
                      summary="ideal vs negative pairs of one turn", form=("beta",)))
register(TrainingKind("grpo", "GRPO", GRPOTrainConfig, build_grpo_trainer, episodes=grpo_episodes,
                      summary="online RL: groups of the policy's own conversations in the environment, scored by it",
                      form=("num_generations", "max_turns", "limit", "beta")))


def names() -> list[str]:
    return list(KINDS)


def get_kind(name: str) -> TrainingKind:
    if name not in KINDS:
        raise TrainingConfigError(f"unknown training kind {name!r}: expected one of {', '.join(KINDS)}")
    return KINDS[name]


def check_kind(name: str) -> str:
    return get_kind(name).name


def build_config(
    kind: str, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The kind's defaults, then the file's settings (top level, then its `[kind]` table), then
    the overrides (None values skipped); TrainingConfigError for anything unusable."""
    return resolve_config(get_kind(kind).config, kind, config_file, overrides, KINDS)


@dataclass(frozen=True)
class Setting:
    """One setting of a kind, as its config class declares it."""

    name: str
    default: Any
    help: str
    type: str  # the annotation as written ("int | None")
    declared_in: str  # the class that declares or overrides it


def settings(kind: str) -> list[Setting]:
    """Every setting of `kind` with its default and help (the base class's help where the kind
    only overrides a default)."""
    cls = get_kind(kind).config
    base_help = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}
    defaults = cls()
    declared = {}
    for klass in reversed(cls.__mro__):
        for name in getattr(klass, "__annotations__", {}):
            declared[name] = klass.__name__
    return [Setting(f.name, getattr(defaults, f.name), f.metadata.get("help") or base_help.get(f.name, ""),
                    str(f.type), declared.get(f.name, cls.__name__))
            for f in dataclasses.fields(cls)]


def setting_value(kind: str, name: str, raw: str) -> Any:
    """A setting of `kind` given as text (`josh train --NAME VALUE`, `josh selftrain --set
    KIND.NAME=VALUE`): JSON where it reads as JSON (numbers, true/false, null, lists, objects),
    else the text; a setting that can only be text keeps the text as it is ("3" stays "3").
    TrainingConfigError for a name the kind does not have."""
    import json

    found = {s.name: s for s in settings(kind)}
    if name not in found:
        raise TrainingConfigError(f"unknown {kind} setting: {name}; known: {', '.join(sorted(found))}")
    types = {part.strip() for part in found[name].type.split("|")}
    if types <= {"str", "None"}:
        return None if raw == "null" and "None" in types else raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
