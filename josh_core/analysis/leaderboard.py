"""A comparison table of the evaluations stored in a database: one row per run.

An evaluation is a plain rollout run (`josh eval`, or `josh rollout` without `--josh`): its
configuration (environment, agent SPEC and style, the model behind it, user simulator, seed,
split) comes from the run record, its numbers from the same functions as `josh metrics` and `josh errors`.
JOSH runs can be listed too (`kinds=("plain", "josh")`), but their rewards come from a search
that tried many branches, so they do not compare with evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from josh_core.analysis.conversations import load_conversations
from josh_core.analysis.errors import error_rates
from josh_core.analysis.metrics import summarize
from josh_core.policies.factory import decoding_mode
from josh_core.storage import reads
from josh_core.storage.db import Database

LEADERBOARD_COLUMNS = [
    "run_id", "created_at", "kind", "env", "status", "agent_spec", "agent_name", "style", "temperature",
    "decoding", "user_spec", "seed", "split", "n", "not_done", "average_reward", "success_rate",
    "bad_api_use", "incorrect_format", "code_revision",
]  # fmt: skip


def leaderboard(
    db: Database | str, kinds: Sequence[str] = ("plain",), run_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """Stored runs of the given kinds (or the given run ids), best Average Reward first
    (ties: Success Rate, then the older run)."""
    database = db if isinstance(db, Database) else Database(db)
    runs = reads.list_runs(database)
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.id in wanted]
    else:
        runs = [r for r in runs if r.kind in kinds]
    rows = []
    for run in runs:
        loaded = load_conversations(database, run.id)
        summary = summarize(loaded.conversations)
        rates = error_rates(loaded.conversations)
        config = run.config or {}
        rows.append(
            {
                "run_id": run.id,
                "created_at": run.created_at,
                "kind": run.kind,
                "env": config.get("env") or "toolwoz",  # runs from before environments were ToolWOZ's
                "status": run.status,
                "agent_spec": run.agent_spec,
                "agent_name": run.agent_name,
                "style": config.get("style"),
                "temperature": config.get("temperature"),
                "decoding": decoding_mode(config.get("constrained"), config.get("grounded")),
                "user_spec": run.user_spec,
                "seed": run.seed,
                "split": config.get("split") or config.get("scenario_file"),
                "n": summary.n,
                "not_done": sum(loaded.not_done.values()),
                "average_reward": summary.average_reward,
                "success_rate": summary.success_rate,
                "bad_api_use": rates.bad_api_use,
                "incorrect_format": rates.incorrect_format,
                "code_revision": run.code_revision,
            }
        )
    rows.sort(key=lambda r: (-r["average_reward"], -r["success_rate"], r["created_at"], r["run_id"]))
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
