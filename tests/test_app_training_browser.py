"""The live workflow in headless Chromium, moved through by the sidebar as a person does:
train an adapter from the Training page (a real 2-step SFT of the embedded model on an export
of the database's runs) and see its loss and the adapter offered to Launch; launch a rollout,
stop it and resume it with the Overview open in another tab. Screenshots: test-artifacts/app/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app_browser import chromium, no_exception, query, shot, sidebar_to, streamlit_app, wait_idle
from app_fixtures import make_app_db
from engine_fixtures import speak
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.storage.trainings import list_trainings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAINING_TIMEOUT_MS = 20 * 60_000  # loading the model and two CPU steps; minutes on a busy machine


@pytest.fixture(scope="module")
def browser():
    with chromium() as new_page:
        yield new_page


def _main(page):
    """The page's own area (the header has Streamlit's own Stop button)."""
    return page.locator('[data-testid="stMain"]')


def _spin(page, label: str):
    return page.get_by_role("spinbutton", name=label, exact=True)


def test_train_an_adapter_from_the_training_page_and_launch_it(browser, tmp_path_factory, toolwoz_data):
    db = make_app_db(tmp_path_factory.mktemp("train-app"))
    with streamlit_app(db) as url:
        page = browser()
        page.goto(url)
        page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
        sidebar_to(page, "Training", "Trainings")
        # The form, with the trainer's defaults; a smoke run: 2 steps, short sequences.
        expect(_spin(page, "max steps")).to_have_value("-1")
        for label, value in (("max steps", "2"), ("gradient accumulation steps", "1"), ("max length", "256"),
                             ("warmup steps", "0")):  # fmt: skip
            _spin(page, label).fill(value)
        shot(page, "train-form")
        _main(page).get_by_role("button", name="Train", exact=True).click()
        page.get_by_text("training is running").first.wait_for(timeout=120_000)
        command = page.locator('[data-testid="stCode"]').filter(has_text="josh train").first.inner_text()
        assert "--kind sft" in command and "--max-steps" not in command and "--config" in command
        # Away and back by the sidebar: the launched training is still followed.
        sidebar_to(page, "Overview", "JOSH Workbench")
        sidebar_to(page, "Training", "Trainings")
        page.get_by_text(re.compile(r"training is running|Finished: the SFT training")).first.wait_for(timeout=60_000)
        page.get_by_text("Adapter ready: embedded@").first.wait_for(timeout=TRAINING_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert page.get_by_text(re.compile(r"step 2 of 2 · loss \d+\.\d{4}")).count() >= 1
        assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 1
        shot(page, "train-done")

        [training] = list_trainings(Database(db))
        assert training.status == "done" and len(training.losses) == 2
        assert training.config["max_steps"] == 2 and training.config["max_length"] == 256
        agent = f"embedded@{training.adapter_path}"
        assert (Path(training.adapter_path) / "adapter_model.safetensors").is_file()
        # The adapter offered to Launch: the link fills the agent field.
        page.get_by_role("link", name=f"Play it: launch {agent}").click()
        page.get_by_role("heading", name="Launch a rollout").wait_for(timeout=45_000)
        wait_idle(page)
        expect(page.get_by_role("textbox", name="Agent SPEC")).to_have_value(agent)
        assert query(page)["db"] == str(db)
        shot(page, "train-launch-adapter")
        no_exception(page)
        assert not page.errors and not page.external
        page.close()


def _end(pid: int) -> None:
    """End a process the app started (SIGTERM, then SIGKILL), if it still runs."""
    import os
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def _started(page) -> int | None:
    """The process id the Training page says it follows, if any."""
    shown = _main(page).get_by_text(re.compile(r"is running \(process \d+\)"))
    return int(re.search(r"process (\d+)", shown.first.inner_text()).group(1)) if shown.count() else None


def test_a_selftrain_experiment_is_refused_on_bad_settings_then_starts_is_listed_and_stops(browser, tmp_path,
                                                                                          toolwoz_data):  # fmt: skip
    """The experiment form end to end, cheaply: a name that would climb out of the experiment's
    folder is refused (nothing started), a one-conversation experiment starts, is listed with
    its stages while it runs and stays followed across pages; it is stopped while it loads the
    model for its first evaluation (playing and training it are tested with the selftrain code)."""
    from josh_core.storage.stages import list_experiments

    db = tmp_path / "experiments.duckdb"
    Database(db).ensure_schema()
    started = []  # processes the page started: ended whatever happens
    with streamlit_app(db) as url:
        page = browser()
        try:
            page.goto(url)
            page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
            sidebar_to(page, "Training", "Trainings")
            _main(page).get_by_text("josh selftrain experiment", exact=True).click()
            wait_idle(page)
            experiment = page.get_by_role("textbox", name="Experiment")
            # Before, this started `josh selftrain --experiment ../escaped`, whose adapters and
            # exports went to tmp_path/escaped, outside the experiment's folder.
            experiment.fill("../escaped")
            _main(page).get_by_role("button", name="Start the experiment").click()
            wait_idle(page)
            started.append(_started(page))
            expect(_main(page).get_by_text("Not started: experiment: give one folder name")).to_be_visible()
            assert started == [None] and list_experiments(Database(db)) == []
            shot(page, "selftrain-refused")

            experiment.fill("smoke")
            for label in ("Rounds", "JOSH conversations", "Eval conversations", "Max beam", "Branching", "Max turns",
                          "Max steps (0: epochs)"):  # fmt: skip
                _spin(page, label).fill("1")
            _main(page).get_by_role("button", name="Start the experiment").click()
            _main(page).get_by_text("The experiment smoke is running").first.wait_for(timeout=60_000)
            started.append(_started(page))
            command = page.locator('[data-testid="stCode"]').filter(has_text="josh selftrain").first.inner_text()
            for flag in ("--experiment smoke", "--kind sft", "--rounds 1", "--train-limit 1", "--eval-limit 1",
                         "--beam 1", "--branching 1", "--max-turns 1", "--max-steps 1", f"--db {db}"):  # fmt: skip
                assert flag in command, (flag, command)
            # Listed while it runs (the process records its settings first), without a reload.
            _main(page).get_by_role("heading", name="Self-training experiments").wait_for(timeout=120_000)
            expect(page.get_by_role("combobox", name="Experiment")).to_have_value("smoke")
            assert list_experiments(Database(db)) == ["smoke"]
            # Away and back: still followed, and the form still the experiment's (before, the
            # kind went back to SFT once the page had followed a running job).
            sidebar_to(page, "Overview", "JOSH Workbench")
            sidebar_to(page, "Training", "Trainings")
            expect(_main(page).get_by_text("The experiment smoke is running").first).to_be_visible()
            expect(page.get_by_role("textbox", name="Experiment")).to_be_visible()
            shot(page, "selftrain-running")
            _main(page).get_by_role("button", name="Stop", exact=True).click()
            page.get_by_text("Stopped.").first.wait_for(timeout=90_000)
            wait_idle(page)
            no_exception(page)
            shot(page, "selftrain-stopped")
            assert not page.errors and not page.external
        finally:
            for pid in filter(None, started):
                _end(pid)
            page.close()


def test_launch_stop_and_resume_a_rollout_with_the_overview_open(browser, tmp_path, toolwoz_data):
    db = tmp_path / "live.duckdb"
    agent = tmp_path / "slow-agent.json"  # five seconds per turn: the run lasts long enough to stop
    agent.write_text(json.dumps({"latency": 5.0, "turns": [[[speak("How can I help?")], [speak("Hello.")]],
                                                           [[speak("Anything else?")], [speak("Sure.")]]]}))
    with streamlit_app(db) as url:
        overview = browser()  # the Overview open in another tab all along
        overview.goto(f"{url}/?db={db}")
        overview.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
        launch = browser()
        launch.goto(url)
        launch.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
        sidebar_to(launch, "Launch", "Launch a rollout")
        launch.get_by_role("textbox", name="Agent SPEC").fill(f"script:{agent}")
        _spin(launch, "Scenarios").fill("3")
        _spin(launch, "Max turns").fill("3")
        _main(launch).get_by_role("button", name="Start", exact=True).click()
        launch.get_by_text(re.compile(r"is running: run run-")).first.wait_for(timeout=120_000)
        run_id = re.search(r"run (run-\S+)", launch.get_by_text(re.compile(r"is running: run run-")).first.inner_text()).group(1)
        overview.reload()  # the run being written
        overview.get_by_role("heading", name="Conversations").wait_for(timeout=45_000)
        wait_idle(overview)
        no_exception(overview)

        _main(launch).get_by_role("button", name="Stop", exact=True).click()
        launch.get_by_text("Stopped. The run can be continued").first.wait_for(timeout=60_000)
        wait_idle(launch)
        no_exception(launch)
        shot(launch, "live-stopped")
        stopped = {c.id: c.status for c in reads.list_conversations(Database(db), run_id=run_id)}
        assert len(stopped) == 3 and list(stopped.values()).count("done") < 3, stopped

        overview.reload()  # the stopped run, with pending or interrupted conversations
        overview.get_by_role("heading", name="Conversations").wait_for(timeout=45_000)
        wait_idle(overview)
        no_exception(overview)
        shot(overview, "live-overview-stopped")

        _main(launch).get_by_role("button", name="Resume", exact=True).click()
        launch.get_by_text(f"Finished: run {run_id}.").first.wait_for(timeout=300_000)
        wait_idle(launch)
        no_exception(launch)
        command = launch.locator('[data-testid="stCode"]').filter(has_text="--resume").first.inner_text()
        assert f"--resume {run_id}" in command
        shot(launch, "live-resumed")
        statuses = [c.status for c in reads.list_conversations(Database(db), run_id=run_id)]
        assert statuses == ["done"] * 3

        overview.reload()
        overview.get_by_role("heading", name="Conversations").wait_for(timeout=45_000)
        wait_idle(overview)
        no_exception(overview)
        assert not launch.errors and not overview.errors
        launch.close()
        overview.close()


def test_the_trees_header_follows_a_conversation_as_it_is_played(browser, tmp_path, toolwoz_data):
    import subprocess
    import sys
    import time

    db = tmp_path / "playing.duckdb"
    agent = tmp_path / "slow-agent.json"  # four seconds per turn, ten turns: the tree grows for a while
    agent.write_text(json.dumps({"latency": 4.0, "turns": [[[speak(f"Turn {t}.")], [speak(f"Other {t}.")]]
                                                           for t in range(10)]}))  # fmt: skip
    user = tmp_path / "patient-user.json"  # a user who never hangs up early
    user.write_text(json.dumps({"turns": [f"Request number {i}." for i in range(12)]}))
    with streamlit_app(db) as url:
        rollout = subprocess.Popen(
            [sys.executable, "-m", "josh_core", "rollout", "--josh", "--split", "train", "--limit", "1", "--agent",
             f"script:{agent}", "--user", f"script:{user}", "--max-turns", "10", "--db", str(db)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            conversation = None
            while time.monotonic() < deadline and conversation is None:
                time.sleep(1)
                if db.exists():
                    playing = [c for c in reads.list_conversations(Database(db, read_only=True))
                               if c.status == "running"]  # fmt: skip
                    conversation = playing[0] if playing else None
            assert conversation is not None, "the rollout did not start a conversation"
            page = browser()
            page.goto(f"{url}/trees?db={db}&conversation={conversation.id}")
            page.get_by_role("heading", name="Conversation trees").wait_for(timeout=45_000)
            page.get_by_text("still being played").first.wait_for(timeout=45_000)
            nodes = page.locator('[data-testid="stMetric"]').filter(has_text="Nodes").locator('[data-testid="stMetricValue"]')
            first = int(nodes.inner_text())
            # No reload: the header's node count follows the graph as the rollout writes.
            page.wait_for_function(
                """([n]) => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
                     .find(e => e.innerText.includes('Nodes'));
                   return m && parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) > n; }""",
                arg=[first], timeout=120_000,
            )  # fmt: skip
            assert int(nodes.inner_text()) > first
            assert page.locator('[data-testid="stMetric"]').filter(has_text="Nodes").count() == 1  # replaced, not piled up
            shot(page, "live-trees-growing")
            no_exception(page)
            page.close()
        finally:
            rollout.terminate()
            rollout.wait(timeout=30)
