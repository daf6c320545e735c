"""The Streamlit app in headless Chromium, moved through as a person does (sidebar, clicks,
keys), on databases made by real rollouts with script policies (tests/app_fixtures.py).

Model text carries payloads: HTML/script in spoken text and an API named like a Markdown image;
they must show as text, never run, never load. Screenshots: test-artifacts/app/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app_browser import chromium, no_exception, query, shot, sidebar_to, streamlit_app, visible_nodes, wait_idle
from app_fixtures import IMAGE_API, make_app_db
from josh_core.search.labels import compute_labels
from josh_core.storage import reads
from josh_core.storage.db import Database

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = [("Overview", "JOSH Workbench"), ("Trees", "Conversation trees"), ("Pairs", "Pair annotator"),
         ("Export", "Export training data"), ("Launch", "Launch a rollout"), ("Errors", "Metrics and errors"),
         ("Training", "Trainings")]  # fmt: skip


@pytest.fixture(scope="module")
def app_db(tmp_path_factory, toolwoz_data):
    from josh_core.storage import trainings

    db = make_app_db(tmp_path_factory.mktemp("app"))
    # A training as `josh train` records it (the trainer itself is tested with the train code).
    training = trainings.create_training(
        Database(db), kind="sft", base="embedded", data_path=str(db.parent / "sft.jsonl"), data_hash="0" * 64,
        examples=2, config={"epochs": 1, "lora_r": 8}, adapter_path=str(db.parent / "adapter"),
    )  # fmt: skip
    metrics = [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-4} for s in range(1, 9)]
    trainings.finish_training(Database(db), training, status="done", seconds=12.5, metrics=metrics)
    return db


@pytest.fixture(scope="module")
def second_db(app_db, tmp_path_factory):
    """A copy of the database under another name (to switch databases in the app)."""
    other = tmp_path_factory.mktemp("other") / "other.duckdb"
    shutil.copy(app_db, other)
    return other


@pytest.fixture(scope="module")
def app_url(app_db):
    with streamlit_app(app_db) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as new_page:
        yield new_page


@pytest.fixture
def page(browser):
    page = browser()
    yield page
    page.close()


def _db_field(page):
    return page.locator('[data-testid="stSidebar"]').get_by_role("textbox", name="Database")


def test_sidebar_navigation_keeps_the_database_on_every_page(page, app_url, app_db, second_db):
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    # Twice around the sidebar: the bug lost the database on every second click.
    for lap in range(2):
        for title, heading in PAGES[1:] + PAGES[:1]:
            sidebar_to(page, title, heading)
            assert query(page).get("db") == str(app_db), (lap, title, page.url)
            expect(_db_field(page)).to_have_value(str(app_db))
            if lap == 0:
                shot(page, f"nav-{title.lower()}")
    # A database chosen on one page stays chosen on the next ones.
    sidebar_to(page, "Errors", "Metrics and errors")
    _db_field(page).fill(str(second_db))
    _db_field(page).press("Enter")
    page.wait_for_function(f"() => location.search.includes({str(second_db.name)!r})", timeout=30_000)
    wait_idle(page)
    for title, heading in PAGES:
        sidebar_to(page, title, heading)
        assert query(page).get("db") == str(second_db), title
        expect(_db_field(page)).to_have_value(str(second_db))
    # A folder or a missing file is a message, never an exception.
    _db_field(page).fill(str(second_db.parent))
    _db_field(page).press("Enter")
    page.get_by_text("is a folder, not a database file").first.wait_for(timeout=30_000)
    for title, heading in PAGES[1:3]:
        sidebar_to(page, title, heading)
        page.get_by_text("is a folder, not a database file").first.wait_for(timeout=30_000)
    shot(page, "nav-folder-error")
    _db_field(page).fill(str(second_db.parent / "nothing.duckdb"))
    _db_field(page).press("Enter")
    page.get_by_text("No database at").first.wait_for(timeout=30_000)
    no_exception(page)
    assert not page.errors
    assert not page.external, "the app fetched from outside localhost"


def test_a_link_with_a_database_opens_it_in_a_new_session(browser, app_url, second_db):
    page = browser()
    page.goto(f"{app_url}/errors?db={second_db}")
    page.get_by_role("heading", name="Metrics and errors").wait_for(timeout=45_000)
    wait_idle(page)
    expect(_db_field(page)).to_have_value(str(second_db))
    sidebar_to(page, "Overview", "JOSH Workbench")
    assert query(page)["db"] == str(second_db)
    page.close()


def test_tree_explorer_click_selects_a_node_and_the_url_follows(page, app_url, app_db):
    db = Database(app_db)
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Trees", "Conversation trees")
    conversation = reads.get_conversation(db, query(page)["conversation"])
    tree = reads.load_tree(db, conversation.id)
    page.locator(".jg-node").first.wait_for(timeout=30_000)
    assert page.locator(".jg-node").count() == len(tree.nodes)
    labels = compute_labels(tree)
    assert page.locator('.jg-node[data-label="ideal"]').count() == sum(1 for v in labels.values() if v == "ideal")
    assert page.locator(".jg-legend .jg-chip").count() == 4
    # click a node that is not selected yet
    shown = [p for p in visible_nodes(page) if p != query(page).get("node")]
    target = next(p for p in shown if p.count(".") >= 1)
    page.locator(".jg-node").first.evaluate("g => { g.__drawnBefore = true; }")
    page.locator(f'.jg-node[data-path="{target}"]').click()
    page.locator(".jw-panel .jw-head", has_text=f"Node {target} ·").wait_for(timeout=30_000)
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {target!r}", timeout=15_000)
    wait_idle(page)
    # the highlight stays on the clicked node after the explorer reruns, and the graph was
    # not drawn again (the same SVG elements)
    assert page.locator(".jg-node.jg-selected").get_attribute("data-path") == target
    assert page.locator(".jg-node").first.evaluate("g => g.__drawnBefore === true")
    node = next(n for n in tree.nodes.values() if n.path == target)
    # the path view shows every turn from the opener to the node
    assert page.locator(".jw-chat .jw-turn").count() == len(tree.path_to(node.id))
    shot(page, "trees-clicked")
    # the left arrow selects the parent, from the keyboard
    page.locator(".jg-view").focus()
    page.keyboard.press("ArrowLeft")
    parent = tree.nodes[node.parent_id].path
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {parent!r}", timeout=15_000)
    page.locator(".jw-panel .jw-head", has_text=f"Node {parent} ·").wait_for(timeout=30_000)
    wait_idle(page)
    assert page.locator(".jg-node.jg-selected").get_attribute("data-path") == parent
    # zoom buttons change the scale, the graph is not laid out again
    scale = float(page.locator(".jg-view").get_attribute("data-scale"))
    page.locator(".jg-btn[data-action='in']").click()
    assert float(page.locator(".jg-view").get_attribute("data-scale")) > scale
    page.locator(".jg-btn[data-action='fit']").click()
    no_exception(page)


def _pickers(page) -> dict[str, str]:
    """What the sidebar's Run and Conversation pickers show."""
    boxes = page.locator('[data-testid="stSidebar"] input[role="combobox"]')
    return dict(boxes.evaluate_all("els => els.map(e => [e.getAttribute('aria-label'), e.value])"))


def _pick(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name=label).click()
    page.get_by_role("option").filter(has_text=option).first.click()
    wait_idle(page)


def test_the_sidebar_pickers_name_the_conversation_the_page_shows(page, app_url, app_db):
    from ui_common import fmt_reward

    db = Database(app_db)
    runs = reads.list_runs(db)
    by_run = {r.id: [c for c in reads.list_conversations(db) if c.run_id == r.id] for r in runs}

    def shown(conversation) -> None:
        assert query(page)["conversation"] == conversation.id
        pickers = _pickers(page)
        assert pickers["Run"].startswith(conversation.run_id)
        assert pickers["Conversation"] == (f"{conversation.scenario_id} · reward {fmt_reward(conversation.reward)} · "
                                           f"{conversation.status}")  # fmt: skip
        expect(page.locator(".jg-node")).to_have_count(conversation.node_count)  # the tree drawn is that one

    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Trees", "Conversation trees")
    shown(by_run[runs[-1].id][0])
    # Another run in the sidebar: its first conversation (before, the page and the URL kept the
    # other run's conversation while the pickers named this run).
    _pick(page, "Run", runs[0].id)
    shown(by_run[runs[0].id][0])
    second = by_run[runs[0].id][1]
    _pick(page, "Conversation", second.scenario_id)
    shown(second)
    # A link to another conversation (the compare view's): the pickers follow it (before, they
    # went on naming the conversation picked earlier).
    page.locator('[data-testid="stMain"]').get_by_text("Compare two conversations", exact=True).click()
    wait_idle(page)
    twin = next(c for c in by_run[runs[1].id] if c.scenario_id == second.scenario_id)
    page.get_by_role("link", name="Explore this tree").nth(1).click()
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('conversation') === {twin.id!r}",
                           timeout=30_000)  # fmt: skip
    wait_idle(page)
    shown(twin)
    shot(page, "trees-pickers-follow-link")
    no_exception(page)


def test_compare_view_puts_two_conversations_of_one_scenario_side_by_side(page, app_url, app_db):
    db = Database(app_db)
    runs = reads.list_runs(db)
    base, trained = runs[0], runs[1]
    [first] = [c for c in reads.list_conversations(db, run_id=base.id) if c.position == 0]
    [twin] = [c for c in reads.list_conversations(db, run_id=trained.id) if c.scenario_id == first.scenario_id]
    page.goto(f"{app_url}/trees?db={app_db}&conversation={first.id}")
    page.get_by_role("heading", name="Conversation trees").wait_for(timeout=45_000)
    wait_idle(page)
    page.get_by_text("Compare two conversations", exact=True).click()
    page.get_by_text("Compare with").first.wait_for(timeout=30_000)
    wait_idle(page)
    assert query(page)["other"] == twin.id  # the same scenario in another run comes first
    assert page.locator(".jw-chat").count() == 2 and page.locator(".jw-goals").count() == 2
    assert page.get_by_text("Everything is booked.").count() >= 1  # the trained agent's ideal turn
    shot(page, "trees-compare")
    page.get_by_role("link", name="Explore this tree").nth(1).click()
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('conversation') === {twin.id!r}",
                           timeout=30_000)  # fmt: skip
    page.locator(".jg-node").nth(twin.node_count - 1).wait_for(state="attached", timeout=30_000)
    no_exception(page)


def test_model_text_stays_inert_in_the_tree_explorer(page, app_url, app_db):
    db = Database(app_db)
    conversation = reads.list_conversations(db)[0]
    tree = reads.load_tree(db, conversation.id)
    payload = next(n for n in tree.nodes.values() if n.kind == "agent" and "onerror" in n.text)
    image = next(n for n in tree.nodes.values() if any(r.call and r.call.name == IMAGE_API for r in n.api_calls))
    page.goto(f"{app_url}/trees?db={app_db}&conversation={conversation.id}&node={payload.path}")
    page.locator(".jw-panel .jw-head", has_text=f"Node {payload.path} ·").wait_for(timeout=45_000)
    page.locator(".jw-panel").get_by_text('window.__xss=2</script>"quoted"', exact=False).first.wait_for()
    # hover text of the graph is text too
    page.locator(f'.jg-node[data-path="{payload.path}"]').hover()
    assert "onerror" in page.locator(".jg-tip").text_content()
    # the image-named API in the side panel, the path view and the compare view
    page.goto(f"{app_url}/trees?db={app_db}&conversation={conversation.id}&node={image.path}")
    page.locator(".jw-panel .jw-head", has_text=f"Node {image.path} ·").wait_for(timeout=45_000)
    page.locator(".jw-panel").get_by_text(IMAGE_API).first.wait_for()
    assert page.locator(".jw-chat").get_by_text(IMAGE_API).count() >= 1
    wait_idle(page)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src*='pwn']").count() == 0
    assert not [u for u in page.external if "127.0.0.1:9" in u or "x/y" in u]
    shot(page, "trees-payloads")


def _judge(page, key: str, expect_pair: int) -> None:
    page.get_by_role("heading", name="Pair annotator").click()  # focus off the text fields
    page.keyboard.press(key)
    page.get_by_text(f"{expect_pair} of ", exact=False).first.wait_for(timeout=30_000)
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('pair') === '{expect_pair}'", timeout=30_000)
    wait_idle(page)


def test_errors_page_shows_counts_with_their_totals(page, app_url, app_db):
    import re

    from josh_core.analysis.errors import error_report

    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Errors", "Metrics and errors")
    page.locator('[data-testid="stSidebar"]').get_by_text("every turn of the tree").click()
    wait_idle(page)
    rates = error_report(Database(app_db), None, nodes="all").rates
    assert rates.conversations_with_bad_api_use >= 1  # the image-named API on a negative turn
    bad_use = page.locator('[data-testid="stMetric"]').filter(has_text="Conversations with bad API use")
    expected = f"{rates.conversations_with_bad_api_use} of {rates.n} ({100 * rates.bad_api_use:.0f}%)"
    expect(bad_use.locator('[data-testid="stMetricValue"]')).to_have_text(expected)
    assert re.search(r"goal calls attempted", page.locator('[data-testid="stMain"]').inner_text())
    shot(page, "errors-all-turns")
    no_exception(page)


def _annotator(browser, app_url, name: str):
    page = browser()
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Pairs", "Pair annotator")
    field = page.locator('[data-testid="stSidebar"]').get_by_role("textbox", name="Your name (annotator)")
    field.fill(name)
    field.press("Enter")
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('annotator') === {name!r}", timeout=30_000)
    wait_idle(page)
    return page


def test_two_annotators_judge_pairs_with_the_keyboard_and_export_follows(browser, app_url, app_db):
    from josh_core.analysis.pairs import pair_queue
    from josh_core.storage.annotations import latest_votes, resolved_labels

    db = Database(app_db)
    items = pair_queue(db)
    first, second = items[0], items[1]
    ana = _annotator(browser, app_url, "ana")
    expect(ana.get_by_text(f"1 of {len(items)}").first).to_be_visible()
    _judge(ana, "b", 2)  # bad
    _judge(ana, "g", 3)  # good
    shot(ana, "pairs-ana")
    bo = _annotator(browser, app_url, "bo")
    expect(bo.get_by_text(f"0 of {len(items)}").first).to_be_visible()  # bo has judged nothing yet
    _judge(bo, "g", 2)
    _judge(bo, "g", 3)
    bo.keyboard.press("ArrowLeft")  # back to pair 2: both judged it "good"
    bo.wait_for_function("() => new URLSearchParams(location.search).get('pair') === '2'", timeout=30_000)
    wait_idle(bo)
    bo.get_by_text("1 of 2 pairs (50%)").first.wait_for(timeout=30_000)  # agreement
    # a comment, with author and time; the box empties, a second click saves nothing more
    box = bo.get_by_role("textbox", name="Comment")
    box.press_sequentially("Also fine <b>really</b>")  # keys typed into the box judge nothing
    bo.get_by_role("button", name="Save comment").click()
    bo.get_by_text("Also fine <b>really</b>").first.wait_for(timeout=30_000)
    wait_idle(bo)
    expect(bo.get_by_role("textbox", name="Comment")).to_have_value("")
    bo.get_by_role("button", name="Save comment").click()
    wait_idle(bo)
    shot(bo, "pairs-bo")
    no_exception(bo)
    notes = [a for a in reads.list_annotations(db) if a.comment]
    assert [(a.author, a.comment) for a in notes] == [("bo", "Also fine <b>really</b>")]
    votes = {(v.node_id, v.author): v.verdict for v in latest_votes(db)}
    assert votes == {(first.alternative_node_id, "ana"): "bad", (second.alternative_node_id, "ana"): "good",
                     (first.alternative_node_id, "bo"): "good", (second.alternative_node_id, "bo"): "good"}
    # ana said bad, bo later said good: a tie goes to the latest; both said good on the second
    assert resolved_labels(db) == {first.alternative_node_id: "ideal", second.alternative_node_id: "ideal"}
    for page in (ana, bo):
        assert page.evaluate("window.__xss") is None
        page.close()


def _export(page, kind: str) -> tuple[list[dict], str]:
    import json

    page.get_by_role("radiogroup", name="Kind").get_by_text(kind.upper(), exact=True).click()
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=f"Rows to write ({kind.upper()})")
    metric.wait_for(timeout=60_000)
    wait_idle(page)
    rows_to_write = int(metric.locator('[data-testid="stMetricValue"]').inner_text())
    page.get_by_role("button", name="Export", exact=True).click()
    button = page.locator('[data-testid="stDownloadButton"] button').filter(has_text=f"Download {kind}-")
    button.wait_for(timeout=60_000)
    page.get_by_text(f"{kind.upper()} export: {rows_to_write} rows from", exact=False).first.wait_for()
    with page.expect_download() as download:
        button.click()
    text = Path(download.value.path()).read_text()
    wait_idle(page)
    # the result stays after the download
    page.get_by_text(f"{kind.upper()} export: {rows_to_write} rows from", exact=False).first.wait_for(timeout=10_000)
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == rows_to_write
    return rows, download.value.suggested_filename


def test_export_counts_previews_and_downloads_each_kind(page, app_url, app_db):
    import json

    from josh_core.analysis.pairs import pair_queue

    db = Database(app_db)
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Export", "Export training data")
    page.get_by_text("Left out:").wait_for()
    page.get_by_text("finished below reward 1.0", exact=False).first.wait_for()
    page.get_by_text("Preview: the first", exact=False).first.wait_for()
    shot(page, "export-before")
    sft, sft_name = _export(page, "sft")
    assert sft and all(row["messages"][0]["role"] == "system" for row in sft)
    kto, kto_name = _export(page, "kto")
    assert {row["label"] for row in kto} == {True, False}
    # the alternatives both annotators called good are desirable now
    first = pair_queue(db)[0]
    spoken = reads.load_tree(db, first.conversation_id).nodes[first.alternative_node_id].text
    assert [row["label"] for row in kto if spoken in json.dumps(row["completion"])] == [True]
    dpo, dpo_name = _export(page, "dpo")
    assert all({"prompt", "chosen", "rejected"} <= set(row) for row in dpo)
    assert len({sft_name, kto_name, dpo_name}) == 3
    shot(page, "export-after")
    exports = reads.list_exports(db)
    assert [e.kind for e in exports[-3:]] == ["sft", "kto", "dpo"]
    assert len({e.path for e in exports}) == len(exports)
    no_exception(page)


def _launch(page, agent: str, user: str, base_url: str = "") -> None:
    page.get_by_role("textbox", name="Agent SPEC").fill(agent)
    page.get_by_role("textbox", name="User SPEC").fill(user)
    page.get_by_role("textbox", name="Base URL (openai:)").fill(base_url)
    page.get_by_role("button", name="Start").click()


def test_launch_checks_the_specs_then_follows_the_run_to_its_trees(page, app_url, app_db):
    """After the tests that read the module's database: it adds a run."""
    db = Database(app_db)
    folder = app_db.parent
    before = {r.id for r in reads.list_runs(db)}
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Launch", "Launch a rollout")
    _launch(page, f"script:{folder / 'nope.json'}", "agenda")
    page.get_by_text("Not started:").wait_for(timeout=30_000)
    page.get_by_text("no such file", exact=False).first.wait_for()
    assert {r.id for r in reads.list_runs(db)} == before
    shot(page, "launch-refused")
    _launch(page, f"script:{folder / 'base-agent.json'}", f"script:{folder / 'base-user.json'}")
    page.get_by_text("Finished: run", exact=False).first.wait_for(timeout=120_000)
    [new] = [r for r in reads.list_runs(db) if r.id not in before]
    assert new.status == "done"
    page.get_by_text(f"run {new.id}: 1 of 1 conversations finished", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text("nodes written", exact=False).first.wait_for()
    shot(page, "launch-finished")
    page.get_by_role("link", name=f"Open the trees of run {new.id}").click()
    page.get_by_role("heading", name="Conversation trees").wait_for(timeout=45_000)
    [conversation] = reads.list_conversations(db, run_id=new.id)
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('conversation') === {conversation.id!r}",
                           timeout=30_000)  # fmt: skip
    page.locator(".jg-node").nth(conversation.node_count - 1).wait_for(state="attached", timeout=30_000)
    assert query(page)["db"] == str(app_db)
    no_exception(page)
    shot(page, "launch-trees")


def test_launch_stop_and_a_failing_rollout_shows_an_error(page, app_url, app_db):
    import socket

    db = Database(app_db)
    before = {r.id for r in reads.list_runs(db)}
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Launch", "Launch a rollout")
    # A server that accepts connections and never answers: the rollout waits until stopped.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        _launch(page, "openai:some-model", "agenda", f"http://127.0.0.1:{port}/v1")
        page.get_by_text("is running: run", exact=False).first.wait_for(timeout=120_000)
        page.get_by_role("button", name="Stop").click()
        page.get_by_text("Stopped. The run can be continued", exact=False).first.wait_for(timeout=30_000)
    [stopped] = [r for r in reads.list_runs(db) if r.id not in before]
    # the rollout marks itself interrupted on SIGTERM (the page marks it incomplete if it could not)
    assert reads.get_run(db, stopped.id).status in ("interrupted", "incomplete")
    shot(page, "launch-stopped")
    # Nothing listens on this port: the rollout fails, and the page says so as an error.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _launch(page, "openai:some-model", "agenda", f"http://127.0.0.1:{port}/v1")
    page.get_by_text("The rollout failed", exact=False).first.wait_for(timeout=180_000)
    expect(page.locator('[data-testid="stAlertContentError"]').first).to_be_visible()
    shot(page, "launch-failed")
    no_exception(page)


def test_training_page_draws_the_loss_curve_and_links_the_adapter_to_launch(page, app_url, app_db):
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)
    sidebar_to(page, "Training", "Trainings")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=30_000)
    page.get_by_text("0.2500").first.wait_for()  # the final loss, 2 / 8
    shot(page, "training")
    page.get_by_role("link", name="Evaluate the adapter", exact=False).click()
    page.get_by_role("heading", name="Launch a rollout").wait_for(timeout=45_000)
    expect(page.get_by_role("textbox", name="Agent SPEC")).to_have_value(f"embedded@{app_db.parent / 'adapter'}")
    no_exception(page)
