"""The app's second pass below the browser: verdicts kept apart from the search's labels,
pairs of identical turns, the word diff, export names and the KTO balance, the error analysis
following its scope, the big-tree drawing data (spine, folds, names), the conversation list
and the diff of two ideal paths. Each was a defect or a missing piece of the workbench app
(the browser checks are in test_app_trees_browser.py)."""

from __future__ import annotations

import pytest

from engine_fixtures import call, speak
from eval_fixtures import HOTEL, RESTAURANT, USER_TURNS, write_json
from josh_core.analysis.conversations import (
    ListFilter,
    filter_conversation_list,
    ideal_path_diff,
    load_conversations,
)
from josh_core.analysis.errors import error_report, share_words
from josh_core.analysis.export_plan import export_file_name, kto_balance, plan_export
from josh_core.analysis.pairs import pair_queue, word_diff
from josh_core.extract import ExportOptions
from josh_core.rollout import RolloutConfig, start_run
from josh_core.search.labels import ideal_path
from josh_core.storage import reads
from josh_core.storage.annotations import add_verdict
from josh_core.storage.db import Database
from josh_core.treeviz import graph_data, layout_tree, node_name

BOOK = dict(time="12:15", day="saturday", name="da vinci pizzeria")
SEARCH = dict(food="italian", pricerange="cheap", area="north")


def _josh_run(folder, scenario, agent_turns, name="josh") -> tuple[Database, str]:
    from josh_core.evaluate import load_scenarios

    folder.mkdir(parents=True, exist_ok=True)
    scenarios = write_json(folder / "scenario.json", scenario.model_dump(mode="json"))
    agent = write_json(folder / f"{name}-agent.json", {"turns": agent_turns})
    user = write_json(folder / "user.json", {"turns": USER_TURNS})
    config = RolloutConfig(josh=True, agent=f"script:{agent}", user=f"script:{user}", beam=2, branching=2,
                           scenario_file=str(scenarios))  # fmt: skip
    result = start_run(folder / "josh.duckdb", load_scenarios(scenario_file=scenarios), config)
    return Database(folder / "josh.duckdb"), result.run_id


@pytest.fixture
def restaurant(toolwoz_data, tmp_path):
    """A tree whose first branching gives two identical turns (as oracle trees do) and whose
    second gives an alternative that books for the wrong party size."""
    return _josh_run(tmp_path, RESTAURANT, [
        [[call("search_restaurant", **SEARCH), speak("found")], [call("search_restaurant", **SEARCH), speak("found")]],
        [[call("book_restaurant", people="6", **BOOK), speak("booked")],
         [call("book_restaurant", people="5", **BOOK), speak("booked for five")]],
    ])  # fmt: skip


def test_a_good_verdict_leaves_the_search_label_and_shows_as_its_own_badge(restaurant):
    import ui_common

    db, run_id = restaurant
    items = [i for i in pair_queue(db, run_id) if not i.identical]
    assert len(items) == 1
    item = items[0]
    tree = reads.load_tree(db, item.conversation_id)
    assert ui_common.tree_labels(db, tree)[item.alternative_node_id] == "negative"
    before = plan_export(db, ExportOptions(kind="kto"))
    add_verdict(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id, verdict="good",
                author="ana")  # fmt: skip
    add_verdict(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id, verdict="good",
                author="bo")  # fmt: skip
    # The bug: the verdict relabelled the alternative "ideal" (green) in the tree and on Pairs.
    labels = ui_common.tree_labels(db, tree)
    assert labels[item.alternative_node_id] == "negative"
    verdicts = ui_common.tree_verdicts(db, tree)
    assert verdicts[item.alternative_node_id].words == "good: ana, bo"
    assert verdicts[item.alternative_node_id].resolved == "ideal"
    drawn = {n["id"]: n for n in graph_data(tree, labels, verdicts=verdicts)["nodes"]}
    alternative = drawn[item.alternative_path]
    assert alternative["label"] == "negative" and alternative["verdict"] == "good: ana, bo"
    assert "human verdict: good: ana, bo" in alternative["hover"]
    assert graph_data(tree, labels)["key"] != graph_data(tree, labels, verdicts=verdicts)["key"]
    assert not any(n["folded"] for n in drawn.values())  # a small tree opens whole
    badge = ui_common.verdict_badge(verdicts[item.alternative_node_id])
    assert "good: ana, bo" in badge and "positive" in badge
    # Export still follows the verdicts: the alternative's generations (one KTO row each) move
    # from undesirable to desirable.
    moved = len(tree.nodes[item.alternative_node_id].generations)
    after = plan_export(db, ExportOptions(kind="kto"))
    assert moved and (after.desirable, after.undesirable) == (before.desirable + moved, before.undesirable - moved)
    assert plan_export(db, ExportOptions(kind="kto", use_annotations=False)).undesirable == before.undesirable


def test_pairs_of_identical_turns_are_flagged_and_the_diff_shows_what_changes(restaurant):
    db, run_id = restaurant
    items = pair_queue(db, run_id)
    assert [i.identical for i in items] == [True, False]
    runs = word_diff('book_restaurant {"people": "6"} booked', 'book_restaurant {"people": "5"} booked for five')
    assert "".join(t for op, t in runs if op != "add") == 'book_restaurant {"people": "6"} booked'
    assert "".join(t for op, t in runs if op != "del") == 'book_restaurant {"people": "5"} booked for five'
    assert ("del", '"6"}') in runs and ("add", '"5"}') in runs
    assert word_diff("same words", "same words") == [("same", "same words")]


def test_export_names_from_a_crafted_run_id_stay_in_the_folder(tmp_path):
    folder = tmp_path / "exports"
    out = export_file_name(folder, "kto", "trl", "x/../../ESCAPED", now=0)
    assert out.parent == folder and out.resolve().is_relative_to(folder.resolve())
    assert "/" not in out.name and ".." not in out.name and "ESCAPED" in out.name
    for hostile in ("..", "/etc/passwd", "a\\..\\b", ".hidden", "\x00x"):
        name = export_file_name(folder, "sft", "trl", hostile, now=0)
        assert name.parent == folder and not name.name.startswith(".")


def test_kto_balance_warns_one_sided_and_gives_trl_weights():
    assert kto_balance(0, 12).one_sided and kto_balance(5, 0).one_sided
    assert not kto_balance(0, 0).one_sided
    balance = kto_balance(151, 220)
    assert not balance.one_sided
    # desirable_weight * 151 / (1.0 * 220) between 1 and 4/3
    assert balance.weight_low * 151 / 220 == pytest.approx(1.0)
    assert balance.weight_high * 151 / 220 == pytest.approx(4 / 3)


def test_kto_plan_counts_both_sides(toolwoz_data, tmp_path):
    # A failed tree with the reward filter off: alternatives only, no desirable turn.
    db, _ = _josh_run(tmp_path, HOTEL, [[[call("search_hotel", type="hotel", wifi="yes"), speak("hmm")],
                                         [speak("what do you need?")]]])  # fmt: skip
    plan = plan_export(db, ExportOptions(kind="kto", min_reward=None))
    assert plan.rows == plan.undesirable + plan.desirable
    assert plan.desirable == 0 and plan.undesirable > 0 and kto_balance(plan.desirable, plan.undesirable).one_sided


def test_every_turn_scope_explains_misses_from_every_turn(toolwoz_data, tmp_path):
    # The ideal path is only the opener; a pruned branch called the goal's API with a wrong value.
    db, run_id = _josh_run(tmp_path, HOTEL, [[[call("search_hotel", type="hotel", pricerange="cheap", area="north"),
                                               speak("hmm")], [speak("what do you need?")]]])  # fmt: skip
    [ideal] = load_conversations(db, run_id).conversations
    [every] = load_conversations(db, run_id, nodes="all").conversations
    assert [g.reason for g in ideal.goals] == ["never_attempted"]
    # The bug: "none of the goal calls was attempted" beside a table of the tree's calls.
    assert [g.reason for g in every.goals] == ["wrong_value"]
    report = error_report(db, run_id, nodes="all")
    [row] = [r for r in report.per_api if r["api"] == "search_hotel"]
    assert row["calls"] >= 1 and (row["never_attempted"], row["missed_attempted"]) == (0, 1)
    # Parameter errors follow the scope too (they came from the ideal path's score always).
    assert [(p["parameter"], p["expected"]) for p in report.parameter_errors] == [("pricerange", "moderate")]
    assert error_report(db, run_id).parameter_errors == []
    assert ideal.agent_turns == 0 and every.agent_turns == len(reads.load_tree(db, every.conversation_id).agent_nodes())


def test_shares_say_na_when_nothing_was_analysed(toolwoz_data, tmp_path):
    db, run_id = _josh_run(tmp_path, HOTEL, [[[speak("hello")], [speak("what do you need?")]]])
    rates = error_report(db, run_id).rates
    assert rates.calls == 0
    # The bug: "bad API use 0 of 1 (0%)" beside "API calls rejected 0 of 0" read as all correct.
    assert share_words(rates.conversations_with_bad_api_use, rates.n, rates.calls, "API calls") == \
        "n/a (no API calls analysed)"
    assert share_words(1, 3, 4, "API calls") == "1 of 3 (33%)"


def test_big_trees_open_folded_on_their_spine_with_readable_names(toolwoz_data, tmp_path, monkeypatch):
    from app_fixtures import add_big_tree
    from josh_core import treeviz
    from josh_core.envs import get_env

    monkeypatch.setattr(treeviz, "FOLD_ABOVE", 20)  # a tree quick to play stands for a big one
    db_path = tmp_path / "big.duckdb"
    scenario = get_env("toolwoz").load_split("train", 1)[0]
    run_id = add_big_tree(db_path, tmp_path, scenario, beam=8, turns=6, goal_turns=(2, 4))
    db = Database(db_path)
    [conversation] = reads.list_conversations(db, run_id=run_id)
    tree = reads.load_tree(db, conversation.id)
    assert len(tree.nodes) > treeviz.FOLD_ABOVE
    data = graph_data(tree)
    nodes = {n["id"]: n for n in data["nodes"]}
    spine = [n.path for n in ideal_path(tree)]
    assert [p for p, n in nodes.items() if n["spine"]] == sorted(spine, key=lambda p: tuple(map(int, p.split("."))))
    # The spine is one straight line at the top of the layout.
    positions = layout_tree(tree)
    assert {positions[n.id][1] for n in ideal_path(tree)} == {0.0}
    # Off the spine, every subtree is folded; on it nothing is.
    folded = [n for n in nodes.values() if n["folded"]]
    assert folded and all(not n["spine"] for n in folded)
    parents = {n["parent"] for n in nodes.values()}
    assert all(n["id"] in parents for n in folded)
    # Names a person can say, not the dotted path.
    assert nodes[spine[0]]["name"] == "opener"
    names = [n["name"] for n in nodes.values()]
    assert any(name.startswith("turn 3 · branch ") for name in names)
    assert all(len(n["head"]) <= 22 and len(n["text"]) <= 24 for n in nodes.values())
    second = tree.nodes[ideal_path(tree)[1].id]
    assert node_name(tree, second) == f"turn 1 · branch {second.child_index + 1}"


def test_conversation_list_filters_and_two_ideal_paths_diff(toolwoz_data, tmp_path):
    base_db, base_run = _josh_run(tmp_path / "a", RESTAURANT, [
        [[call("search_restaurant", **SEARCH), speak("found")], [speak("what food?")]],
        [[call("book_restaurant", people="6", **BOOK), speak("booked")], [call("find_table", x="1"), speak("?")]],
    ])  # fmt: skip
    frame = reads.conversation_list_frame(base_db)
    assert list(frame["env"]) == ["toolwoz"]
    row = frame.iloc[0]
    assert set(row["apis"]) == {"search_restaurant", "book_restaurant", "find_table"}
    assert list(row["error_kinds"]) == ["unknown_api"]
    assert len(filter_conversation_list(frame, ListFilter(apis=["find_table"]))) == 1
    assert len(filter_conversation_list(frame, ListFilter(error_kinds=["invalid_value"]))) == 0
    assert len(filter_conversation_list(frame, ListFilter(success=True, min_reward=1.0))) == 1
    assert len(filter_conversation_list(frame, ListFilter(max_reward=0.5))) == 0
    assert len(filter_conversation_list(frame, ListFilter(runs=["nope"]))) == 0

    other_db, _ = _josh_run(tmp_path / "b", RESTAURANT, [
        [[call("search_restaurant", **SEARCH), speak("found it")], [speak("what food?")]],
        [[call("book_restaurant", people="6", **BOOK), speak("booked")], [speak("?")]],
    ], name="other")  # fmt: skip
    [first] = reads.list_conversations(base_db)
    [second] = reads.list_conversations(other_db)
    diffs = ideal_path_diff(reads.load_tree(base_db, first.id), reads.load_tree(other_db, second.id))
    assert [d.same for d in diffs][:2] == [True, False]
    assert ("add", "it") in diffs[1].runs or any(op == "add" and "it" in t for op, t in diffs[1].runs)
    assert all(d.same for d in diffs[2:])


def test_errors_page_charts_keep_their_labels_whole(toolwoz_data, tmp_path_factory):
    """Vega-Lite cut axis labels at 180 px ("search_restauran…"); the page raises the limit."""
    import json
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from eval_fixtures import planted_database

    db_path = planted_database(tmp_path_factory)[0]
    root = Path(__file__).resolve().parent.parent
    app = AppTest.from_file(str(root / "app.py"), default_timeout=180)
    app.query_params["db"] = str(db_path)
    app.run()
    app.switch_page("app_pages/errors.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    charts = [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]
    assert len(charts) >= 2  # parameter errors and errors per API
    for spec in charts:
        text = json.dumps(spec)
        assert '"labelLimit": 420' in text, text[:400]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["API calls rejected"].startswith("4 of 11")
