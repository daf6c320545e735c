"""Training: TRL + PEFT trainers (SFT, KTO, DPO) on `josh export` JSONL, producing LoRA adapters
that `embedded@DIR` / `hf:PATH@DIR` load as agents. See docs/training.md.

    from josh_core.train import train
    result = train("kto", "kto.jsonl", "embedded", "out/kto-1", db="josh.duckdb")

Heavy imports (torch, transformers, trl) happen only when a training runs.
"""

from josh_core.train.config import (
    DPOTrainConfig,
    KTOTrainConfig,
    SFTTrainConfig,
    TrainConfig,
    TrainingConfigError,
    build_config,
)
from josh_core.train.data import TrainingDataError, load_training_data
from josh_core.train.runner import TrainingResult, run_training, train

__all__ = [
    "DPOTrainConfig",
    "KTOTrainConfig",
    "SFTTrainConfig",
    "TrainConfig",
    "TrainingConfigError",
    "TrainingDataError",
    "TrainingResult",
    "build_config",
    "load_training_data",
    "run_training",
    "train",
]
