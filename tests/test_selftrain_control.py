"""The rejection-sampling SFT control of `josh selftrain` (plain rollouts with JOSH's budget of
sampled agent turns, successes only), and KTO exports that keep 100% trees only.

Rollouts are played by the rule-based oracle (JOSH trees and the control's plain conversations
alike), trainings and evaluations by a tiny random model: fast, and every stage is real."""

from __future__ import annotations

from pathlib import Path

import pytest

from josh_core.storage import reads
from josh_core.storage import stages as stage_store
from josh_core.storage.db import Database
from josh_core.train.selftrain import (
    Selftrain,
    SelftrainConfig,
    StageEvent,
    agent_turns_by_scenario,
    josh_budget,
    scenario_slices,
)
from train_fixtures import tiny_model

pytestmark = pytest.mark.slow


class OracleRollouts(Selftrain):
    """JOSH trees and the control's rollouts by the oracle; evaluations by the trained model."""

    def _rollout_config(self, agent, *, josh):
        config = super()._rollout_config(agent, josh=josh)
        return config.model_copy(update={"agent": "oracle", "style": "compact"}) if josh else config

    def _control_config(self, agent, seed, max_turns):
        return super()._control_config(agent, seed, max_turns).model_copy(update={"agent": "oracle", "style": "compact"})


class Interrupted(Exception):
    pass


class StopsInTheControl(OracleRollouts):
    """Stopped once the control's first run is played and its second one recorded."""

    calls = 0

    def _control_config(self, agent, seed, max_turns):
        StopsInTheControl.calls += 1
        if StopsInTheControl.calls == 2:
            raise Interrupted
        return super()._control_config(agent, seed, max_turns)


def control_config(model: Path, **changes) -> SelftrainConfig:
    # Two JOSH turns: the first train scenario needs three oracle turns, so its plain
    # conversations fail and its JOSH tree holds alternatives; the others finish in one.
    settings = dict(experiment="c", base=f"hf:{model}", train_limit=3, eval_limit=1, beam=2, max_turns=2,
                    eval_max_turns=1, kinds=["sft"], control="rs-sft", concurrency=2,
                    train_overrides={"sft": {"max_steps": 1}})
    return SelftrainConfig(**{**settings, **changes})


def test_control_matches_the_josh_budget_keeps_successes_and_resumes(tmp_path):
    model = tiny_model(tmp_path / "tiny")
    db_path = tmp_path / "st.duckdb"
    config = control_config(model)

    with pytest.raises(Interrupted):
        StopsInTheControl(config, db_path).run()
    db = Database(db_path, read_only=True)
    stopped = stage_store.get_stages(db, "c")[(1, "rollout-rs-sft")]
    assert stopped["status"] == "running"
    recorded = [r["run_id"] for r in stopped["result"]["runs"]]
    assert len(recorded) == 2  # the second run is recorded before it is played
    assert reads.get_run(db, recorded[0]) and recorded[1] not in {r.id for r in reads.list_runs(db)}

    events: list[StageEvent] = []
    result = OracleRollouts(config, db_path, on_event=events.append).run()
    db = Database(db_path, read_only=True)
    stages = stage_store.get_stages(db, "c")
    rollout = stages[(1, "rollout-rs-sft")]["result"]
    assert [r["run_id"] for r in rollout["runs"]][:2] == recorded  # resumed, not replanned
    assert next(e for e in events if e.stage == "rollout-rs-sft").status == "resumed"

    # The budget: every finished JOSH tree's agent nodes, per scenario; the control sampled
    # exactly as many agent turns for each scenario, attempt after attempt with fresh seeds.
    josh_run = stages[(1, "rollout")]["result"]["run_id"]
    budget = josh_budget(db, josh_run)
    assert rollout["budget"] == budget and len(budget) == 3
    spent: dict[str, int] = {}
    for r in rollout["runs"]:
        for sid, turns in agent_turns_by_scenario(db, r["run_id"]).items():
            spent[sid] = spent.get(sid, 0) + turns
        run = reads.get_run(db, r["run_id"])
        assert run.kind == "plain" and run.config["max_turns"] == r["max_turns"] <= config.max_turns
    assert spent == budget and rollout["agent_turns"] == rollout["budget_turns"] == sum(budget.values())
    assert rollout["attempts"] >= 2
    assert len({r["seed"] for r in rollout["runs"]}) == rollout["attempts"]  # a fresh seed per attempt

    # Only the successes are SFT data: some plain conversations failed, none of them passed.
    played = [conv for r in rollout["runs"] for conv in reads.list_conversations(db, run_id=r["run_id"])]
    assert rollout["conversations"] == len(played)
    assert 0 < rollout["successes"] < len(played)
    export = stages[(1, "export-rs-sft")]["result"]
    assert export["min_reward"] == 1.0 and export["considered"] == rollout["successes"] and export["rows"] >= 1

    # Trained with the SFT settings from the same starting agent, evaluated on the same scenarios.
    trained = stages[(1, "train-rs-sft")]["result"]
    assert Path(trained["adapter"], "adapter_config.json").exists() and trained["steps"] == 1
    evaluation = stages[(1, "eval-rs-sft")]["result"]
    assert evaluation["agent"] == f"hf:{model}@{trained['adapter']}"
    assert [r.kind for r in result.rounds] == [None, "sft", "rs-sft"]
    control_row = result.rounds[2]
    assert control_row.agent_turns == result.rounds[1].agent_turns == sum(budget.values())
    assert control_row.plain_successes == rollout["successes"] and control_row.examples == export["rows"]
    assert {c["kind"] for c in result.comparisons} == {"sft", "rs-sft"}  # both paired with the base

    # Everything is stored: a rerun redoes nothing.
    again: list[StageEvent] = []
    OracleRollouts(config, db_path, on_event=again.append).run()
    control_stages = [e for e in again if e.stage.endswith("rs-sft")]
    assert len(control_stages) == 4 and {e.status for e in control_stages} == {"skipped"}

    # `--summary` shows the control beside JOSH, with the agent turns each sampled.
    from typer.testing import CliRunner

    from josh_core.cli import app

    shown = CliRunner().invoke(app, ["selftrain", "--experiment", "c", "--db", str(db_path), "--summary"],
                               env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert "agent turns sampled" in shown.output and "round 1 rs-sft vs the starting agent" in shown.output
    control_line = next(line for line in shown.output.splitlines() if "round1-rs-sft" in line and "│" in line)
    assert f" {sum(budget.values())} " in control_line

    # The app's Training page shows the same rows.
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=180)
    app.query_params["db"] = str(db_path)
    app.run()
    app.switch_page("app_pages/training.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    table = next(d.value for d in app.dataframe if "agent turns sampled" in d.value.columns)
    control_rows = table[table["kind"] == "rs-sft"]
    assert len(control_rows) == 1
    assert int(control_rows["agent turns sampled"].iloc[0]) == sum(budget.values())
    assert int(control_rows["control successes"].iloc[0]) == rollout["successes"]


def test_kto_under_the_partial_filter_has_no_rows_from_goalless_trees(tmp_path):
    db_path = tmp_path / "st.duckdb"
    # One JOSH turn: the first train scenario needs three, so its tree reaches no goal.
    config = SelftrainConfig(experiment="k", train_limit=3, beam=2, max_turns=1, kinds=["sft", "kto"],
                             filter="partial", concurrency=2)
    loop = OracleRollouts(config, db_path)
    _, slices, _ = scenario_slices(config)
    rollout = loop._stage(1, "rollout", loop._play(slices[0], loop._rollout_config("oracle", josh=True)),
                          loop._new_run)
    db = Database(db_path, read_only=True)
    rewards = {c.scenario_id: c.reward for c in reads.list_conversations(db, run_id=rollout["run_id"])}
    goalless = [sid for sid, reward in rewards.items() if not reward]
    assert goalless and any(reward == 1.0 for reward in rewards.values())

    # Without a reward filter the goalless tree gives undesirable rows (what exp3's KTO data had).
    from josh_core.extract import ExportOptions, export_dataset

    unfiltered = export_dataset(db, ExportOptions(kind="kto", min_reward=None), tmp_path / "all.jsonl",
                                run_id=rollout["run_id"])
    assert unfiltered.considered == 3 and unfiltered.rows > 0

    kto = loop._export_stage(1, "kto", rollout["run_id"], tmp_path / "kto.jsonl")
    assert kto["min_reward"] == 1.0 and kto["considered"] == sum(1 for r in rewards.values() if r == 1.0)
    sft = loop._export_stage(1, "sft", rollout["run_id"], tmp_path / "sft.jsonl")
    assert sft["min_reward"] is None and sft["considered"] == 3  # the filter still applies to SFT


def test_the_control_needs_sft_and_older_experiments_read_as_without_it(tmp_path):
    with pytest.raises(ValueError, match="--kind sft"):
        SelftrainConfig(kinds=["kto"], control="rs-sft")
    db_path = tmp_path / "st.duckdb"
    stored = SelftrainConfig(experiment="old").model_dump(mode="json", exclude={"ray_address"})
    del stored["control"], stored["env"]  # stored before these settings existed
    stage_store.start_stage(Database(db_path), "old", 0, "config", stored)
    stage_store.finish_stage(Database(db_path), "old", 0, "config", stored, 0.0)
    Selftrain(SelftrainConfig(experiment="old"), db_path)._check_config()  # the same experiment
    with pytest.raises(ValueError, match="control"):
        Selftrain(SelftrainConfig(experiment="old", control="rs-sft"), db_path)._check_config()


def test_the_cli_names_the_flags_of_a_control_without_sft(tmp_path):
    from typer.testing import CliRunner

    from josh_core.cli import app

    db = tmp_path / "st.duckdb"
    refused = CliRunner().invoke(app, ["selftrain", "--control", "rs-sft", "--kind", "kto", "--db", str(db)])
    assert refused.exit_code != 0
    assert "invalid settings: the rs-sft control (--control rs-sft) is trained with the SFT settings: add --kind sft" \
        in " ".join(refused.output.split())
    assert not db.exists()  # nothing stored


def test_a_control_conversation_that_samples_no_turn_gives_its_scenario_up(tmp_path):
    """The budget loop ends even when playing a scenario again can never spend its budget."""

    class NoTurns(OracleRollouts):
        def _control_config(self, agent, seed, max_turns):
            return super()._control_config(agent, seed, max_turns).model_copy(update={"max_turns": 0})

    config = SelftrainConfig(experiment="z", train_limit=2, beam=2, max_turns=1, control="rs-sft", concurrency=2)
    loop = NoTurns(config, tmp_path / "st.duckdb")
    _, slices, _ = scenario_slices(config)
    rollout = loop._stage(1, "rollout", loop._play(slices[0], loop._rollout_config("oracle", josh=True)),
                          loop._new_run)
    assert loop._control_round(1, slices[0], "oracle", rollout["run_id"], []) == "oracle"  # nothing trained
    stages = stage_store.get_stages(Database(tmp_path / "st.duckdb", read_only=True), "z")
    control = stages[(1, "rollout-rs-sft")]["result"]
    assert control["attempts"] == 1 and control["agent_turns"] == 0 < control["budget_turns"]
    assert stages[(1, "train-rs-sft")]["result"] == {"skipped": "the export has no rows"}


def test_train_offset_skips_the_scenarios_a_starting_adapter_trained_on():
    """A shipped warm-start adapter as --base with --train-offset 80 plays the same JOSH scenarios
    as an experiment that trains that warm start itself on 80 scenarios."""
    warm, with_warm_start, evaluation = scenario_slices(SelftrainConfig(warm_start=80, train_limit=5, rounds=2))
    none, offset, evaluation_offset = scenario_slices(SelftrainConfig(train_offset=80, train_limit=5, rounds=2))
    assert none == [] and len(warm) == 80
    assert [[s.id for s in r] for r in offset] == [[s.id for s in r] for r in with_warm_start]
    assert not {s.id for s in warm} & {s.id for r in offset for s in r}
    assert [s.id for s in evaluation_offset] == [s.id for s in evaluation]
