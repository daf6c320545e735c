"""The app's pages on databases as they are during real work, through Streamlit's AppTest (the
real pages without a browser): a run being written or stopped (pending conversations), an
older schema and a blank DuckDB file (viewing must not write them), trainings with the
trainer's end-of-run summary row, the Launch form across page changes, and the commands the
pages show for pasting into a shell."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from josh_core.analysis.training_log import axis_range, split_log
from josh_core.launch import check_spec, training_settings
from josh_core.storage import reads, trainings, writes
from josh_core.storage.db import Database
from josh_core.storage.schema import LATEST_VERSION, MIGRATIONS, migrate

APP = str(Path(__file__).resolve().parents[1] / "app.py")

# What `josh train --max-steps 2` logs (tests/test_train_models.py trains for real): one row per
# optimiser step, then the trainer's summary for the same last step, without `loss`.
TRAINER_LOG = [
    {"step": 1, "max_steps": 2, "epoch": 0.5, "loss": 1.06, "grad_norm": 1.05, "learning_rate": 2e-4},
    {"step": 2, "max_steps": 2, "epoch": 1.0, "loss": 0.98, "grad_norm": 1.41, "learning_rate": 1e-4},
    {"step": 2, "max_steps": 2, "epoch": 1.0, "train_runtime": 45.4, "train_samples_per_second": 0.044,
     "train_steps_per_second": 0.044, "total_flos": 3.3e11, "train_loss": 1.02},
]  # fmt: skip


def open_page(db: Path, page: str | None = None, app=None):
    from streamlit.testing.v1 import AppTest

    if app is None:
        app = AppTest.from_file(APP, default_timeout=180)
        app.query_params["db"] = str(db)
        app.run()
    if page is not None:
        app.switch_page(page)
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def fingerprint(path: Path) -> tuple:
    data = path.read_bytes()
    wal = path.with_name(path.name + ".wal")
    return hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns, wal.exists()


@pytest.fixture
def stopped_run_db(tmp_path) -> Path:
    """A run as `josh rollout` leaves it when stopped early: recorded, its conversations pending
    (no stop reason, no goals, no reward yet), its status not finished."""
    db = Database(tmp_path / "stopped run.duckdb")
    run_id = writes.create_run(db, kind="josh", config={"max_turns": 3}, agent_spec="script:a.json",
                               scenarios=[(f"s{i}", {"id": f"s{i}"}) for i in range(3)])  # fmt: skip
    writes.set_run_status(db, run_id, "incomplete")
    return db.path


# -- Overview on a run being written or stopped ----------------------------------------------


def test_overview_shows_a_stopped_run_with_pending_conversations(stopped_run_db):
    # Before: TypeError "boolean value of NA is ambiguous" (pandas NA in stop_reason / goals).
    app = open_page(stopped_run_db)
    frames = [df.value for df in app.dataframe]
    conversations = next(f for f in frames if "scenario_id" in f.columns)
    assert list(conversations["scenario_id"]) == ["s0", "s1", "s2"]
    assert list(conversations["stopped"]) == ["pending"] * 3 and list(conversations["goals"]) == ["–"] * 3


# -- viewing never writes ------------------------------------------------------------------------


def test_viewing_an_older_database_leaves_it_as_it_is_until_the_migrate_button(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, MIGRATIONS[:2])  # a database of an older workbench (no trainings table yet)
    con.close()
    before = fingerprint(path)
    app = open_page(path)  # Overview
    assert fingerprint(path) == before, "opening Overview wrote the database"
    assert any("older JOSH Workbench" in w.value for w in app.warning)
    open_page(path, "app_pages/training.py", app)
    assert fingerprint(path) == before, "opening Training wrote the database"
    assert reads.schema_version(Database(path, read_only=True)) == 2
    app.button(key="josh-migrate").click().run()
    assert not app.exception
    assert reads.schema_version(Database(path, read_only=True)) == LATEST_VERSION
    assert any(f"schema version {LATEST_VERSION}" in s.value for s in app.success)


def test_viewing_a_blank_duckdb_file_does_not_create_the_schema(tmp_path):
    path = tmp_path / "blank.duckdb"
    duckdb.connect(str(path)).close()
    before = fingerprint(path)
    app = open_page(path)
    assert fingerprint(path) == before
    assert any("no tables" in i.value for i in app.info)
    assert app.button(key="josh-migrate").label == "Create the JOSH schema in this file"


# -- Training page -------------------------------------------------------------------------------


def test_the_trainer_summary_row_is_not_a_step():
    log = split_log(TRAINER_LOG)
    assert [r["step"] for r in log.steps] == [1, 2] and log.last_step == 2 and log.max_steps == 2
    assert log.summary["train_loss"] == 1.02 and log.losses == [1.06, 0.98]


def test_the_loss_axis_holds_the_data_with_a_margin():
    low, high = axis_range([1.06, 0.98])
    assert low < 0.98 and high > 1.06 and high < 1.2  # not a fixed 0-1 axis, not a huge one
    low, high = axis_range([2.5])  # one point: still a span around it
    assert low < 2.5 < high
    assert axis_range([float("nan")]) is None


def test_training_page_counts_steps_scales_its_axis_and_shows_commands_unescaped(tmp_path):
    path = tmp_path / "db one.v1.duckdb"  # a space and dots: the old empty state showed `db\ one\.v1\.duckdb`
    db = Database(path)
    db.ensure_schema()
    app = open_page(path, "app_pages/training.py")
    commands = [c.value for c in app.code]
    assert any(shlex.split(c)[-1] == str(path) for c in commands), commands
    assert not any("\\" in c for c in commands)

    training = trainings.create_training(db, kind="sft", base="embedded", data_path="sft.jsonl", data_hash="0" * 64,
                                         examples=2, config={}, adapter_path=str(tmp_path / "adapter"))  # fmt: skip
    trainings.finish_training(db, training, status="done", seconds=50.0, metrics=TRAINER_LOG)
    app = open_page(path, "app_pages/training.py")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Steps"] == "2 of 2", metrics  # before: "Steps logged" 3
    assert metrics["Final loss"] == "0.9800"
    charts = app.get("vega_lite_chart")
    assert charts, "no loss chart"
    spec = charts[0].proto.spec
    low, high = axis_range([1.06, 0.98])
    assert f"{high}" in spec and f"{low}" in spec, "the loss axis is not scaled to the data"
    assert any("not a step" in c.value for c in app.caption)
    assert any(shlex.split(c.value)[:3] == ["josh", "rollout", "--agent"] for c in app.code)


def test_training_settings_come_from_the_trainer_config():
    from josh_core.train.config import KTOTrainConfig, SFTTrainConfig

    sft = {s.name: s.default for s in training_settings("sft")}
    assert sft["learning_rate"] == SFTTrainConfig.learning_rate and sft["max_steps"] == -1
    kto = {s.name: s.default for s in training_settings("kto")}
    assert kto["beta"] == KTOTrainConfig().beta and kto["per_device_train_batch_size"] == 2
    assert "beta" not in sft


def test_an_experiment_is_checked_as_the_command_checks_it_and_names_one_folder(tmp_path):
    from josh_core.launch import selftrain_problem
    from josh_core.train.selftrain import Selftrain, SelftrainConfig

    assert selftrain_problem(experiment="exp4-s0", kinds=["sft"], rounds=1) is None
    # Before, the app started `josh selftrain --experiment ../../escaped`: its adapters and
    # exports went two folders above the experiment's working directory.
    for name in ("../../escaped", "a/b", "a\\b", ".hidden", " padded", ""):
        assert "experiment: give one folder name" in selftrain_problem(experiment=name, kinds=["sft"])
    assert "kinds" in selftrain_problem(experiment="x", kinds=[])
    assert "rounds" in selftrain_problem(experiment="x", rounds=0)
    folder = Selftrain(SelftrainConfig(experiment="with space"), tmp_path / "x.duckdb").workdir
    assert folder.parent == tmp_path / "x-selftrain" and folder.name == "with space"


# -- Launch ----------------------------------------------------------------------------------------


def test_launch_accepts_the_oracle_agent_as_the_cli_does():
    assert check_spec("oracle") == []  # before: "unknown kind 'oracle'"


def test_launch_form_keeps_its_values_after_moving_away_and_back(tmp_path):
    path = tmp_path / "new.duckdb"
    app = open_page(path, "app_pages/launch.py")
    app.text_input(key="keep-launch-agent").input("oracle")
    app.number_input(key="keep-launch-limit").set_value(3)
    user_key = next(t.key for t in app.text_input if t.key.startswith("keep-launch-user-"))
    app.text_input(key=user_key).input(f"script:{tmp_path / 'no-such-user.json'}")
    next(b for b in app.button if b.label == "Start").click()  # submitted, and refused: nothing starts
    app.run()
    assert any("Not started" in e.value and "no-such-user.json" in e.value for e in app.error)
    open_page(path, "app_pages/overview.py", app)
    open_page(path, "app_pages/launch.py", app)
    # Before: the form came back with its defaults (embedded, 1 scenario).
    assert app.text_input(key="keep-launch-agent").value == "oracle"
    assert app.number_input(key="keep-launch-limit").value == 3
    assert app.text_input(key=user_key).value.endswith("no-such-user.json")


def test_launch_says_still_running_only_while_the_earlier_rollout_runs(tmp_path):
    path = tmp_path / "new.duckdb"
    app = open_page(path, "app_pages/launch.py")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        app.session_state["launched"] = {"pid": process.pid, "log": str(tmp_path / "none.log"), "process": process,
                                         "args": ["rollout"], "run": None, "stopped": False, "started": 0.0}  # fmt: skip
        app.text_input(key="keep-launch-agent").input("oracle")
        next(b for b in app.button if b.label == "Start").click()  # the form's submit button
        app.run()
        assert any("still running" in e.value for e in app.error)
    finally:
        process.kill()
        process.wait()
    app.session_state["launched"]["process"] = subprocess.Popen([sys.executable, "-c", "pass"])
    app.session_state["launched"]["process"].wait()
    app.run()
    # Before: the "still running" error stayed beside "Finished".
    assert not any("still running" in e.value for e in app.error)
    assert any("Finished" in s.value for s in app.success)


# -- stopped runs: said so, and offered resume ---------------------------------------------------


def test_a_stopped_runs_conversations_say_so_and_offer_resume(stopped_run_db):
    app = open_page(stopped_run_db)  # Overview
    assert any("was stopped (incomplete) with 0 of 3 conversations finished" in w.value for w in app.warning)
    assert any(shlex.split(c.value)[:3] == ["josh", "rollout", "--resume"] for c in app.code)
    open_page(stopped_run_db, "app_pages/trees.py", app)
    # Before: "This conversation is still being played" for ever.
    assert not any("still being played" in c.value for c in app.caption)
    assert any("its run" in w.value and "was stopped" in w.value for w in app.warning)
    assert any(b.label == "Resume" for b in app.button)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Nodes"] == "0" and metrics["Stopped"] == "pending"
