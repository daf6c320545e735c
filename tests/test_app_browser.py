"""The Streamlit app in headless Chromium, moved through as a person does (sidebar, clicks,
keys), on databases made by real rollouts with script policies (tests/app_fixtures.py).

Model text carries payloads: HTML/script in spoken text and an API named like a Markdown image;
they must show as text, never run, never load. Screenshots: test-artifacts/app/.
"""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from app_browser import chromium, no_exception, query, shot, sidebar_to, streamlit_app, visible_nodes, wait_idle
from app_fixtures import IMAGE_API, make_app_db
from josh_core.search.labels import compute_labels
from josh_core.storage import reads
from josh_core.storage.db import Database

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = [("Overview", "JOSH Workbench"), ("Trees", "Conversation trees"), ("Pairs", "Pair annotator"),
         ("Export", "Export training data"), ("Launch", "Launch a rollout"), ("Errors", "Metrics and errors")]  # fmt: skip


@pytest.fixture(scope="module")
def app_db(tmp_path_factory, toolwoz_data):
    return make_app_db(tmp_path_factory.mktemp("app"))


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
    page.locator(f'.jg-node[data-path="{target}"]').click()
    page.locator(".jw-panel .jw-head", has_text=f"Node {target} ").wait_for(timeout=30_000)
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {target!r}", timeout=15_000)
    node = next(n for n in tree.nodes.values() if n.path == target)
    # the path view shows every turn from the opener to the node
    assert page.locator(".jw-chat .jw-turn").count() == len(tree.path_to(node.id))
    shot(page, "trees-clicked")
    # the left arrow selects the parent, from the keyboard
    page.locator(".jg-view").focus()
    page.keyboard.press("ArrowLeft")
    parent = tree.nodes[node.parent_id].path
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {parent!r}", timeout=15_000)
    page.locator(".jw-panel .jw-head", has_text=f"Node {parent} ").wait_for(timeout=30_000)
    no_exception(page)


def test_model_text_stays_inert_in_the_tree_explorer(page, app_url, app_db):
    db = Database(app_db)
    conversation = reads.list_conversations(db)[0]
    tree = reads.load_tree(db, conversation.id)
    payload = next(n for n in tree.nodes.values() if n.kind == "agent" and "onerror" in n.text)
    image = next(n for n in tree.nodes.values() if any(r.call and r.call.name == IMAGE_API for r in n.api_calls))
    page.goto(f"{app_url}/trees?db={app_db}&conversation={conversation.id}&node={payload.path}")
    page.locator(".jw-panel .jw-head", has_text=f"Node {payload.path} ").wait_for(timeout=45_000)
    page.locator(".jw-panel").get_by_text('window.__xss=2</script>"quoted"', exact=False).first.wait_for()
    # hover text of the graph is text too
    page.locator(f'.jg-node[data-path="{payload.path}"]').hover()
    assert "onerror" in page.locator(".jg-tip").text_content()
    # the image-named API in the side panel, the path view and the compare view
    page.goto(f"{app_url}/trees?db={app_db}&conversation={conversation.id}&node={image.path}")
    page.locator(".jw-panel .jw-head", has_text=f"Node {image.path} ").wait_for(timeout=45_000)
    page.locator(".jw-panel").get_by_text(IMAGE_API).first.wait_for()
    assert page.locator(".jw-chat").get_by_text(IMAGE_API).count() >= 1
    wait_idle(page)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src*='pwn']").count() == 0
    assert not [u for u in page.external if "127.0.0.1:9" in u or "x/y" in u]
    shot(page, "trees-payloads")
