"""τ²-bench retail and airline environments: data, tools, isolated leaves, reward, oracle,
JOSH rollouts with script policies and their exports, metrics (Pass^k).

The data is fetched once with pip into the data dir (`JOSH_DATA_DIR`, else the per-user cache)
and reused, like ToolWOZ's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_fixtures import call, speak
from josh_core.envs import get_env, names, scenario_from_json, score_path
from josh_core.envs.tau2 import data as tau2_data
from josh_core.envs.tau2.state import DbState, Transaction
from josh_core.policies.oracle import OracleAgent
from josh_core.policies.script import ScriptAgent, ScriptUser
from josh_core.search.engine import JoshSearch, SearchConfig
from josh_core.search.labels import compute_labels, ideal_path
from josh_core.types import ToolCall

ENVS = ("tau2-retail", "tau2-airline")


@pytest.fixture(scope="session")
def tau2_ready():
    for name in ENVS:
        get_env(name).ensure_prepared()


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _run(search: JoshSearch):
    return asyncio.run(search.run_to_end())


def _tree_signature(tree) -> list:
    """Everything a tree says, in tree order (ids, texts, calls and results, labels, reward)."""
    labels = compute_labels(tree)
    return [
        (n.id, n.kind, n.status, n.text, labels[n.id], n.goals_hit,
         [(r.call.model_dump() if r.call else None, r.result.model_dump()) for r in n.api_calls])
        for n in sorted(tree.nodes.values(), key=lambda n: n.path_key())
    ] + [tree.reward, tree.stop_reason, [e.model_dump() for e in tree.reward_events]]


# -- registry and data ------------------------------------------------------------------------


def test_registry_lists_the_environments_and_josh_envs_prints_them():
    assert names()[:3] == ["toolwoz", "tau2-retail", "tau2-airline"]
    with pytest.raises(ValueError, match="unknown environment 'nope'"):
        get_env("nope")
    out = subprocess.run([sys.executable, "-m", "josh_core", "envs"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == names()
    described = json.loads(subprocess.run([sys.executable, "-m", "josh_core", "envs", "--json"],
                                          capture_output=True, text=True, check=True).stdout)
    assert {d["name"]: d["metrics"] for d in described} == {
        "toolwoz": "toolwoz", "tau2-retail": "pass^k", "tau2-airline": "pass^k"}


def test_prepared_data_is_the_checked_wheel_and_its_splits(tau2_ready):
    for name, counts in (("tau2-retail", {"train": 74, "test": 40, "base": 114}),
                         ("tau2-airline", {"train": 30, "test": 20, "base": 50})):
        env = get_env(name)
        manifest = json.loads((tau2_data.domain_dir(env.domain.name) / "manifest.json").read_text())
        wheel = tau2_data.WHEELS[env.domain.name]
        assert manifest["wheel_sha256"] == wheel.sha256 and manifest["counts"] == counts
        assert {split: len(env.load_split(split)) for split in counts} == counts
        assert env.load_split("test", limit=3) == env.load_split("test")[:3]
        with pytest.raises(ValueError, match="unknown tau2-.* split"):
            env.load_split("official-test")


def test_prepare_from_a_wheel_checks_its_sha256(tau2_ready, tmp_path, monkeypatch):
    wheel = tau2_data.WHEELS["airline"]
    cached = tau2_data.downloads_dir() / wheel.filename
    if not cached.exists():
        pytest.skip("the airline wheel was prepared from files, not fetched")
    monkeypatch.setenv("JOSH_DATA_DIR", str(tmp_path / "data"))
    copy = tmp_path / wheel.filename
    shutil.copy(cached, copy)
    assert get_env("tau2-airline").prepare(from_path=copy)["base"] == 50
    assert (tmp_path / "data" / "tau2" / "airline" / "policy.md").read_bytes().startswith(b"# Airline Agent Policy")
    broken = tmp_path / "broken" / wheel.filename
    broken.parent.mkdir()
    broken.write_bytes(copy.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(tau2_data.Tau2DataUnavailable, match="sha256"):
        get_env("tau2-airline").prepare(from_path=broken.parent, force=True)
    out = subprocess.run([sys.executable, "-m", "josh_core", "data", "prepare", "--env", "tau2-airline",
                          "--from", str(broken)], capture_output=True, text=True)
    assert out.returncode == 1 and "sha256" in out.stderr


def test_tasks_read_as_scenarios_with_gold_writes_as_goal_calls(tau2_ready):
    env = get_env("tau2-retail")
    task = env.get_task("0")
    assert task.id == "retail-0" and task.env == "tau2-retail" and task.domains == ["retail"]
    assert [g.name for g in task.goal_calls] == ["exchange_delivered_order_items"]
    assert task.goal_call_ids() == ["0:exchange_delivered_order_items"]
    assert any(line.startswith("Reason for your call: You received your order #W2378156") for line in task.instructions)
    assert scenario_from_json(task.model_dump(mode="json")) == task
    # Gold writes the database refuses never become goals (retail 64: an exchange of a pending order).
    assert [g.name for g in env.get_task("64").goal_calls] == ["modify_pending_order_items"]
    assert "Yusuf Rossi" in task.user_system_prompt() and "END_CONVERSATION" in task.user_system_prompt()


# -- tools and states --------------------------------------------------------------------------


def test_tools_check_arguments_and_report_refusals(tau2_ready):
    env = get_env("tau2-retail").make_env(get_env("tau2-retail").get_task("34"))
    schemas = {t["function"]["name"]: t["function"] for t in env.tools()}
    assert schemas["cancel_pending_order"]["parameters"]["properties"]["reason"]["enum"] == [
        "no longer needed", "ordered by mistake"]
    assert schemas["modify_pending_order_items"]["parameters"]["properties"]["item_ids"]["type"] == "array"

    def run(name, **params):
        return env.execute(ToolCall(name=name, parameters=params)).result

    assert run("find_user_id_by_name_zip", first_name="noah", last_name="PATEL", zip="10108").content == "noah_patel_6952"
    assert run("nope").error_kind == "unknown_api"
    assert run("get_order_details", order="#W1845024").error_kind == "unknown_parameter"
    assert run("get_order_details").error_kind == "invalid_value"
    assert run("cancel_pending_order", order_id="#W1845024", reason="bored").error_kind == "invalid_value"
    refused = run("get_order_details", order_id="W1845024")
    assert (refused.ok, refused.error_kind, refused.as_text()) == (False, "tool_error", "ERROR: Order not found")
    assert run("calculate", expression="(2 + 3) * 4 / 3").content == "6.67"
    assert run("calculate", expression="__import__('os')").error_kind == "tool_error"
    assert run("calculate", expression="2 ** 1000000").error_kind == "tool_error"
    bad = env.execute(None, "APICALL {oops")
    assert bad.result.error_kind == "bad_format" and bad.raw == "APICALL {oops"

    airline = get_env("tau2-airline").make_env(get_env("tau2-airline").get_task("8"))
    booking = next(a for a in airline.task.actions if a.name == "book_reservation").arguments
    wrong = airline.execute(ToolCall(name="book_reservation", parameters={**booking, "payment_methods": [
        {"payment_id": "certificate_8045380", "amount": 300}]})).result
    assert wrong.error == "Payment amount does not add up, total price is 348, but paid 300"
    typed = airline.execute(ToolCall(name="book_reservation", parameters={**booking, "total_baggages": "0"})).result
    assert typed.ok and typed.content["reservation_id"] == "HATHAT"


def test_states_are_values_and_the_shared_database_never_changes(tau2_ready):
    retail = get_env("tau2-retail")
    env = retail.make_env(retail.get_task("34"))
    base = env.initial_state().base
    before = _digest(base)
    cancel = ToolCall(name="cancel_pending_order", parameters={"order_id": "#W1845024", "reason": "no longer needed"})
    record, after = env.apply(env.initial_state(), cancel)
    assert record.result.ok and record.result.content["status"] == "cancelled"
    assert env.initial_state().get("orders", "#W1845024")["status"] == "pending"
    assert after.get("orders", "#W1845024")["status"] == "cancelled"
    assert after.diff(env.initial_state()) == [("orders", "#W1845024")]
    # Refunds to a gift card change the user's record too; a refused call changes nothing.
    again, same = env.apply(after, cancel)
    assert not again.result.ok and same is after
    # Every gold action of every task, played: the shared tables stay as loaded.
    for name in ENVS:
        environment = get_env(name)
        tables = environment.domain.load_tables()
        digest = _digest(tables)
        for task in environment.tasks():
            task_env = environment.make_env(task)
            task_env.gold_state()
        assert _digest(tables) == digest
    assert _digest(base) == before
    # A transaction's writes are private until committed.
    state = DbState({"t": {"a": {"x": 1}}})
    tx = Transaction(state)
    tx.edit("t", "a")["x"] = 2
    tx.put("t", "b", {"x": 3})
    assert state.get("t", "a") == {"x": 1} and tx.keys("t") == ["a", "b"]
    new = tx.commit()
    assert (new.get("t", "a"), new.get("t", "b"), state.get("t", "b")) == ({"x": 2}, {"x": 3}, None)


def _isolation_scripts():
    """Turn 0: two alternatives that write the same order differently (neither is a goal);
    turn 1: every leaf reads the order back."""
    order = "#W1845024"
    cancel = call("cancel_pending_order", order_id=order, reason="no longer needed")
    move = call("modify_pending_order_address", order_id=order, address1="1 Other Road", address2="",
                city="Boston", state="MA", country="USA", zip="02101")
    read = call("get_order_details", order_id=order)
    agent = ScriptAgent([[[cancel, speak("Cancelled.")], [move, speak("Moved.")]],
                         [[read, speak("Here it is.")], [read, speak("Here it is again.")]]])
    user = ScriptUser(["Hi, about order #W1845024.", "Show me the order.", "Thanks."])
    return agent, user


def test_sibling_leaves_never_see_each_others_writes_and_the_tree_ignores_concurrency(tau2_ready):
    retail = get_env("tau2-retail")
    task = retail.get_task("34")
    trees = []
    for concurrent in (True, False):
        env = retail.make_env(task)
        agent, user = _isolation_scripts()
        search = JoshSearch(agent, user, env, config=SearchConfig(max_depth=2, branching_factor=2, max_beam=4),
                            conversation_id="iso", scenario=task, concurrent=concurrent)
        tree = _run(search)
        trees.append(tree)
        reads = {}
        for node in tree.agent_nodes():
            if node.depth == 3:  # turn 1: the read-back
                branch = node.path.split(".")[1]
                reads.setdefault(branch, []).append(node.api_calls[0].result.content)
        assert set(reads) == {"0", "1"} and all(len(v) == 2 for v in reads.values())
        assert all(r["status"] == "cancelled" and r["address"]["city"] == "Seattle" for r in reads["0"])
        assert all(r["status"] == "pending" and r["address"]["city"] == "Boston" for r in reads["1"])
        # The root's state and a fresh path never saw either write.
        assert env.initial_state().get("orders", "#W1845024")["status"] == "pending"
        assert env.for_path([]).execute(ToolCall(name="get_order_details", parameters={
            "order_id": "#W1845024"})).result.content["address"]["city"] == "Seattle"
    assert _tree_signature(trees[0]) == _tree_signature(trees[1])


# -- reward and the oracle ----------------------------------------------------------------------


def test_reward_is_the_gold_database_and_the_required_outputs(tau2_ready):
    retail = get_env("tau2-retail")
    task = retail.get_task("19")  # a return, and two amounts the agent must say
    env = retail.make_env(task)
    view = env.for_path([])
    gold = [view.execute(ToolCall(name=a.name, parameters=a.arguments)) for a in task.actions]
    said = "Your refund is 54.04 for one and 41.64 for the other."
    full = env.score(gold, [said])
    assert (full.reward, full.success, full.db_match, full.goal_reward) == (1.0, True, True, 1.0)
    assert env.score(gold, ["Your refund is on its way."]).reward == 0.0
    assert [c.met for c in env.score(gold, ["54,04 is not 54.04... 41.64"]).communicate] == [True, True]
    reads_only = [r for r, a in zip(gold, task.actions) if a.name not in env.domain.write_tools]
    missed = env.score(reads_only, [said])
    assert (missed.reward, missed.db_match, missed.db_diff) == (0.0, False, ["orders/#W2890441"])
    assert [(m.api, m.reason) for m in missed.missed] == [("return_delivered_order_items", "never_attempted")]
    goal = task.goal_calls[0]
    wrong = ToolCall(name=goal.name, parameters={**goal.parameters, "payment_method_id": "credit_card_0000000"})
    explained = env.score([*reads_only, env.for_path([]).execute(wrong)], [said]).missed[0]
    assert explained.reason == "wrong_value" and [d.parameter for d in explained.details] == ["payment_method_id"]
    # An extra write spoils the database even when every goal call was made.
    extra = env.for_path(gold).execute(ToolCall(name="modify_user_address", parameters={
        "user_id": "mei_davis_8935", "address1": "x", "address2": "", "city": "x", "state": "x",
        "country": "x", "zip": "x"}))
    spoiled = env.score([*gold, extra], [said])
    assert (spoiled.reward, spoiled.goal_reward) == (0.0, 1.0)


@pytest.mark.parametrize("name", ENVS)
def test_the_oracle_replaying_gold_actions_gets_reward_one_on_every_task(tau2_ready, name):
    environment = get_env(name)
    tasks = environment.load_split("base")
    rewards = {}
    for task in tasks:
        env = environment.make_env(task)
        config = SearchConfig.plain(max_depth=3)
        config.stop_when_goals_done = False
        tree = _run(JoshSearch(OracleAgent(), ScriptUser(["Hi, I need help.", "Thanks, bye."]), env,
                               config=config, scenario=task))
        score = score_path(env, ideal_path(tree))
        rewards[task.id] = (score["reward"], score["goal_reward"] if task.goal_calls else 1.0)
    assert len(rewards) == {"tau2-retail": 114, "tau2-airline": 50}[name]
    assert {task_id: r for task_id, r in rewards.items() if r != (1.0, 1.0)} == {}


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_oracle_evaluation_through_the_cli_stores_pass_k(tau2_ready, tmp_path):
    db = tmp_path / "tau2.duckdb"
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"turns": ["Hi, I need help.", "Yes, please."]}))
    out = subprocess.run(
        [sys.executable, "-m", "josh_core", "eval", "--env", "tau2-airline", "--agent", "oracle", "--user",
         f"script:{user}", "--limit", "3", "--trials", "2", "--db", str(db), "--json"],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    evaluation = json.loads(out.stdout)
    assert evaluation["config"]["env"] == "tau2-airline" and evaluation["config"]["split"] == "test"
    metrics = evaluation["metrics"]
    assert metrics["n"] == 6 and metrics["average_reward"] == 1.0 and metrics["envs"] == ["tau2-airline"]
    assert [(r["k"], r["pass_k"], r["tasks"]) for r in metrics["pass_k"]] == [(1, 1.0, 3), (2, 1.0, 3)]
    # The agenda user speaks ToolWOZ goals only; the user defaults to the environment's.
    refused = subprocess.run(
        [sys.executable, "-m", "josh_core", "rollout", "--env", "tau2-retail", "--user", "agenda", "--db", str(db)],
        capture_output=True, text=True)
    assert refused.returncode == 1 and "--user: the 'agenda' user cannot play tau2-retail" in refused.stderr


def test_pass_k_counts_the_ways_k_trials_all_succeed():
    from josh_core.analysis.conversations import AnalysedConversation
    from josh_core.analysis.metrics import pass_hat_k

    def conv(task, ok):
        return AnalysedConversation(run_id="r", conversation_id=f"{task}{ok}", scenario_id=task, env="tau2-retail",
                                    domains=["retail"], reward=float(ok), success=ok, goals=[], env_success=ok)

    rows = pass_hat_k([conv("a", True), conv("a", True), conv("a", False),
                       conv("b", True), conv("b", False), conv("b", False)])
    got = {row["k"]: round(row["pass_k"], 4) for _, row in rows.iterrows()}
    # a: 2 of 3 -> pass^1 2/3, pass^2 1/3, pass^3 0; b: 1 of 3 -> 1/3, 0, 0
    assert got == {1: 0.5, 2: round(1 / 6, 4), 3: 0.0}


# -- JOSH on a τ² task with script policies ------------------------------------------------------


def _josh_scripts(folder: Path, task) -> tuple[Path, Path]:
    goal = task.goal_calls[0]
    wrong = {**goal.parameters, "zip": "99999"}
    turns = [
        [[call("find_user_id_by_name_zip", first_name="Noah", last_name="Patel", zip="10108"),
          speak("I found your account. Which order, and what is the new address?")],
         [speak("Could you tell me your name and zip code?")]],
        [[call(goal.name, **wrong), speak("Done: the address is changed.")],
         [call(goal.name, **goal.parameters), speak("Done: order #W1845024 now ships to 224 Elm Street.")]],
        [[speak("Anything else?")]],
    ]
    agent = folder / "agent.json"
    agent.write_text(json.dumps({"turns": turns}))
    user = folder / "user.json"
    user.write_text(json.dumps({"turns": [
        "Hi, I am Noah Patel, zip 10108. I need to change the address of an order.",
        "Order #W1845024: 224 Elm Street, Suite 491, New York, NY, USA, 10108. Yes, go ahead.",
        "Thanks, bye."]}))
    return agent, user


def test_josh_on_a_retail_task_yields_an_ideal_path_negatives_and_kto_dpo_exports(tau2_ready, tmp_path):
    from josh_core.extract import ExportOptions, export_dataset
    from josh_core.storage import reads
    from josh_core.storage.db import Database

    task = get_env("tau2-retail").get_task("34")
    agent, user = _josh_scripts(tmp_path, task)
    scenario_file = tmp_path / "task.json"
    scenario_file.write_text(json.dumps(task.model_dump(mode="json")))
    db_path = tmp_path / "josh.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "josh_core", "rollout", "--josh", "--env", "tau2-retail", "--scenario-file",
         str(scenario_file), "--agent", f"script:{agent}", "--user", f"script:{user}", "--beam", "4",
         "--branching", "2", "--db", str(db_path)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    db = Database(db_path)
    run = reads.list_runs(db)[0]
    assert run.config["env"] == "tau2-retail" and run.kind == "josh"
    record = reads.list_conversations(db, run_id=run.id)[0]
    assert (record.scenario_id, record.reward, record.success, record.stop_reason) == ("retail-34", 1.0, True, "goals_done")
    tree = reads.load_trees(db, [record.id])[record.id]
    labels = compute_labels(tree)
    by_path = {n.path: labels[n.id] for n in tree.nodes.values()}
    assert [n.path for n in ideal_path(tree)] == ["0", "0.0", "0.0.0", "0.0.0.1"]
    assert by_path["0.1"] == "negative" and by_path["0.0.0.0"] == "negative" and by_path["0.1.0.1"] == "partial"
    assert record.score["db_match"] is True and record.score["reward"] == 1.0
    assert "<policy>" in record.system_prompt and "Retail agent policy" in record.system_prompt

    kto = tmp_path / "kto.jsonl"
    assert export_dataset(Database(db_path), ExportOptions(kind="kto"), kto).rows == 7
    rows = [json.loads(line) for line in kto.read_text().splitlines()]
    # One row per generation: the ideal turns' 4 (call + speak, twice), the negatives' 3.
    assert sorted(r["label"] for r in rows) == [False] * 3 + [True] * 4
    assert any(not r["label"] and "99999" in json.dumps(r["completion"]) for r in rows)
    assert all(r["prompt"][0]["role"] == "system" and "retail" in r["prompt"][0]["content"] for r in rows)
    dpo = tmp_path / "dpo.jsonl"
    assert export_dataset(Database(db_path), ExportOptions(kind="dpo"), dpo).rows == 2
    pairs = [json.loads(line) for line in dpo.read_text().splitlines()]
    assert any("224 Elm Street" in json.dumps(p["chosen"]) and "99999" in json.dumps(p["rejected"]) for p in pairs)

    # The app's tree page reads it: goal rows, the path view, the explorer's drawing data.
    from josh_core.analysis.transcript import goal_rows, path_views
    from josh_core.treeviz import graph_data

    rows_ = goal_rows(record, tree)
    assert [(r.api, r.reached, r.node_path) for r in rows_] == [("modify_pending_order_address", True, "0.0.0.1")]
    views = path_views(tree, ideal_path(tree)[-1].id, labels)
    assert any("224 Elm Street" in json.dumps(v.model_dump(mode="json")) for v in views)
    drawn = graph_data(tree, labels)
    assert len(drawn["nodes"]) == len(tree.nodes)


def test_the_app_draws_a_tau2_tree_and_its_metrics(tau2_ready, tmp_path):
    """The trees and errors pages run on a τ² database (Streamlit's AppTest: the real pages
    without a browser; the browser tests cover drawing and clicking on ToolWOZ trees)."""
    from streamlit.testing.v1 import AppTest

    task = get_env("tau2-retail").get_task("34")
    agent, user = _josh_scripts(tmp_path, task)
    scenario_file = tmp_path / "task.json"
    scenario_file.write_text(json.dumps(task.model_dump(mode="json")))
    db_path = tmp_path / "app.duckdb"
    subprocess.run([sys.executable, "-m", "josh_core", "rollout", "--josh", "--env", "tau2-retail", "--scenario-file",
                    str(scenario_file), "--agent", f"script:{agent}", "--user", f"script:{user}", "--beam", "4",
                    "--db", str(db_path)], capture_output=True, text=True, check=True)
    root = Path(__file__).resolve().parent.parent
    seen = {}
    for page in ("app_pages/trees.py", "app_pages/errors.py"):
        app = AppTest.from_file(str(root / "app.py"), default_timeout=120)
        app.query_params["db"] = str(db_path)
        app.run()
        app.switch_page(page)
        app.run()
        assert not app.exception and not app.error, (page, [e.value for e in app.exception])
        seen[page] = {m.label: m.value for m in app.metric}
    trees = seen["app_pages/trees.py"]
    assert (trees["Reward"], trees["Goal calls hit"], trees["Nodes"], trees["Stopped"]) == ("1.00", "1 of 1", "9", "goals done")
    assert seen["app_pages/errors.py"]["Average reward"] == "1.000"


def test_selftrain_takes_an_environment(tau2_ready, tmp_path):
    from josh_core.storage import stages
    from josh_core.storage.db import Database
    from josh_core.train.selftrain import Selftrain, SelftrainConfig, scenario_slices

    config = SelftrainConfig(experiment="t2", env="tau2-retail", user="llm:embedded", warm_start=2, train_limit=5,
                             eval_split="test", eval_limit=3)
    warm, rounds, evaluation = scenario_slices(config)
    assert [len(warm), len(rounds[0]), len(evaluation)] == [2, 5, 3]
    assert {t.env for t in warm + rounds[0] + evaluation} == {"tau2-retail"}
    assert not {t.id for t in warm} & {t.id for t in rounds[0]}
    db_path = tmp_path / "st.duckdb"
    rollout = Selftrain(config, db_path)._rollout_config("oracle", josh=False)
    assert (rollout.env, rollout.user) == ("tau2-retail", "llm:embedded")
    # An experiment stored before environments existed (no `env` in its settings) is ToolWOZ's.
    Selftrain(SelftrainConfig(experiment="old"), db_path)._check_config()  # stores the settings as they are now
    old = dict(stages.get_stages(Database(db_path), "old")[(0, "config")]["result"])
    old.pop("env")
    stages.start_stage(Database(db_path), "old", 0, "config", old)
    stages.finish_stage(Database(db_path), "old", 0, "config", old, 0.0)
    assert "env" not in stages.get_stages(Database(db_path), "old")[(0, "config")]["result"]
    Selftrain(SelftrainConfig(experiment="old"), db_path)._check_config()
    with pytest.raises(ValueError, match="env"):
        Selftrain(SelftrainConfig(experiment="old", env="tau2-retail", user="llm:embedded"), db_path)._check_config()
