"""What an export would write, before writing it: how many conversations pass the filters,
why the others do not, how many rows come out, and the first rows themselves. The same
extraction as `josh export` (josh_core.extract), without the file.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from josh_core.extract import ExportOptions, ExtractStats, examples_for, iter_rows, load_sources
from josh_core.search.labels import compute_labels, ideal_path
from josh_core.storage import reads
from josh_core.storage.db import Database


class ExportPlan(BaseModel):
    conversations: int  # in scope (the run, or the whole database)
    not_finished: dict[str, int] = Field(default_factory=dict)  # status -> count (running, failed, ...)
    below_reward: int = 0  # finished, under the reward filter
    eligible: int = 0  # finished and passing the reward filter
    giving_rows: int = 0  # eligible conversations that give at least one row
    no_rows: dict[str, int] = Field(default_factory=dict)  # reason -> eligible conversations giving none
    rows: int = 0  # rows the export writes (after de-duplication)
    desirable: int = 0  # KTO rows with `label: true`
    undesirable: int = 0  # KTO rows with `label: false`
    preview: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float = 0.0


def _no_rows_reason(source, options: ExportOptions) -> str:
    tree = source.tree
    labels = compute_labels(tree, source.overrides)
    ideal_agents = [n for n in ideal_path(tree) if n.kind == "agent"]
    if not ideal_agents:
        return "no agent turn on the ideal path (the search reached no goal)"
    if options.kind == "sft":
        if any(labels[n.id] != "ideal" for n in ideal_agents):
            return "an annotator relabelled a turn of the ideal path"
        if options.drop_errors and any(n.has_errors for n in ideal_agents):
            return "the ideal path has a turn with an error (drop turns with errors is on)"
        return "nothing to write"
    negatives = [nid for nid, label in labels.items() if label == "negative"]
    if options.kind == "dpo" and not negatives:
        return "no negative alternative beside an ideal turn"
    if options.drop_errors and all(n.has_errors for n in ideal_agents):
        return "every ideal turn has an error (drop turns with errors is on)"
    if options.kind == "dpo":
        return "the alternatives differ from the ideal turn only after an API result"
    return "nothing to write"


def plan_export(db: Database, options: ExportOptions, run_id: str | None = None, preview: int = 5) -> ExportPlan:
    started = time.perf_counter()
    conversations = reads.list_conversations(db, run_id=run_id)
    statuses = Counter(c.status for c in conversations)
    finished = [c for c in conversations if c.status == "done"]
    passing = [c for c in finished if options.min_reward is None or (c.reward or 0.0) >= options.min_reward - 1e-9]
    plan = ExportPlan(
        conversations=len(conversations),
        not_finished={status: n for status, n in statuses.items() if status != "done"},
        below_reward=len(finished) - len(passing),
        eligible=len(passing),
    )
    reasons: Counter[str] = Counter()
    giving = 0
    for source in load_sources(db, run_id=run_id, use_annotations=options.use_annotations,
                               min_reward=options.min_reward, prompt=options.prompt):  # fmt: skip
        if examples_for(source, options):
            giving += 1
        else:
            reasons[_no_rows_reason(source, options)] += 1
    stats = ExtractStats()
    rows = iter_rows(
        load_sources(db, run_id=run_id, use_annotations=options.use_annotations, min_reward=options.min_reward,
                     prompt=options.prompt),
        options, stats,
    )  # fmt: skip
    for row in rows:
        if len(plan.preview) < preview:
            plan.preview.append(row)
        if options.kind == "kto":
            if row.get("label"):
                plan.desirable += 1
            else:
                plan.undesirable += 1
    plan.rows = stats.rows
    plan.giving_rows = stats.conversations
    if giving > stats.conversations:
        reasons["only rows another conversation already gives (each row is written once)"] += giving - stats.conversations
    plan.no_rows = dict(reasons)
    plan.seconds = time.perf_counter() - started
    return plan


# KTO (Ethayarajh et al. 2024) and TRL's KTOTrainer ask for desirable_weight * desirable rows
# over undesirable_weight * undesirable rows between 1 and 4/3.
KTO_RATIO_RANGE = (1.0, 4 / 3)


class KtoBalance(BaseModel):
    desirable: int
    undesirable: int
    one_sided: bool  # only one label: KTO has nothing to contrast
    # desirable_weight range (undesirable_weight 1.0) that lands in KTO_RATIO_RANGE
    weight_low: float | None = None
    weight_high: float | None = None


def kto_balance(desirable: int, undesirable: int) -> KtoBalance:
    """The two sides of a KTO export and the desirable weight TRL's guidance asks for."""
    one_sided = desirable == 0 or undesirable == 0
    if one_sided:
        return KtoBalance(desirable=desirable, undesirable=undesirable, one_sided=desirable + undesirable > 0)
    base = undesirable / desirable
    return KtoBalance(desirable=desirable, undesirable=undesirable, one_sided=False,
                      weight_low=base * KTO_RATIO_RANGE[0], weight_high=base * KTO_RATIO_RANGE[1])  # fmt: skip


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name_part(text: str, limit: int = 60) -> str:
    """Stored text (a run id) as one file-name part: letters, digits, `_` and `-` only, so no
    separator, `..` or leading dot can take the file out of its folder."""
    cleaned = _UNSAFE.sub("_", text).strip("_")[:limit]
    return cleaned or "run"


def export_file_name(folder: str | Path, kind: str, fmt: str, run_id: str | None, now: float | None = None) -> Path:
    """A new file in `folder` (never outside it: the run id is stored text, cleaned first):
    kind, format, run and time in the name, never an existing file."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    base = f"{safe_name_part(kind)}-{safe_name_part(fmt)}-{safe_name_part(run_id) if run_id else 'all'}-{stamp}"
    folder = Path(folder)
    candidate, n = folder / f"{base}.jsonl", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{base}-{n}.jsonl"
    return candidate
