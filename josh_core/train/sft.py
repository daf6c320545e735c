"""SFT with TRL's SFTTrainer on exported conversations, loss on the agent's tokens only.

TRL's own `assistant_only_loss=True` needs a chat template with `{% generation %}` markers;
TRL ships training templates for some model families only, and not for SmolLM2's. So rows are
tokenized here: the conversation is rendered with the model's own chat template (exactly as the
inference backends render prompts), and a token is marked as the assistant's when it starts
inside an assistant message's span, found by rendering the conversation up to that message
(with the generation prompt) and through it. The span covers the message and its end-of-turn
token, so the model learns to stop. SFTTrainer takes the pre-tokenized rows
(`input_ids` + `assistant_masks`) as they are: it builds labels from the mask (-100 elsewhere),
truncates to max_length and drops rows left with nothing to learn.
"""

from __future__ import annotations

import json
from typing import Any

from josh_core.train.config import TrainerInputs
from josh_core.train.data import TrainingData, TrainingDataError


def _render(tokenizer, messages: list[dict[str, Any]], tools: Any, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict[str, Any]], tools: Any = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant messages."""
    full = _render(tokenizer, messages, tools)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], tools, generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], tools)
        if not (through.startswith(before) and full.startswith(through)):
            raise TrainingDataError(
                "the model's chat template does not render a conversation as the concatenation of its "
                "turns, so the assistant's tokens cannot be told apart for the loss"
            )
        if len(through) > len(before):
            spans.append((len(before), len(through)))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict[str, Any]], tools: Any = None) -> dict[str, list[int]]:
    """`input_ids` and `assistant_masks` (1 on the assistant's tokens) of one conversation."""
    full, spans = assistant_spans(tokenizer, messages, tools)

    def inside(position: int) -> int:
        return int(any(start <= position < end for start, end in spans))

    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        mask = [inside(start) if end > start else 0 for start, end in encoded["offset_mapping"]]
        return {"input_ids": ids, "assistant_masks": mask}
    # Slow tokenizers have no offsets: tokenize the pieces between span edges one by one.
    edges = sorted({0, len(full), *(p for span in spans for p in span)})
    ids, mask = [], []
    for start, end in zip(edges, edges[1:]):
        piece = tokenizer(full[start:end], add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([inside(start)] * len(piece))
    return {"input_ids": ids, "assistant_masks": mask}


def sft_dataset(data: TrainingData, tokenizer):
    from datasets import Dataset

    rows = []
    for row in data.rows:
        tools = json.loads(row["tools"]) if row.get("tools") else None
        rows.append(tokenize_conversation(tokenizer, row["messages"], tools))
    return Dataset.from_list(rows)


def build_sft_trainer(inputs: TrainerInputs):
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**inputs.args, packing=False, dataset_num_proc=None)
    return SFTTrainer(
        model=inputs.model,
        args=config,
        train_dataset=sft_dataset(inputs.data, inputs.tokenizer),
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )
