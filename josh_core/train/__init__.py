"""Training: LoRA adapters from the workbench's data that `embedded@DIR` / `hf:PATH@DIR` load as
agents. The kinds (SFT, KTO, DPO on `josh export` JSONL; online ones that play the environment
themselves) are registered in `josh_core/train/kinds.py`. See docs/training.md.

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
)
from josh_core.train.data import TrainingDataError, load_training_data
from josh_core.train.grpo import GRPOTrainConfig
from josh_core.train.kinds import KINDS, TrainingKind, build_config, get_kind
from josh_core.train.runner import TrainingResult, run_training, train

__all__ = [
    "DPOTrainConfig",
    "GRPOTrainConfig",
    "KINDS",
    "KTOTrainConfig",
    "SFTTrainConfig",
    "TrainConfig",
    "TrainingConfigError",
    "TrainingDataError",
    "TrainingKind",
    "TrainingResult",
    "build_config",
    "get_kind",
    "load_training_data",
    "run_training",
    "train",
]
