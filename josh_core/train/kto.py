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

from josh_core.train.config import KTOTrainConfig, TrainerInputs


def build_kto_trainer(inputs: TrainerInputs):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    config = inputs.config
    assert isinstance(config, KTOTrainConfig)
    desirable, undesirable = config.weights(inputs.data)
    rows = list(inputs.data.rows)
    random.Random(config.seed).shuffle(rows)
    kto_config = KTOConfig(
        **inputs.args, beta=config.beta, desirable_weight=desirable, undesirable_weight=undesirable
    )
    return KTOTrainer(
        model=inputs.model,
        args=kto_config,
        train_dataset=Dataset.from_list(rows),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )
