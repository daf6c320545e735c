"""The app's second pass in headless Chromium, moved through by the sidebar: a human verdict
shows beside the search label and never replaces it (Pairs and Trees); a big tree opens on
its ideal path, readable, with the rest folded behind counts that unfold on a click; the
conversation list, the Export page's KTO balance and DPO preview, the Errors page's account
of what it analysed. Screenshots: test-artifacts/app/."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app_browser import chromium, no_exception, query, shot, sidebar_to, streamlit_app, wait_idle
from app_fixtures import make_app_db
from josh_core.search.labels import ideal_path
from josh_core.storage import reads
from josh_core.storage.db import Database
from josh_core.treeviz import FOLD_ABOVE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Nodes inside the view's box, among those drawn (folded-away nodes are display: none).
SHOWN_IN_VIEW = """(view) => { const v = view.getBoundingClientRect();
  return [...view.querySelectorAll('.jg-node:not(.jg-hidden)')].filter(g => { const r = g.getBoundingClientRect();
    return r.width > 0 && r.left >= v.left && r.right <= v.right && r.top >= v.top && r.bottom <= v.bottom; })
    .map(g => g.dataset.path); }"""


@pytest.fixture(scope="module")
def app_db(tmp_path_factory, toolwoz_data):
    return make_app_db(tmp_path_factory.mktemp("app2"), with_big_tree=True, big_beam=8)


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


def _home(page, app_url) -> None:
    page.goto(app_url)
    page.get_by_role("heading", name="JOSH Workbench").wait_for(timeout=45_000)


def test_a_verdict_shows_beside_the_search_label_on_pairs_and_in_the_tree(page, app_url, app_db):
    from josh_core.analysis.pairs import pair_queue

    db = Database(app_db)
    _home(page, app_url)
    sidebar_to(page, "Pairs", "Pair annotator")
    field = page.locator('[data-testid="stSidebar"]').get_by_role("textbox", name="Your name (annotator)")
    field.fill("ana")
    field.press("Enter")
    page.wait_for_function("() => new URLSearchParams(location.search).get('annotator') === 'ana'", timeout=30_000)
    wait_idle(page)
    number = int(query(page)["pair"])
    item = [i for i in pair_queue(db) if not i.identical][number - 1]
    assert item.tree_label == "negative"
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("search label: negative").first).to_be_visible()
    expect(main.locator(".jw-diff").first).to_be_visible()  # the word diff of the two turns
    page.get_by_role("button", name="Good").click()
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('pair') !== '{number}'", timeout=30_000)
    wait_idle(page)
    page.get_by_role("heading", name="Pair annotator").click()  # focus off the text fields
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('pair') === '{number}'", timeout=30_000)
    wait_idle(page)
    # The search label is unchanged; the verdict is its own badge with the annotator's name,
    # and export's use of the turn follows the verdict.
    expect(main.get_by_text("search label: negative · export uses it as a positive").first).to_be_visible()
    expect(main.locator(".jw-verdict", has_text="good: ana").first).to_be_visible()
    shot(page, "pairs-verdict-apart")
    no_exception(page)
    # The tree: the alternative keeps its search colour and carries the verdict mark.
    page.goto(f"{app_url}/trees?db={app_db}&conversation={item.conversation_id}&node={item.alternative_path}")
    node = page.locator(f'.jg-node[data-path="{item.alternative_path}"]')
    node.wait_for(timeout=45_000)
    wait_idle(page)
    assert node.get_attribute("data-label") == "negative"
    assert node.get_attribute("data-verdict") == "good: ana"
    expect(page.locator(".jw-panel .jw-verdict", has_text="good: ana")).to_be_visible()
    shot(page, "trees-verdict-apart")
    no_exception(page)


def test_a_big_tree_opens_on_its_ideal_path_and_a_folded_subtree_unfolds(page, app_url, app_db):
    db = Database(app_db)
    big = max(reads.list_conversations(db), key=lambda c: c.node_count or 0)
    tree = reads.load_tree(db, big.id)
    assert len(tree.nodes) > FOLD_ABOVE
    spine = [n.path for n in ideal_path(tree)]
    _home(page, app_url)
    sidebar_to(page, "Trees", "Conversation trees")
    page.goto(f"{app_url}/trees?db={app_db}&conversation={big.id}")
    view = page.locator(".jg-view[data-shown]")
    view.wait_for(timeout=60_000)
    wait_idle(page)
    shown = int(view.get_attribute("data-shown"))
    assert shown < len(tree.nodes)
    # Readable: text is drawn at this scale; the opener and the start of the spine are in view.
    assert float(view.get_attribute("data-scale")) >= 0.55
    in_view = page.locator(".jg-view").evaluate(SHOWN_IN_VIEW)
    assert spine[0] in in_view and all(p in in_view for p in spine[:4])
    opener = page.locator(f'.jg-node[data-path="{spine[0]}"]')
    assert opener.get_attribute("data-name") == "opener"
    assert page.locator(f'.jg-node[data-path="{spine[1]}"] .jg-head').text_content().startswith("turn 1")
    expect(page.locator(".jg-mini")).to_be_visible()  # the minimap of the whole tree
    shot(page, "trees-big-first-view", full=False)
    # Unfold a folded subtree with a click on its "+N" handle.
    folded_path = next(p for p in in_view if page.locator(f'.jg-node[data-path="{p}"]').get_attribute("data-folded"))
    handle = page.locator(f'.jg-fold[data-path="{folded_path}"]')
    count = int(handle.text_content().lstrip("+"))
    children = [n.path for n in tree.children(next(n.id for n in tree.nodes.values() if n.path == folded_path))]
    assert page.locator(f'.jg-node[data-path="{children[0]}"]').get_attribute("class").count("jg-hidden") == 1
    handle.click()
    expect(page.locator(".jg-view")).to_have_attribute("data-shown", str(shown + count), timeout=10_000)
    for child in children:
        assert "jg-hidden" not in page.locator(f'.jg-node[data-path="{child}"]').get_attribute("class")
    shot(page, "trees-big-unfolded", full=False)
    # Selecting a node (the one just unfolded, in view) marks its path from the opener.
    target = folded_path
    page.locator(f'.jg-node[data-path="{target}"]').click()
    page.locator(".jw-panel .jw-head", has_text=f"Node {target} ·").wait_for(timeout=30_000)
    depth = target.count(".") + 1
    assert page.locator(".jg-node.jg-on-path").count() == depth
    expect(page.locator(".jw-panel .jw-cost")).to_contain_text("latency and tokens")
    no_exception(page)


def _hidden_at_first(tree) -> list[str]:
    """Paths of the nodes a big tree opens with folded away (below a folded node), deepest first."""
    from josh_core.treeviz import graph_data

    drawn = {n["id"]: n for n in graph_data(tree)["nodes"]}

    def folded_above(path: str) -> bool:
        parent = drawn[path]["parent"]
        while parent is not None:
            if drawn[parent]["folded"]:
                return True
            parent = drawn[parent]["parent"]
        return False

    return sorted((p for p in drawn if folded_above(p)), key=lambda p: -p.count("."))


def test_a_link_into_a_folded_subtree_unfolds_it_and_brings_the_node_into_view(page, app_url, app_db):
    db = Database(app_db)
    big = max(reads.list_conversations(db), key=lambda c: c.node_count or 0)
    tree = reads.load_tree(db, big.id)
    target = _hidden_at_first(tree)[0]  # deep in a folded subtree: far right of the opener's view
    assert target.count(".") >= 8
    page.goto(f"{app_url}/trees?db={app_db}&conversation={big.id}&node={target}")
    page.locator(".jw-panel .jw-head", has_text=f"Node {target} ·").wait_for(timeout=60_000)
    wait_idle(page)
    node = page.locator(f'.jg-node[data-path="{target}"]')
    assert "jg-hidden" not in node.get_attribute("class") and "jg-selected" in node.get_attribute("class")
    # The bug: its ancestors were unfolded but the view stayed on the opener, the node off screen.
    assert target in page.locator(".jg-view").evaluate(SHOWN_IN_VIEW)
    assert float(page.locator(".jg-view").get_attribute("data-scale")) >= 0.55  # readable
    assert query(page)["node"] == target
    shot(page, "trees-deep-link", full=False)
    # Another node clicked, then the browser's back button: the linked node again, in view.
    other = next(p for p in page.locator(".jg-view").evaluate(SHOWN_IN_VIEW) if p != target)
    page.locator(f'.jg-node[data-path="{other}"]').click()
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {other!r}", timeout=30_000)
    wait_idle(page)
    page.go_back()
    page.locator(".jw-panel .jw-head", has_text=f"Node {target} ·").wait_for(timeout=30_000)
    wait_idle(page)
    assert page.locator(".jg-node.jg-selected").get_attribute("data-path") == target
    assert query(page)["node"] == target
    no_exception(page)


def test_a_click_fills_the_side_panel_in_the_browser_without_a_round_trip(page, app_url, app_db):
    db = Database(app_db)
    big = max(reads.list_conversations(db), key=lambda c: c.node_count or 0)
    tree = reads.load_tree(db, big.id)
    held = {"on": False}  # while on, nothing the page sends reaches the server

    def route(ws) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: None if held["on"] else server.send(message))

    page.route_web_socket("**/_stcore/stream", route)
    page.goto(f"{app_url}/trees?db={app_db}&conversation={big.id}")
    page.locator(".jw-panel .jw-head").wait_for(timeout=60_000)
    wait_idle(page)
    linked = query(page)["node"]
    held["on"] = True
    targets = [p for p in page.locator(".jg-view").evaluate(SHOWN_IN_VIEW) if p != linked][:3]
    by_path = {n.path: n for n in tree.nodes.values()}
    for path in targets:
        page.locator(f'.jg-node[data-path="{path}"]').click()
        # Before, the panel came with the explorer's rerun: with the server out of reach it
        # never changed.
        panel = page.locator(".jw-panel")
        expect(panel.locator(".jw-head")).to_contain_text(f"Node {path} ·", timeout=5_000)
        node = by_path[path]
        expect(panel.locator(".jw-cost")).to_contain_text("latency and tokens")
        if node.text:
            expect(panel.locator(".jw-bubble").first).to_have_text(node.text)
        if node.kind == "agent":
            expect(panel.get_by_text(f"Generations ({len(node.generations)})")).to_be_visible()
            expect(panel.get_by_text(f"API calls and results ({len(node.api_calls)})")).to_be_visible()
            for record in node.api_calls:
                expect(panel.locator(".jw-api", has_text=record.call.name).first).to_be_visible()
    assert query(page)["node"] == linked  # no rerun happened: the URL is Python's to change
    shot(page, "trees-panel-held-socket", full=False)
    # Once the server hears the page again, a click's rerun keeps the URL and the path below.
    held["on"] = False
    last = next(p for p in page.locator(".jg-view").evaluate(SHOWN_IN_VIEW) if p not in targets and p != linked)
    page.locator(f'.jg-node[data-path="{last}"]').click()
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('node') === {last!r}", timeout=30_000)
    page.get_by_text(f"selected node ({last})").first.wait_for(timeout=30_000)
    assert not page.errors
    no_exception(page)


def test_quick_selections_settle_on_the_last_one(page, app_url, app_db):
    """Clicks and arrow keys faster than the explorer reruns: each rerun may carry the URL as it
    was before the previous one changed it, which must not read as a link back to that node."""
    db = Database(app_db)
    big = max(reads.list_conversations(db), key=lambda c: c.node_count or 0)
    page.goto(f"{app_url}/trees?db={app_db}&conversation={big.id}")
    page.locator(".jw-panel .jw-head").wait_for(timeout=60_000)
    wait_idle(page)
    for path in page.locator(".jg-view").evaluate(SHOWN_IN_VIEW)[:4]:
        page.locator(f'.jg-node[data-path="{path}"]').click()
    page.locator(".jg-view").focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowLeft", "ArrowRight"):
        page.keyboard.press(key)
    last = page.locator(".jg-view").get_attribute("data-selected")
    page.wait_for_timeout(3_000)
    wait_idle(page)
    assert page.locator(".jg-view").get_attribute("data-selected") == last
    assert query(page)["node"] == last
    expect(page.locator(".jw-panel .jw-head")).to_contain_text(f"Node {last} ·")
    page.get_by_text(f"selected node ({last})").first.wait_for(timeout=30_000)
    no_exception(page)


def test_the_conversation_list_filters_and_opens_a_tree(page, app_url, app_db):
    db = Database(app_db)
    _home(page, app_url)
    sidebar_to(page, "Trees", "Conversation trees")
    page.locator('[data-testid="stMain"]').get_by_text("Conversation list", exact=True).click()
    wait_idle(page)
    total = len(reads.list_conversations(db))
    expect(page.get_by_text(f"{total} of {total} conversations")).to_be_visible()
    page.locator('[data-testid="stMain"]').get_by_text("every goal", exact=True).click()
    wait_idle(page)
    done = sum(1 for c in reads.list_conversations(db) if c.success)
    expect(page.get_by_text(f"{done} of {total} conversations")).to_be_visible()
    shot(page, "trees-list")
    no_exception(page)


def test_export_shows_the_kto_balance_and_dpo_as_chosen_against_rejected(page, app_url, app_db):
    _home(page, app_url)
    sidebar_to(page, "Export", "Export training data")
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("KTO", exact=True).click()
    main.get_by_text("Only conversations with reward 1.0", exact=True).click()  # off: failed trees too
    wait_idle(page)
    expect(main.locator('[data-testid="stMetric"]').filter(has_text="Desirable rows (label: true)")).to_be_visible()
    expect(main.locator('[data-testid="stMetric"]').filter(has_text="Undesirable rows (label: false)")).to_be_visible()
    shot(page, "export-kto-balance")
    main.get_by_text("DPO", exact=True).click()
    wait_idle(page)
    expect(main.get_by_text("chosen (the ideal turn)").first).to_be_visible()
    expect(main.get_by_text("rejected (the alternative)").first).to_be_visible()
    shot(page, "export-dpo-preview")
    no_exception(page)


def test_errors_page_says_what_it_analysed_in_each_scope(page, app_url, app_db):
    from josh_core.analysis.errors import error_report

    _home(page, app_url)
    sidebar_to(page, "Errors", "Metrics and errors")
    main = page.locator('[data-testid="stMain"]')
    rates = error_report(Database(app_db), None).rates
    expect(main.get_by_text(f"{rates.agent_turns} agent turns, {rates.generations} generations, "
                            f"{rates.calls} API calls")).to_be_visible()  # fmt: skip
    page.locator('[data-testid="stSidebar"]').get_by_text("every turn of the tree").click()
    wait_idle(page)
    every = error_report(Database(app_db), None, nodes="all").rates
    expect(main.get_by_text(f"in every turn of their trees: {every.agent_turns} agent turns")).to_be_visible()
    assert "None of the" not in main.inner_text() or every.calls == 0
    shot(page, "errors-scope-all")
    no_exception(page)
