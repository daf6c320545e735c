"""DPO with TRL's DPOTrainer on exported prompt / chosen / rejected rows.

The loss is on the completions only: DPOTrainer tokenizes the prompt (with the generation
prompt) and prompt + chosen / prompt + rejected, and compares the log-probabilities of the two
completions' tokens under the policy and the reference (the base with the adapter disabled, or
a frozen copy of a continued adapter).
"""

from __future__ import annotations

from josh_core.train.config import DPOTrainConfig, TrainerInputs


def build_dpo_trainer(inputs: TrainerInputs):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    config = inputs.config
    assert isinstance(config, DPOTrainConfig)
    return DPOTrainer(
        model=inputs.model,
        args=DPOConfig(**inputs.args, beta=config.beta),
        train_dataset=Dataset.from_list(list(inputs.data.rows)),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )
