"""Annotators' verdicts: the resolution rule export follows, skips, agreement, the pair queue."""

from __future__ import annotations

import json
import time

from engine_fixtures import ToyEnv, agent, speak, store_conversations, user
from josh_core.analysis.pairs import agreement, pair_queue, progress, votes_by_node
from josh_core.extract import ExportOptions, export_dataset
from josh_core.search.engine import SearchConfig
from josh_core.search.labels import compute_labels
from josh_core.storage import reads, writes
from josh_core.storage.annotations import add_verdict, comments, latest_votes, resolved_labels
from josh_core.storage.db import Database


def _db(tmp_path):
    """One JOSH tree: the ideal turn reaches the goal, its sibling is a negative."""
    from engine_fixtures import call

    db = Database(tmp_path / "a.duckdb")
    env = ToyEnv([("search_hotel", {"area": "north"})])
    turns = [[[call("search_hotel", area="north"), speak("Found one.")], [speak("No idea.")]]]
    [tree] = store_conversations(db, [(agent(turns), user(3), env, SearchConfig(max_depth=2, branching_factor=2, max_beam=4))])
    return db, tree


def test_each_annotator_counts_once_the_majority_wins_a_tie_goes_to_the_latest(tmp_path):
    db, tree = _db(tmp_path)
    cid = tree.conversation_id
    negative = next(nid for nid, label in compute_labels(tree).items() if label == "negative")
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="bad", author="ana")
    time.sleep(0.002)
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="good", author="bo")
    assert resolved_labels(db) == {negative: "ideal"}  # 1 : 1, bo was later
    time.sleep(0.002)
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="bad", author="cy")
    assert resolved_labels(db) == {negative: "negative"}  # 2 : 1
    time.sleep(0.002)
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="good", author="ana")  # ana changes her mind
    assert resolved_labels(db) == {negative: "ideal"}  # ana and bo: good; cy: bad
    time.sleep(0.002)
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="skip", author="bo")  # bo withdraws
    assert resolved_labels(db) == {negative: "ideal"}  # ana good, cy bad: tie, ana later
    assert reads.label_overrides(db) == resolved_labels(db)
    votes = {v.author: v for v in latest_votes(db)}
    assert (votes["bo"].verdict, votes["bo"].label) == ("skip", None)
    assert len(votes) == 3


def test_a_skip_alone_gives_no_label_and_comments_are_not_votes(tmp_path):
    db, tree = _db(tmp_path)
    cid = tree.conversation_id
    negative = next(nid for nid, label in compute_labels(tree).items() if label == "negative")
    add_verdict(db, node_id=negative, conversation_id=cid, verdict="skip", author="ana")
    writes.add_annotation(db, node_id=negative, conversation_id=cid, comment="looks <b>odd</b>", author="bo")
    assert resolved_labels(db) == {}
    [note] = comments(db, [cid])
    assert (note["author"], note["comment"]) == ("bo", "looks <b>odd</b>") and note["created_at"].tzinfo


def test_export_follows_the_resolved_label(tmp_path):
    db, tree = _db(tmp_path)
    cid = tree.conversation_id
    negative = next(nid for nid, label in compute_labels(tree).items() if label == "negative")
    out = tmp_path / "kto.jsonl"
    before = export_dataset(db, ExportOptions(kind="kto"), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == [False, True, True]
    for verdict, author in (("good", "ana"), ("good", "bo")):
        add_verdict(db, node_id=negative, conversation_id=cid, verdict=verdict, author=author)
    after = export_dataset(db, ExportOptions(kind="kto"), tmp_path / "kto2.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "kto2.jsonl").read_text().splitlines()]
    assert all(r["label"] for r in rows) and after.rows == before.rows
    # a DPO pair needs a negative: two "good" verdicts leave none
    assert export_dataset(db, ExportOptions(kind="dpo"), tmp_path / "dpo.jsonl").rows == 0


def test_queue_progress_and_agreement(tmp_path):
    db, tree = _db(tmp_path)
    items = pair_queue(db)
    assert len(items) == 1
    [item] = items
    assert item.tree_label == "negative" and item.user_path == "0"
    votes = votes_by_node(db, items)
    assert progress(items, votes, "ana").model_dump() == {"total": 1, "done": 0, "next_pending": 0, "annotated_by_anyone": 0}
    add_verdict(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id, verdict="bad", author="ana")
    add_verdict(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id, verdict="bad", author="bo")
    votes = votes_by_node(db, items)
    assert progress(items, votes, "ana").next_pending is None
    report = agreement(items, votes)
    assert (report.multi, report.unanimous, report.rate) == (1, 1, 1.0)
    assert report.pairwise[0].both == 1 and report.pairwise[0].kappa is None  # one label only: undefined
