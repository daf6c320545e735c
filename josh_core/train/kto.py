"""KTO with TRL's KTOTrainer on exported prompt / completion / label rows.

The loss is on the completion only: KTOTrainer tokenizes `prompt` with the generation prompt
and `prompt + completion`, and computes log-probabilities over the completion's tokens (the
chat template's end-of-turn token included). The reference model is the starting model: the
base with the adapter disabled, or, when an adapter is continued, a frozen copy of it
("ref" adapter, made by KTOTrainer).

`josh export --kind kto` writes desirable rows first. KTOTrainer samples sequentially (its KL
estimate pairs rows within a batch), so the rows are shuffled here with the config's seed, or
the first half of a run would see desirable rows only.
"""

from __future__ import annotations

import random
from typing import Any

from josh_core.train.config import KTOTrainConfig, balanced_kto_weights
from josh_core.train.data import TrainingData


def kto_weights(config: KTOTrainConfig, data: TrainingData) -> tuple[float, float]:
    if config.balance_weights:
        return balanced_kto_weights(*data.label_counts())
    return config.desirable_weight, config.undesirable_weight


def build_kto_trainer(model, tokenizer, data: TrainingData, args: dict[str, Any], callbacks: list,
                      config: KTOTrainConfig):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    desirable, undesirable = kto_weights(config, data)
    rows = list(data.rows)
    random.Random(config.seed).shuffle(rows)
    kto_config = KTOConfig(
        **args, beta=config.beta, desirable_weight=desirable, undesirable_weight=undesirable
    )
    return KTOTrainer(
        model=model,
        args=kto_config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
