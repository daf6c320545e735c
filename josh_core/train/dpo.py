"""DPO with TRL's DPOTrainer on exported prompt / chosen / rejected rows.

The loss is on the completions only: DPOTrainer tokenizes the prompt (with the generation
prompt) and prompt + chosen / prompt + rejected, and compares the log-probabilities of the two
completions' tokens under the policy and the reference (the base with the adapter disabled, or
a frozen copy of a continued adapter).
"""

from __future__ import annotations

from typing import Any

from josh_core.train.config import DPOTrainConfig
from josh_core.train.data import TrainingData


def build_dpo_trainer(model, tokenizer, data: TrainingData, args: dict[str, Any], callbacks: list,
                      config: DPOTrainConfig):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer(
        model=model,
        args=DPOConfig(**args, beta=config.beta),
        train_dataset=Dataset.from_list(list(data.rows)),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
