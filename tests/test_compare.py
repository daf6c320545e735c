"""Paired comparison of two runs (`josh_core.analysis.compare`, `josh compare`): the oracle
agent given one turn (base) vs many turns (trained) on the same scenarios."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from josh_core.analysis.compare import compare_pooled, compare_runs, conversation_metrics
from josh_core.cli import app
from josh_core.envs import get_env
from josh_core.rollout import RolloutConfig, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toolwoz_data):
    """(db path, base run, trained run, second db path, its base run, its trained run)."""
    folder = tmp_path_factory.mktemp("compare")
    scenarios = [s for s in get_env("toolwoz").load_split("val", None) if len(s.domains) == 1]
    out = []
    for path, chosen in ((folder / "first.duckdb", scenarios[:6]), (folder / "second.duckdb", scenarios[6:10])):
        ids = []
        for turns in (1, 20):  # one agent turn reaches fewer goals than enough turns
            config = RolloutConfig(agent="oracle", user="agenda", max_turns=turns, seed=0)
            ids.append(start_run(path, chosen, config).run_id)
        out += [path, *ids]
    return tuple(out)


def test_paired_means_and_difference(runs):
    path, base, trained, *_ = runs
    db = Database(path, read_only=True)
    # The two runs differ in their turn cap (the stand-in for training here): compared with force.
    comparison = compare_runs(db, base, trained, force=True)
    assert comparison.warnings == [f"runs {base} and {trained} were played with different settings: turn cap 1 vs 20"]
    assert comparison.n == 6 and (comparison.base_run, comparison.trained_run) == (base, trained)
    stored = {run: {c.scenario_id: c.reward for c in reads.list_conversations(db, run_id=run)}
              for run in (base, trained)}  # fmt: skip
    reward = comparison.metric("reward")
    assert reward.base.mean == pytest.approx(sum(stored[base].values()) / 6)
    assert reward.trained.mean == pytest.approx(1.0)  # the oracle with enough turns reaches every goal
    assert reward.difference.mean == pytest.approx(reward.trained.mean - reward.base.mean)
    assert reward.difference.low <= reward.difference.mean <= reward.difference.high
    assert reward.base.mean < 1.0  # one turn is not enough for every scenario: there is a difference


def test_pooling_adds_the_second_pairs_scenarios(runs):
    path, base, trained, path2, base2, trained2 = runs
    db, db2 = Database(path, read_only=True), Database(path2, read_only=True)
    pooled = compare_pooled([(db, base, trained), (db2, base2, trained2)], force=True)
    assert pooled.n == 10
    values = [m["reward"] for m in conversation_metrics(db, base).values()]
    values += [m["reward"] for m in conversation_metrics(db2, base2).values()]
    assert pooled.metric("reward").base.mean == pytest.approx(sum(values) / 10)
    with pytest.raises(ValueError, match="twice"):
        compare_pooled([(db, base, trained), (db, base, trained)], force=True)
    with pytest.raises(KeyError, match="no-such-run"):
        compare_pooled([(db, base, "no-such-run")])


def test_cli_prints_the_table_json_and_plain_errors(runs):
    path, base, trained, path2, base2, trained2 = runs
    runner = CliRunner()
    shown = runner.invoke(app, ["compare", base, trained, "--db", str(path), "--force"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "6 paired scenarios" in shown.output and "reward" in shown.output and "bad_api_rate" in shown.output
    as_json = runner.invoke(app, ["compare", base, trained, "--db", str(path), "--pool",
                                  f"{path2}:{base2}:{trained2}", "--json", "--force"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["n"] == 10
    for args, message in (([base, "no-such-run", "--db", str(path)], "no run 'no-such-run'"),
                          ([base, trained, "--db", str(path), "--pool", "nonsense"], "--pool wants"),
                          ([base, trained, "--db", str(path.parent / "missing.duckdb")], "no database")):
        refused = runner.invoke(app, ["compare", *args])
        assert refused.exit_code == 1 and message in refused.output and "Traceback" not in refused.output


# -- refusals (issue 26, item 11) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def variants(tmp_path_factory, toolwoz_data):
    """Runs of the oracle on the same six scenarios, each differing from `base` in one setting
    (or in the scenarios it played)."""
    path = tmp_path_factory.mktemp("compare-refusals") / "v.duckdb"
    scenarios = [s for s in get_env("toolwoz").load_split("val", None) if len(s.domains) == 1][:6]
    settings = {
        "base": ({}, scenarios), "same": ({}, scenarios),
        "seed": ({"seed": 7}, scenarios), "turns": ({"max_turns": 20}, scenarios),
        "josh": ({"josh": True, "beam": 2}, scenarios), "reference": ({"scoring": "reference"}, scenarios),
        "other_half": ({}, scenarios[3:]), "disjoint": ({}, [s for s in get_env("toolwoz").load_split("val", None)
                                                            if len(s.domains) == 1][6:9]),
    }  # fmt: skip
    ids = {}
    for name, (overrides, chosen) in settings.items():
        config = RolloutConfig(**{"agent": "oracle", "user": "agenda", "max_turns": 15, "seed": 0, **overrides})
        ids[name] = start_run(path, chosen if name != "base" else chosen[:4], config).run_id
    return path, ids


def test_runs_with_other_settings_are_refused_unless_forced(variants):
    path, ids = variants
    db = Database(path, read_only=True)
    for name, expected in (("seed", "seed 0 vs 7"), ("turns", "turn cap 15 vs 20"),
                           ("josh", "kind (plain or JOSH) plain vs josh"),
                           ("reference", "scoring toolwoz vs reference")):
        with pytest.raises(ValueError, match=r"different settings: .*" + expected.replace("(", r"\(").replace(")", r"\)")):
            compare_runs(db, ids["base"], ids[name])
        forced = compare_runs(db, ids["base"], ids[name], force=True)
        assert expected in forced.warnings[0]
    shown = CliRunner().invoke(app, ["compare", ids["base"], ids["reference"], "--db", str(path)])
    assert shown.exit_code == 1 and "--force" in shown.output and "scoring toolwoz vs reference" in shown.output
    forced = CliRunner().invoke(app, ["compare", ids["base"], ids["reference"], "--db", str(path), "--force"],
                                terminal_width=200)
    assert forced.exit_code == 0 and "compared anyway" in forced.output


def test_scenarios_only_one_run_finished_are_reported(variants):
    path, ids = variants
    db = Database(path, read_only=True)
    comparison = compare_runs(db, ids["base"], ids["same"])  # base played 4 of the 6
    assert comparison.n == 4 and comparison.only_base == [] and len(comparison.only_trained) == 2
    comparison = compare_runs(db, ids["base"], ids["other_half"])  # scenarios 0-3 against 3-5
    assert comparison.n == 1 and len(comparison.only_base) == 3 and len(comparison.only_trained) == 2
    shown = CliRunner().invoke(app, ["compare", ids["base"], ids["same"], "--db", str(path)], terminal_width=200)
    assert shown.exit_code == 0 and "2 scenarios finished by the trained run only" in shown.output
    assert "goal_completion" not in shown.output  # it equals the reward by construction


def test_runs_sharing_no_scenario_are_refused(variants):
    path, ids = variants
    with pytest.raises(ValueError, match="share no finished scenario"):
        compare_runs(Database(path, read_only=True), ids["base"], ids["disjoint"])
    for extra in ([], ["--json"]):
        refused = CliRunner().invoke(app, ["compare", ids["base"], ids["disjoint"], "--db", str(path), *extra])
        assert refused.exit_code == 1 and "share no finished scenario" in refused.output, refused.output


def test_trials_count_once_per_scenario_with_their_mean(tmp_path):
    import duckdb

    env = get_env("tau2-airline")
    env.ensure_prepared()
    tasks = env.load_split("test", 2)
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"turns": ["Hi, I need help.", "Yes, please."]}))
    path = tmp_path / "trials.duckdb"
    config = RolloutConfig(env="tau2-airline", agent="oracle", user=f"script:{user}", max_turns=15)
    played = [t.model_copy(update={"trial": k}) for k in range(2) for t in tasks]
    base = start_run(path, played, config).run_id
    trained = start_run(path, played, config).run_id
    one_trial = start_run(path, tasks, config).run_id
    db = Database(path)
    (rewards,) = {tuple(c.reward for c in reads.list_conversations(db, run_id=r)) for r in (base, trained)}
    assert rewards == (1.0,) * 4  # the oracle solves every trial
    # The trained run's first task: its second trial lost (stored as a reward of 0).
    second_trial = reads.list_conversations(db, run_id=trained)[2]
    assert second_trial.scenario["trial"] == 1 and second_trial.scenario_id == tasks[0].id
    con = duckdb.connect(str(path))
    con.execute("UPDATE conversations SET reward = 0, success = false WHERE id = ?", [second_trial.id])
    con.close()
    comparison = compare_runs(db, base, trained)
    assert comparison.n == 2 and comparison.trials == 2
    assert comparison.metric("reward").trained.mean == pytest.approx((0.5 + 1.0) / 2)  # not the last trial alone
    with pytest.raises(ValueError, match="trials per scenario 2 vs 1"):
        compare_runs(db, base, one_trial)


def test_selftrain_summary_names_a_round_compare_refuses_instead_of_failing(tmp_path):
    """An evaluation that finished no scenario cannot be paired (compare refuses it): the
    experiment's summary still reads, and says which round was not compared and why."""
    from josh_core.storage import stages, writes
    from josh_core.storage.db import Database
    from josh_core.train.selftrain import SelftrainConfig, load_result

    db_path = tmp_path / "selftrain.duckdb"
    db = Database(db_path)
    scenarios = [("s0", {"id": "s0"})]
    base_run = writes.create_run(db, kind="plain", config={"seed": 0}, scenarios=scenarios)
    trained_run = writes.create_run(db, kind="plain", config={"seed": 0}, scenarios=scenarios)
    for rnd, stage, result in ((0, "config", SelftrainConfig(experiment="x").model_dump(mode="json")),
                               (0, "eval", {"run_id": base_run, "conversations": 0}),
                               (1, "eval-sft", {"run_id": trained_run, "conversations": 0})):
        stages.start_stage(db, "x", rnd, stage, result)
        stages.finish_stage(db, "x", rnd, stage, result, seconds=1.0)
    result = load_result(db_path, "x")
    assert result.comparisons == []
    assert [(u["round"], u["kind"]) for u in result.unpaired] == [(1, "sft")]
    assert "share no finished scenario" in result.unpaired[0]["reason"]


# -- pooling over pipeline seeds: the scenario is the unit (exp4's decision rule) ---------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, toolwoz_data):
    """One database, the same six scenarios played by base (one turn) and trained (20 turns)
    pairs: three identical pairs with seed 0, and one pair each with seeds 1 and 2."""
    path = tmp_path_factory.mktemp("compare-seeds") / "seeds.duckdb"
    scenarios = [s for s in get_env("toolwoz").load_split("val", None) if len(s.domains) == 1][:6]
    pairs = []
    for seed in (0, 0, 0, 1, 2):
        pairs.append(tuple(start_run(path, scenarios, RolloutConfig(agent="oracle", user="agenda", max_turns=turns,
                                                                    seed=seed)).run_id
                           for turns in (1, 20)))
    return path, pairs


def test_the_same_scenarios_pooled_three_times_give_the_interval_of_one(seeded):
    """Three pairs of identical runs are one pair's evidence, not three times as much: the
    pooled interval equals one pair's (pooling each pair on its own had 18 pairs, narrower)."""
    path, pairs = seeded
    db = Database(path, read_only=True)
    rewards = [[c.reward for c in reads.list_conversations(db, run_id=base)] for base, _ in pairs[:3]]
    assert rewards[0] == rewards[1] == rewards[2]  # the runs are identical
    one = compare_pooled([(db, *pairs[0])], force=True)
    three = compare_pooled([(db, *pair) for pair in pairs[:3]], force=True)
    for name in ("reward", "success"):
        assert three.metric(name).difference == one.metric(name).difference
        assert three.metric(name).base == one.metric(name).base
    assert (three.n, three.pairs, three.pairs_per_scenario) == (6, 3, {3: 6})
    difference = one.metric("reward").difference
    assert difference.low < difference.high  # a real interval, which 18 pairs would have narrowed
    assert [p.n for p in three.per_pair] == [6, 6, 6]


def test_pooled_seeds_average_each_scenario_over_the_pairs(seeded):
    path, pairs = seeded
    db = Database(path, read_only=True)
    chosen = [pairs[0], pairs[3], pairs[4]]  # seeds 0, 1, 2
    pooled = compare_pooled([(db, *pair) for pair in chosen], force=True)
    assert (pooled.n, pooled.pairs_per_scenario) == (6, {3: 6})
    per_seed = [(conversation_metrics(db, base), conversation_metrics(db, trained)) for base, trained in chosen]
    scenario_means = [sum(t[s]["reward"] - b[s]["reward"] for b, t in per_seed) / 3 for s in per_seed[0][0]]
    assert pooled.metric("reward").difference.mean == pytest.approx(sum(scenario_means) / 6)
    assert [p.seed for p in pooled.per_pair] == [0, 1, 2]
    shown = CliRunner().invoke(app, ["compare", *chosen[0], "--db", str(path), "--force",
                                     *[arg for pair in chosen[1:] for arg in ("--pool", f"{path}:{pair[0]}:{pair[1]}")]],
                               terminal_width=240)
    assert shown.exit_code == 0, shown.output
    assert "6 scenarios pooled over 3 pairs of runs" in shown.output and "6 in 3 pairs" in shown.output
    assert "Each pair on its own" in shown.output and "reward difference across pairs" in shown.output


def test_disjoint_scenario_sets_still_pool_as_one_pair_each(runs):
    """exp3's replication: two pairs on different scenarios, every scenario once."""
    path, base, trained, path2, base2, trained2 = runs
    pooled = compare_pooled([(Database(path, read_only=True), base, trained),
                             (Database(path2, read_only=True), base2, trained2)], force=True)
    assert (pooled.n, pooled.pairs, pooled.pairs_per_scenario) == (10, 2, {1: 10})


def test_pairs_with_other_settings_than_the_first_are_refused_unless_forced(seeded, variants):
    path, pairs = seeded
    vpath, ids = variants
    first = (Database(vpath, read_only=True), ids["base"], ids["same"])  # turn cap 15 on both sides
    other = (Database(path, read_only=True), pairs[0][1], pairs[1][1])  # turn cap 20 on both sides
    with pytest.raises(ValueError, match="other settings than the first pair: turn cap 15 vs 20"):
        compare_pooled([first, other])
    forced = compare_pooled([first, other], force=True)
    assert any("other settings than the first pair" in w for w in forced.warnings)
    seeds = (Database(path, read_only=True), pairs[3][1], pairs[4][1])  # seeds 1 and 2: within the pair, refused
    with pytest.raises(ValueError, match="seed 1 vs 2"):
        compare_pooled([seeds])


# -- two agents played and compared in one command (`josh compare-agents`) ----------------------


def _idle_agent(path):
    """A script agent that only speaks: it reaches no goal."""
    from engine_fixtures import speak

    path.write_text(json.dumps({"turns": [[[speak("Let me see what I can do.")]]]}))
    return f"script:{path}"


def test_compare_agents_plays_both_stores_them_and_a_rerun_plays_only_what_is_left(tmp_path, toolwoz_data):
    import duckdb

    from josh_core.evaluate import evaluate_agents

    idle = _idle_agent(tmp_path / "idle.json")
    db_path = tmp_path / "agents.duckdb"
    args = ["compare-agents", idle, "oracle", "--split", "val", "--single-domain", "--limit", "3",
            "--max-turns", "6", "--db", str(db_path)]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--json"])
    assert first.exit_code == 0, first.output
    played = json.loads(first.stdout)
    base, trained = played["base"], played["trained"]
    assert (base["played"], base["reused"], trained["played"], trained["reused"]) == (3, 0, 3, 0)
    assert base["run_id"].startswith("run-cmp-") and base["run_id"] != trained["run_id"]
    comparison = played["comparison"]
    assert comparison["n"] == 3 and comparison["metrics"][0]["base"]["mean"] == 0.0
    assert comparison["metrics"][0]["trained"]["mean"] == 1.0  # the oracle reaches every goal
    db = Database(db_path, read_only=True)
    runs = {r.id: r for r in reads.list_runs(db)}
    assert runs[base["run_id"]].agent_spec == idle and runs[trained["run_id"]].config["max_turns"] == 6
    single = [s.id for s in get_env("toolwoz").load_split("val", None) if len(s.domains) == 1][:3]
    assert [c.scenario_id for c in reads.list_conversations(db, run_id=base["run_id"])] == single
    del db

    again = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert (again["base"]["played"], again["base"]["reused"]) == (0, 3)
    assert again["base"]["run_id"] == base["run_id"] and again["comparison"] == comparison

    # An interrupted run (one conversation left pending) is resumed: only that one is played.
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE conversations SET status = 'pending' WHERE id = ?", [f"{trained['run_id']}:1"])
    con.close()
    resumed = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert (resumed["trained"]["played"], resumed["trained"]["reused"]) == (1, 2)
    assert resumed["comparison"] == comparison

    # Other settings, or other agent files, are another run.
    other = json.loads(runner.invoke(app, [*args[:-4], "--max-turns", "1", "--db", str(db_path), "--json"]).stdout)
    assert other["base"]["run_id"] != base["run_id"] and other["trained"]["played"] == 3
    (tmp_path / "idle.json").write_text((tmp_path / "idle.json").read_text().replace("see what", "check what"))
    changed = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert changed["base"]["run_id"] != base["run_id"] and changed["base"]["played"] == 3
    assert changed["trained"]["run_id"] == trained["run_id"] and changed["trained"]["played"] == 0

    shown = runner.invoke(app, args, terminal_width=200)
    assert shown.exit_code == 0 and "3 paired scenarios" in shown.output
    assert f"josh compare {changed['base']['run_id']} {trained['run_id']}" in " ".join(shown.output.split())
    with pytest.raises(ValueError, match="other settings: max_turns"):
        scenarios = get_env("toolwoz").load_split("val", 1)
        evaluate_agents(db_path, scenarios, RolloutConfig(agent="oracle", max_turns=2),
                        RolloutConfig(agent="oracle", max_turns=3))
