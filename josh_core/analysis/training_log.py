"""A training's logged metrics read for people: the per-step rows apart from the summary row.

`josh train` records every log transformers emits. With logging every step that is one row per
optimiser step (step, loss, learning rate, grad norm; KTO and DPO add rewards) and, at the end,
one more row for the same last step holding the run's summary (train_loss: the mean loss over
the run, train_runtime, samples and steps per second) and no `loss`. Counting or drawing that
row as a step shows three steps for `--max-steps 2`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

SUMMARY_KEYS = ("train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second")


class TrainingLog(BaseModel):
    steps: list[dict[str, Any]] = Field(default_factory=list)  # one per logged optimiser step
    evaluations: list[dict[str, Any]] = Field(default_factory=list)  # eval_* rows, if any
    summary: dict[str, Any] | None = None  # the end-of-run row (train_loss, train_runtime, ...)

    @property
    def last_step(self) -> int:
        return max((int(r.get("step") or 0) for r in self.steps), default=0)

    @property
    def max_steps(self) -> int | None:
        """The run's planned optimiser steps, as the trainer logged them."""
        for row in reversed(self.steps + ([self.summary] if self.summary else [])):
            if isinstance(row.get("max_steps"), int) and row["max_steps"] > 0:
                return row["max_steps"]
        return None

    @property
    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.steps if _number(r.get("loss"))]

    def reward_columns(self) -> list[str]:
        """The logged reward series (KTO / DPO: rewards/chosen, rewards/rejected, margins...)."""
        names: list[str] = []
        for row in self.steps:
            for key, value in row.items():
                if key.startswith("rewards/") and _number(value) and key not in names:
                    names.append(key)
        return names


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def split_log(metrics: list[dict[str, Any]]) -> TrainingLog:
    """Per-step rows, evaluation rows and the summary row of a training's metrics."""
    log = TrainingLog()
    for row in metrics:
        if any(key in row for key in SUMMARY_KEYS):
            log.summary = row
        elif any(key.startswith("eval_") for key in row):
            log.evaluations.append(row)
        else:
            log.steps.append(row)
    return log


def axis_range(values: list[float], margin: float = 0.08) -> tuple[float, float] | None:
    """A y-axis domain that holds every value with a margin above and below, so no point sits
    on the chart's border (None without finite values)."""
    finite = [float(v) for v in values if _number(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    span = high - low or max(abs(high), 1.0) * 0.1
    return low - margin * span, high + margin * span
