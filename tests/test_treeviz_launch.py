"""Tree drawing (DOT escaping, label colours; the explorer's layout and data), launching a rollout
process (SPEC checks, finding and following the run) and the export plan."""

from __future__ import annotations

import json
import re

import pytest

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


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_launched_rollout_process_fills_the_database_and_the_tree_draws(tmp_path, toolwoz_data):
    from josh_core.envs.toolwoz.scenarios import load_split

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


def _scripted_tree(tmp_path):
    from josh_core.envs.toolwoz.scenarios import load_split

    config = _scripted_run(tmp_path, load_split("train", 1)[0])
    process = start_rollout_process(config, tmp_path / "x.duckdb", tmp_path / "logs" / "r.log")
    assert process.wait(timeout=120) == 0, (tmp_path / "logs" / "r.log").read_text()
    db = Database(tmp_path / "x.duckdb")
    [conversation] = reads.list_conversations(db)
    return db, conversation, reads.load_tree(db, conversation.id)


def test_layout_never_overlaps_and_keeps_parents_beside_their_children(tmp_path, toolwoz_data):
    from josh_core.treeviz import GAP_Y, NODE_H, NODE_W, graph_data, layout_tree

    db, conversation, tree = _scripted_tree(tmp_path)
    positions = layout_tree(tree)
    assert set(positions) == set(tree.nodes)
    by_depth: dict[int, list[float]] = {}
    for nid, (x, y) in positions.items():
        node = tree.nodes[nid]
        assert x == node.depth * (NODE_W + 46)
        by_depth.setdefault(node.depth, []).append(y)
    for ys in by_depth.values():
        ys.sort()
        assert all(b - a >= NODE_H + GAP_Y - 1e-9 for a, b in zip(ys, ys[1:]))
    for nid, node in tree.nodes.items():
        children = tree.children(nid)
        if children:  # a parent sits between its first and last child
            assert positions[children[0].id][1] <= positions[nid][1] <= positions[children[-1].id][1]
    data = graph_data(tree, compute_labels(tree), selected="0.1")
    assert data["selected"] == "0.1" and len(data["nodes"]) == len(tree.nodes)
    assert graph_data(tree, selected="9.9")["selected"] is None
    # the key changes with what is drawn (labels), not with the selection
    assert graph_data(tree, selected="0")["key"] == data["key"]
    relabelled = {**compute_labels(tree), tree.nodes[next(iter(tree.nodes))].id: "negative"}
    assert graph_data(tree, relabelled)["key"] != data["key"]
    root_moves = [n for n in data["nodes"] if n["root"]]
    assert len(root_moves) == len(tree.roots) - 1 and all(n["goals"] for n in root_moves)


def test_spec_checks_catch_what_can_be_seen_before_a_process_starts(tmp_path, monkeypatch):
    from josh_core.launch import check_launch, check_spec

    good = tmp_path / "a.json"
    good.write_text(json.dumps({"turns": [[[speak("hi")]]]}))
    user = tmp_path / "u.json"
    user.write_text(json.dumps({"turns": ["hello"]}))
    assert check_spec(f"script:{good}") == [] and check_spec(f"script:{user}", "user") == []
    assert check_spec("agenda", "user") == [] and check_spec("embedded") == []
    assert "no such file" in check_spec(f"script:{tmp_path / 'none.json'}")[0]
    assert "expected" in check_spec(f"script:{user}")[0]  # a user script is no agent script
    assert check_spec("nonsense")[0].startswith("agent SPEC")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert any("base URL" in p for p in check_spec("openai:gpt", base_url=None))
    assert check_spec("openai:gpt", base_url="http://localhost:8000/v1") == []
    assert "no adapter folder" in check_spec(f"embedded@{tmp_path / 'nope'}")[0]
    assert "no GGUF" in check_spec(f"llamacpp:{tmp_path / 'x.gguf'}")[0]
    assert check_spec("agenda") != []  # a user SPEC is no agent SPEC
    config = RolloutConfig(agent=f"script:{good}", user=f"script:{user}", split="nope")
    assert any("split" in p for p in check_launch(config))


def test_launched_run_is_found_from_its_log_and_followed_by_steps_and_nodes(tmp_path, toolwoz_data):
    from josh_core.launch import launched_run_id, run_progress

    assert launched_run_id(tmp_path / "none.log") is None
    db, conversation, tree = _scripted_tree(tmp_path)
    run_id = launched_run_id(tmp_path / "logs" / "r.log")
    assert run_id == conversation.run_id
    progress = run_progress(db, run_id)
    assert progress.finished and progress.fraction == 1.0
    assert progress.nodes == len(tree.nodes) and progress.steps_total == 4
    assert "1 of 1 conversations finished" in progress.summary()


def test_export_plan_counts_and_explains_before_writing(tmp_path, toolwoz_data):
    from josh_core.analysis.export_plan import export_file_name, plan_export
    from josh_core.extract import ExportOptions

    db, conversation, tree = _scripted_tree(tmp_path)
    plan = plan_export(db, ExportOptions(kind="sft"))
    assert (plan.conversations, plan.eligible, plan.giving_rows, plan.rows) == (1, 1, 1, 1)
    assert plan.preview[0]["messages"][0]["role"] == "system"
    # every ideal turn relabelled by an annotator: SFT skips the conversation, and says why
    from josh_core.search.labels import ideal_path
    from josh_core.storage.annotations import add_verdict

    agent_turn = next(n for n in ideal_path(tree) if n.kind == "agent")
    add_verdict(db, node_id=agent_turn.id, conversation_id=conversation.id, verdict="dont_use", author="ana")
    plan = plan_export(db, ExportOptions(kind="sft"))
    assert plan.rows == 0 and plan.no_rows == {"an annotator relabelled a turn of the ideal path": 1}
    assert plan_export(db, ExportOptions(kind="sft", use_annotations=False)).rows == 1
    first = export_file_name(tmp_path, "sft", "trl", None, now=0)
    first.write_text("")
    second = export_file_name(tmp_path, "sft", "trl", None, now=0)
    assert first != second and second.name.endswith("-2.jsonl") and first.name.startswith("sft-trl-all-")
