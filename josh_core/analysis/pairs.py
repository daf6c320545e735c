"""The annotation queue of the Pairs page: at every user turn on a conversation's ideal path,
the ideal agent turn beside each alternative the search tried, across conversations; each
annotator's progress; and how far annotators agree.

Verdicts and the rule that resolves them into the labels export uses live in
josh_core/storage/annotations.py.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from itertools import combinations

from pydantic import BaseModel, Field

from josh_core.search.labels import compute_labels, ideal_path
from josh_core.search.tree import Node
from josh_core.storage import reads
from josh_core.storage.annotations import ANONYMOUS, Vote, latest_votes, resolve
from josh_core.storage.db import Database

VERDICT_WORDS = {"good": "good", "bad": "bad", "dont_use": "don't use", "skip": "skipped"}


class PairItem(BaseModel):
    """One alternative agent turn beside the ideal one, after the same user turn."""

    conversation_id: str
    run_id: str
    scenario_id: str
    user_node_id: str
    user_path: str
    ideal_node_id: str
    ideal_path: str
    alternative_node_id: str
    alternative_path: str
    tree_label: str  # the alternative's label from the tree alone (before annotations)
    # The alternative says and does exactly what the ideal turn does: no verdict on it can
    # change an export (a "good" repeats rows export writes once; a DPO pair of two equal
    # turns teaches nothing).
    identical: bool = False


def same_turn(first: Node, second: Node) -> bool:
    """Two agent turns that generated the same text (so the same calls) and said the same."""
    return first.text == second.text and [g.text for g in first.generations] == [g.text for g in second.generations]


def pair_queue(db: Database, run_id: str | None = None, chunk: int = 50) -> list[PairItem]:
    """Every pair of finished conversations (of one run, or all), in conversation order, then
    tree order. A user turn whose ideal continuation is unknown (the tree reached no goal past
    it) gives no pairs."""
    conversations = reads.list_conversations(db, run_id=run_id, status="done")
    items: list[PairItem] = []
    for start in range(0, len(conversations), chunk):
        part = conversations[start : start + chunk]
        trees = reads.load_trees(db, [c.id for c in part])
        for conversation in part:
            tree = trees.get(conversation.id)
            if tree is None:
                continue
            labels = compute_labels(tree)
            path = ideal_path(tree)
            for i, node in enumerate(path[:-1]):
                if node.kind != "user":
                    continue
                ideal = path[i + 1]
                for child in tree.children(node.id):
                    if child.id == ideal.id:
                        continue
                    items.append(
                        PairItem(
                            conversation_id=conversation.id, run_id=conversation.run_id,
                            scenario_id=conversation.scenario_id, user_node_id=node.id, user_path=node.path,
                            ideal_node_id=ideal.id, ideal_path=ideal.path, alternative_node_id=child.id,
                            alternative_path=child.path, tree_label=labels[child.id],
                            identical=same_turn(ideal, child),
                        )
                    )  # fmt: skip
    return items


def votes_by_node(db: Database, items: list[PairItem]) -> dict[str, list[Vote]]:
    conversation_ids = sorted({item.conversation_id for item in items})
    out: dict[str, list[Vote]] = defaultdict(list)
    if not conversation_ids:
        return out
    for vote in latest_votes(db, conversation_ids):
        out[vote.node_id].append(vote)
    return out


class Progress(BaseModel):
    total: int
    done: int  # pairs this annotator gave a verdict (skips included)
    next_pending: int | None  # index of the first pair still to do (None: all done)
    annotated_by_anyone: int


def progress(items: list[PairItem], votes: dict[str, list[Vote]], author: str) -> Progress:
    mine = [any(v.author == author for v in votes.get(item.alternative_node_id, [])) for item in items]
    pending = [i for i, done in enumerate(mine) if not done]
    return Progress(
        total=len(items),
        done=sum(mine),
        next_pending=pending[0] if pending else None,
        annotated_by_anyone=sum(1 for item in items if votes.get(item.alternative_node_id)),
    )


class PairwiseAgreement(BaseModel):
    first: str
    second: str
    both: int  # pairs both labelled
    agree: int
    kappa: float | None = None  # Cohen's kappa (None when undefined: one label only, or no pairs)


class Agreement(BaseModel):
    """Agreement of annotators on the labels they gave (skips left out)."""

    annotators: list[str] = Field(default_factory=list)
    multi: int = 0  # pairs labelled by two annotators or more
    unanimous: int = 0  # of those, pairs where every annotator gave the same label
    pairwise: list[PairwiseAgreement] = Field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.unanimous / self.multi if self.multi else None


def _kappa(pairs: list[tuple[str, str]]) -> float | None:
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    labels = {x for pair in pairs for x in pair}
    expected = sum((sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n) for k in labels)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(items: list[PairItem], votes: dict[str, list[Vote]]) -> Agreement:
    labelled: dict[str, dict[str, str]] = {}
    for item in items:
        given = {v.author: v.label for v in votes.get(item.alternative_node_id, []) if v.label is not None}
        if given:
            labelled[item.alternative_node_id] = given  # type: ignore[assignment]
    annotators = sorted({a for given in labelled.values() for a in given})
    multi = [given for given in labelled.values() if len(given) >= 2]
    pairwise = []
    for first, second in combinations(annotators, 2):
        both = [(g[first], g[second]) for g in labelled.values() if first in g and second in g]
        if both:
            pairwise.append(PairwiseAgreement(first=first, second=second, both=len(both),
                                              agree=sum(a == b for a, b in both), kappa=_kappa(both)))  # fmt: skip
    return Agreement(
        annotators=annotators,
        multi=len(multi),
        unanimous=sum(1 for given in multi if len(set(given.values())) == 1),
        pairwise=pairwise,
    )


def resolved_label(votes: list[Vote]) -> str | None:
    return resolve(votes)


def author_name(author: str) -> str:
    return author if author != ANONYMOUS else "(unnamed)"


class NodeVerdicts(BaseModel):
    """What people said about one node, kept apart from the search's label: the label their
    verdicts resolve to (what export uses) and each annotator's latest verdict."""

    resolved: str | None  # "ideal" | "negative" | "unexplored" | None (only skips)
    by_author: dict[str, str]  # author name -> verdict word, in name order

    @property
    def words(self) -> str:
        """"good: ann, bob · bad: cy" for a badge."""
        grouped: dict[str, list[str]] = defaultdict(list)
        for name, word in self.by_author.items():
            grouped[word].append(name)
        return " · ".join(f"{word}: {', '.join(names)}" for word, names in grouped.items())


def node_verdicts(votes: list[Vote]) -> dict[str, NodeVerdicts]:
    """node id -> the verdicts on it (nodes nobody judged are absent)."""
    by_node: dict[str, list[Vote]] = defaultdict(list)
    for vote in votes:
        by_node[vote.node_id].append(vote)
    out = {}
    for node_id, node_votes in by_node.items():
        words = {author_name(v.author): VERDICT_WORDS.get(v.verdict or "", _LABEL_VERDICT.get(v.label or "", "skipped"))
                 for v in sorted(node_votes, key=lambda v: author_name(v.author))}  # fmt: skip
        out[node_id] = NodeVerdicts(resolved=resolve(node_votes), by_author=words)
    return out


# Rows written before verdicts carry a label only: say it as the verdict that gives it.
_LABEL_VERDICT = {"ideal": "good", "negative": "bad", "unexplored": "don't use"}

_WORD = re.compile(r"\S+|\s+")


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """The words of two texts as (op, text) runs: "same", "del" (only in `before`), "add"
    (only in `after`). Whitespace stays with the words so the runs join back to the texts."""
    a, b = _WORD.findall(before), _WORD.findall(after)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("add", "".join(b[j1:j2])))
    return out


def turn_text(node: Node) -> str:
    """An agent turn as the annotator compares it: every generation (API calls and speech),
    else the spoken text."""
    texts = [g.text for g in node.generations]
    return "\n".join(texts) if texts else node.text
