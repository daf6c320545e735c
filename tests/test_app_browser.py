"""The Streamlit app in headless Chromium, on a database made by a real (scripted) rollout.

The agent's spoken text carries HTML/script payloads: they must show as text and never run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine_fixtures import speak
from josh_core.search.labels import compute_labels
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import goal_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"quoted"'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rollout_db(tmp_path_factory, toolwoz_data) -> Path:
    from josh_core.toolwoz.scenarios import load_split

    folder = tmp_path_factory.mktemp("app")
    scenario = load_split("train", 1)[0]
    turns = [
        [[speak(PAYLOAD)], [speak("How can I help?")]],
        [[goal_call(scenario, i) for i in range(len(scenario.goal_calls))] + [speak("All done.")],
         [speak("Hmm.")]],
    ]
    (folder / "scenario.json").write_text(scenario.model_dump_json())
    (folder / "agent.json").write_text(json.dumps({"turns": turns}))
    (folder / "user.json").write_text(json.dumps({"turns": ["I need help.", "Please go ahead.", "Thanks."]}))
    db = folder / "app.duckdb"
    subprocess.run(
        [sys.executable, "-m", "josh_core", "rollout", "--josh", "--scenario-file", str(folder / "scenario.json"),
         "--agent", f"script:{folder / 'agent.json'}", "--user", f"script:{folder / 'user.json'}",
         "--db", str(db)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return db


@pytest.fixture(scope="module")
def app_url(rollout_db):
    port = _free_port()
    env = dict(os.environ, JOSH_DB=str(rollout_db))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.headless", "true"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("streamlit did not start within 60 s")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _open(page, url: str, text: str) -> None:
    page.goto(url)
    page.get_by_text(text).first.wait_for(timeout=45_000)


def test_overview_lists_the_run(page, app_url, rollout_db):
    run = reads.list_runs(Database(rollout_db))[0]
    _open(page, app_url, "Runs")
    # st.dataframe draws on a canvas; its accessible grid cells are in the DOM, not visible
    page.get_by_text(run.id).first.wait_for(state="attached", timeout=30_000)


def test_tree_page_draws_every_node_and_keeps_model_text_inert(page, app_url, rollout_db):
    db = Database(rollout_db)
    conversation = reads.list_conversations(db)[0]
    tree = reads.load_tree(db, conversation.id)
    _open(page, app_url + "/trees", "Goals reached")
    page.locator("svg g.node").first.wait_for(timeout=45_000)
    assert page.locator("svg g.node").count() == len(tree.nodes)
    # agent turns on the ideal path are drawn green (the treeviz fill for "ideal"), negatives red
    labels = compute_labels(tree)
    ideal_agents = sum(1 for nid, label in labels.items() if label == "ideal" and tree.nodes[nid].kind == "agent")
    negatives = sum(1 for label in labels.values() if label == "negative")
    assert ideal_agents >= 2 and negatives >= 1
    assert page.locator('svg g.node [fill="#c8e6c9"]').count() == ideal_agents
    assert page.locator('svg g.node [fill="#ffcdd2"]').count() == negatives
    # pick the agent node that spoke the payload and show it in detail
    payload_node = next(n for n in tree.nodes.values() if n.kind == "agent" and "onerror" in n.text)
    _open(page, f"{app_url}/trees?conversation={conversation.id}&node={payload_node.path}",
          f"Node {payload_node.path} · agent")
    page.get_by_text('window.__xss=2</script>"quoted"', exact=False).first.wait_for(timeout=30_000)
    assert page.evaluate("window.__xss") is None


def test_errors_page_shows_the_paper_metrics(page, app_url):
    _open(page, app_url + "/errors", "Average reward")
    assert page.get_by_text("100% success rate").count() >= 1
    assert page.get_by_text("Conversations with incorrect API format").count() == 1


def test_export_page_writes_jsonl(page, app_url, rollout_db):
    _open(page, app_url + "/export", "Export training data")
    page.get_by_role("button", name="Export").click()
    page.get_by_text("rows from").wait_for(timeout=30_000)
    exports = reads.list_exports(Database(rollout_db))
    assert exports and exports[-1].kind == "sft"
    rows = [json.loads(line) for line in Path(exports[-1].path).read_text().splitlines()]
    assert len(rows) == exports[-1].rows == 1
    assert rows[0]["messages"][0]["role"] == "system"


def test_pair_annotation_is_stored(page, app_url, rollout_db):
    _open(page, app_url + "/pairs", "Good / bad turn pairs")
    page.get_by_role("textbox", name="Comment").nth(1).fill("too vague")
    page.get_by_role("button", name="Save").nth(1).click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        notes = reads.list_annotations(Database(rollout_db))
        if notes:
            break
        time.sleep(0.5)
    assert [a.comment for a in notes] == ["too vague"]


def test_launch_page_starts_a_rollout_with_the_chosen_decoding(page, app_url, rollout_db):
    """Last in this module: it adds a run to the shared database."""
    folder = rollout_db.parent
    before = {run.id for run in reads.list_runs(Database(rollout_db))}
    _open(page, app_url + "/launch", "Launch a rollout")
    page.get_by_role("textbox", name="Agent SPEC").fill(f"script:{folder / 'agent.json'}")
    page.get_by_role("textbox", name="User SPEC").fill(f"script:{folder / 'user.json'}")
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Decoding").click()
    page.get_by_role("option", name="free").click()
    page.get_by_role("button", name="Start").click()
    page.get_by_text("--decoding free", exact=False).first.wait_for(timeout=30_000)
    deadline = time.monotonic() + 90
    new = []
    while time.monotonic() < deadline:
        new = [r for r in reads.list_runs(Database(rollout_db)) if r.id not in before and r.status == "done"]
        if new:
            break
        time.sleep(1)
    assert len(new) == 1
    assert (new[0].config["constrained"], new[0].config["grounded"]) == (False, False)
    page.get_by_text(f"run {new[0].id}: 1/1 conversations").first.wait_for(timeout=30_000)
