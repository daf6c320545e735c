"""Trainer configurations, one dataclass per method, in TRL's style (field help in metadata).

Where the defaults come from:

- The paper, appendix B (/work/shared/paper, "JOSH Training Details"): meta-llama-3-8B was
  trained "using LoRA and 4-bit quantization"; SFT "for 3 epochs with a learning rate of
  2e-5"; KTO "for 1 epoch with a learning rate of 5e-7 and a beta of 0.1".
- The paper's released training scripts (github.com/asappresearch/josh-llm-simulation-training,
  `josh_train/finetune/sft_agent.py` and `kto_ft.py`): SFT with LoRA r=8 (alpha 32, dropout
  0.05, all seven attention/MLP projections), lr 2e-4, 2 epochs, batch 1 x 8 accumulation,
  5 warmup steps, weight decay 0.01, linear schedule, seed 42; KTO with LoRA r=64 (alpha 64),
  lr 5e-7, 1 epoch, beta 0.1, desirable_weight 1.0, undesirable_weight 2.71, batch 1 x 16
  accumulation, warmup ratio 0.1, cosine schedule, 4-bit NF4 with double quantisation, bf16.
  The SFT defaults below follow that script (where the paper's text says 3 epochs at 2e-5),
  except lora_alpha 16, the alpha of TRL's LoRA examples (`trl/scripts/sft.py`, `dpo.py`).
- TRL's documentation and example scripts (TRL 1.x): KTO needs a per-device batch of at least
  2 (its KL estimate pairs each completion with another prompt of the same batch; KTOTrainer
  refuses batch 1), so KTO runs 2 x 8 = the script's effective 16. KTO class-balance weights:
  `desirable_weight * n_desirable / (undesirable_weight * n_undesirable)` should lie in
  [1, 4/3] (KTO paper Eq. 8, as KTOTrainer's warning and the KTO trainer docs state);
  `balance_weights=True` picks the middle of that range. DPO (the paper trains no DPO model):
  lr 5e-6 from TRL's LoRA example (`trl/scripts/dpo.py`: "--learning_rate 5.0e-6 ... --use_peft";
  5e-7 for full fine-tuning), beta 0.1 (DPOConfig's default), 1 epoch, LoRA r=8 / alpha 16 as SFT.

`max_length` defaults to 4096 tokens: the ReACT prompt with its demonstration is about 1,600
SmolLM2 tokens and the paper's Llama prompt about 3,000, and TRL's 1024 would drop every
KTO/DPO row whose prompt alone is longer.

A configuration is resolved as: the kind's defaults < a config file (JSON or TOML; top-level
keys apply to every kind, a table/object named after the kind to that kind only) < overrides
(the CLI flags, or `overrides=` of `josh_core.train.train`).

The kinds themselves (which config class and trainer each name means) are the registry's:
`josh_core/train/kinds.py`. This module holds what every kind shares: the base settings, the
file reader, the checks, and `TrainerInputs`, what a kind's trainer is built from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from josh_core.train.guards import TrainingConfigError, check_finite

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: JSON config files only
    tomllib = None  # type: ignore[assignment]


@dataclass
class TrainConfig:
    """Settings every method shares."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Initial AdamW learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimiser steps (smoke runs); -1: use epochs."}
    )
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Rows per forward pass."})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "Forward passes per optimiser step."})
    max_length: int | None = field(
        default=4096, metadata={"help": "Tokens per sequence (prompt + completion); longer ones are cut."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of LoRA init, shuffling and dropout."})
    warmup_steps: float = field(
        default=0.0, metadata={"help": "Warmup: steps (>= 1) or a fraction of the run (< 1)."}
    )
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    logging_steps: int = field(
        default=1, metadata={"help": "Log (metrics.jsonl, database row, on_log) every N steps."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (ignored when continuing an adapter)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Modules that get adapters; 'all-linear': every linear layer but the LM head."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "QLoRA: load the base in 4-bit NF4 (applied only with CUDA and bitsandbytes)."},
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None: on when the GPU supports it."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations to save memory; None: on CUDA only."}
    )
    checkpoint_minutes: float | None = field(
        default=10.0,
        metadata={"help": "Save a resumable checkpoint into OUT after the first step that ends this many "
                          "minutes after the last save (0: every step; None: never). Rerunning the same "
                          "training into the same OUT resumes from it."},
    )
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Extra arguments passed as they are to the TRL config (e.g. save_steps)."},
    )

    kind = "base"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Checks of this kind's own settings (after the shared ones); TrainingConfigError."""

    def resolved(self, data: Any) -> dict[str, Any]:
        """The settings as recorded with the training (and compared on resume): the fields, plus
        whatever this kind derives from its data."""
        return self.to_dict()


@dataclass
class SFTTrainConfig(TrainConfig):
    """SFT on whole ideal-path conversations; loss on the assistant's tokens only."""

    learning_rate: float = 2e-4  # ASAPP sft_agent.py (LoRA); the paper's text: 2e-5
    num_train_epochs: float = 2.0  # ASAPP sft_agent.py; the paper's text: 3
    per_device_train_batch_size: int = 1  # ASAPP sft_agent.py
    gradient_accumulation_steps: int = 8  # ASAPP sft_agent.py
    warmup_steps: float = 5  # ASAPP sft_agent.py
    weight_decay: float = 0.01  # ASAPP sft_agent.py
    lr_scheduler_type: str = "linear"  # ASAPP sft_agent.py
    lora_r: int = 8  # ASAPP sft_agent.py
    lora_alpha: int = 16  # TRL's LoRA examples (ASAPP used 32)

    kind = "sft"


@dataclass
class KTOTrainConfig(TrainConfig):
    """KTO on single generations labelled desirable / undesirable."""

    learning_rate: float = 5e-7  # paper appendix B; ASAPP kto_ft.py; TRL scripts/kto.py
    num_train_epochs: float = 1.0  # paper appendix B
    per_device_train_batch_size: int = 2  # TRL's KTOTrainer needs >= 2 (KL term)
    gradient_accumulation_steps: int = 8  # 2 x 8 = ASAPP kto_ft.py's effective batch of 16
    warmup_steps: float = 0.1  # ASAPP kto_ft.py (warmup_ratio 0.1)
    lr_scheduler_type: str = "cosine"  # ASAPP kto_ft.py
    lora_r: int = 64  # ASAPP kto_ft.py
    lora_alpha: int = 64  # ASAPP kto_ft.py
    beta: float = field(default=0.1, metadata={"help": "KTO beta (paper appendix B: 0.1)."})
    desirable_weight: float = field(default=1.0, metadata={"help": "Weight of desirable rows' losses."})
    undesirable_weight: float = field(
        default=2.71, metadata={"help": "Weight of undesirable rows' losses (ASAPP kto_ft.py: 2.71)."}
    )
    balance_weights: bool = field(
        default=False,
        metadata={"help": "Set the two weights from the data's class balance (TRL's recommended range)."},
    )

    kind = "kto"

    def weights(self, data: Any) -> tuple[float, float]:
        """(desirable_weight, undesirable_weight) for `data` (a TrainingData)."""
        if self.balance_weights:
            return balanced_kto_weights(*data.label_counts())
        return self.desirable_weight, self.undesirable_weight

    def check(self) -> None:
        if self.per_device_train_batch_size < 2:
            raise TrainingConfigError(
                "KTO needs per_device_train_batch_size >= 2 (TRL estimates its KL term from other rows of the batch)"
            )

    def resolved(self, data: Any) -> dict[str, Any]:
        desirable, undesirable = self.weights(data)
        n_desirable, n_undesirable = data.label_counts()
        return {**self.to_dict(), "desirable_weight": desirable, "undesirable_weight": undesirable,
                "desirable_rows": n_desirable, "undesirable_rows": n_undesirable}


@dataclass
class DPOTrainConfig(TrainConfig):
    """DPO on (ideal turn, negative sibling) pairs."""

    learning_rate: float = 5e-6  # TRL scripts/dpo.py, LoRA example
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    lora_r: int = 8
    lora_alpha: int = 16  # TRL scripts/dpo.py LoRA example
    beta: float = field(default=0.1, metadata={"help": "DPO beta (DPOConfig's default)."})

    kind = "dpo"


@dataclass
class TrainerInputs:
    """What a kind's trainer is built from (`TrainingKind.build` in kinds.py)."""

    model: Any  # the PeftModel to train
    tokenizer: Any
    data: Any  # TrainingData
    config: TrainConfig
    args: dict[str, Any]  # the TrainingArguments every kind shares (runner.trl_arguments)
    callbacks: list  # transformers TrainerCallbacks (metrics, checkpoints, progress)
    training_id: str
    base: str  # the agent SPEC trained from
    database: Any = None  # the Database the training is recorded in, or None


def read_config_file(path: str | Path, kind: str, kinds: Iterable[str] = ()) -> dict[str, Any]:
    """The settings a JSON or TOML file gives `kind`: its top-level keys, then its `kind` table
    (tables named after the other `kinds` are theirs)."""
    path = Path(path)
    if not path.exists() or path.is_dir():  # (pipes such as <(...) are fine)
        raise TrainingConfigError(f"no config file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TrainingConfigError(f"config file {path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise TrainingConfigError(f"config file {path} cannot be read: {error.strerror or error}") from None
    if tomllib is None and path.suffix.lower() == ".toml":
        raise TrainingConfigError(f"config file {path}: TOML needs Python 3.11+; use JSON")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:  # no telling suffix: JSON first, then TOML
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                if tomllib is None:
                    raise
                data = tomllib.loads(text)
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise TrainingConfigError(f"config file {path} is not valid JSON or TOML: {error}") from error
    except RecursionError:
        raise TrainingConfigError(f"config file {path} is nested too deeply to be settings") from None
    if not isinstance(data, dict):
        raise TrainingConfigError(f"config file {path} must hold an object / table of settings")
    sections = {*kinds, kind}
    settings = {k: v for k, v in data.items() if k not in sections}
    section = data.get(kind) or {}
    if not isinstance(section, dict):
        raise TrainingConfigError(f"config file {path}: [{kind}] must be a table of settings")
    settings.update(section)
    return settings


def resolve_config(
    cls: type[TrainConfig], kind: str, config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None, kinds: Iterable[str] = (),
) -> TrainConfig:
    """`cls`'s defaults, then the file's settings, then the overrides (None values skipped).
    `kinds.build_config` calls it with the registered class of a kind name."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        settings.update(read_config_file(config_file, kind, kinds))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TrainingConfigError(
            f"unknown {kind} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    try:
        config = cls(**settings)
    except TypeError as error:
        raise TrainingConfigError(str(error)) from error
    _validate(config)
    return config


def check_positive(config: TrainConfig, name: str, allow_zero: bool = False) -> None:
    """TrainingConfigError unless setting `name` is a positive number (or zero, if allowed)."""
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
        raise TrainingConfigError(f"{name} must be a positive number, got {value!r}")


def _validate(config: TrainConfig) -> None:
    # NaN passes `value < 0` and inf passes every bound: refuse both first, for every setting.
    check_finite(config.to_dict(), TrainingConfigError)

    def positive(name: str, allow_zero: bool = False) -> None:
        check_positive(config, name, allow_zero)

    for name in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                 "lora_r", "lora_alpha", "logging_steps"):
        positive(name)
    positive("num_train_epochs", allow_zero=config.max_steps > 0)
    positive("warmup_steps", allow_zero=True)
    if not isinstance(config.max_steps, int) or config.max_steps == 0 or config.max_steps < -1:
        raise TrainingConfigError(f"max_steps must be a positive integer (or -1 for epochs), got {config.max_steps!r}")
    if config.max_length is not None and (not isinstance(config.max_length, int) or config.max_length < 8):
        raise TrainingConfigError(f"max_length must be an integer of at least 8 tokens, got {config.max_length!r}")
    if config.checkpoint_minutes is not None:
        positive("checkpoint_minutes", allow_zero=True)
    if not isinstance(config.trl_args, dict):
        raise TrainingConfigError("trl_args must be an object / table")
    config.check()


def balanced_kto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) putting the weighted class ratio
    `desirable_weight * n_desirable / (undesirable_weight * n_undesirable)` at 7/6, the middle of
    TRL's recommended [1, 4/3]. Desirable rows keep weight 1.0 when they are at least as many as
    the undesirable ones (then undesirable rows are weighted up, as ASAPP's 2.71), else
    undesirable rows keep 1.0 and desirable ones are weighted up."""
    if n_desirable <= 0 or n_undesirable <= 0:
        return 1.0, 1.0
    ratio = 7 / 6
    if n_desirable >= n_undesirable:
        return 1.0, round(n_desirable / (n_undesirable * ratio), 4)
    return round(ratio * n_undesirable / n_desirable, 4), 1.0
