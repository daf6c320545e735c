"""Tree drawing (DOT escaping, one node each, label colours) and launching a rollout process."""

from __future__ import annotations

import json
import re

from engine_fixtures import speak
from josh_core.launch import rollout_args, start_rollout_process
from josh_core.rollout import RolloutConfig
from josh_core.search.labels import compute_labels
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.treeviz import LABEL_COLORS, dot_escape, tree_to_dot
from rollout_fixtures import goal_call


def test_dot_escape_neutralises_quotes_newlines_and_tags():
    escaped = dot_escape('say "hi"\\ <b>x</b>\nnext')
    assert '"' not in escaped.replace('\\"', "")
    assert "<" not in escaped and ">" not in escaped
    assert "\n" not in escaped and "\\n" in escaped


def _scripted_run(tmp_path, scenario):
    turns = [
        [[speak('He said "stop" <now>\nplease')], [speak("Other.")]],
        [[goal_call(scenario, i) for i in range(len(scenario.goal_calls))] + [speak("Done.")], [speak("No.")]],
    ]
    (tmp_path / "s.json").write_text(scenario.model_dump_json())
    (tmp_path / "a.json").write_text(json.dumps({"turns": turns}))
    (tmp_path / "u.json").write_text(json.dumps({"turns": ["Hi.", "Go on.", "Thanks."]}))
    return RolloutConfig(josh=True, agent=f"script:{tmp_path / 'a.json'}", user=f"script:{tmp_path / 'u.json'}",
                         scenario_file=str(tmp_path / "s.json"), max_turns=4, beam=4)  # fmt: skip


def test_launched_rollout_process_fills_the_database_and_the_tree_draws(tmp_path, toolwoz_data):
    from josh_core.toolwoz.scenarios import load_split

    config = _scripted_run(tmp_path, load_split("train", 1)[0])
    args = rollout_args(config, tmp_path / "x.duckdb")
    assert args[:2] == ["rollout", "--josh"] and args[args.index("--beam") + 1] == "4"

    process = start_rollout_process(config, tmp_path / "x.duckdb", tmp_path / "logs" / "r.log")
    assert process.wait(timeout=120) == 0, (tmp_path / "logs" / "r.log").read_text()
    db = Database(tmp_path / "x.duckdb")
    [run] = reads.list_runs(db)
    assert run.kind == "josh" and run.config["beam"] == 4
    [conversation] = reads.list_conversations(db)
    assert conversation.reward == 1.0

    tree = reads.load_tree(db, conversation.id)
    labels = compute_labels(tree)
    dot = tree_to_dot(tree, labels)
    node_lines = [line for line in dot.splitlines() if re.match(r'\s+"[^"]+" \[', line)]
    assert len(node_lines) == len(tree.nodes)
    ideal_fill = LABEL_COLORS["ideal"][0]
    assert sum(ideal_fill in line for line in node_lines) == sum(
        1 for nid, label in labels.items() if label == "ideal" and tree.nodes[nid].kind == "agent"
    )
    assert '\\"stop\\"' in dot and "<now>" not in dot
