"""The tree explorer in a real browser: time to draw a tree and to show a selected node,
measured side by side in one run on one database:

- "graphviz (before)": the Trees page as it first was (st.graphviz_chart; the node picked in
  the sidebar redraws the whole graph), taken from git (`--baseline-rev`);
- "svg, rerun per click (before)": the app's SVG component as it was before the side panel
  moved into it (`--before-rev`): a click reran the explorer's fragment, which drew the panel;
- "svg, panel in the browser (now)": the component fills the side panel itself from data it
  already holds; the fragment rerun that follows only puts the node in the URL and redraws the
  conversation below;
- "vis-network": the same layout and side panel drawn by vis-network (from the pyvis wheel),
  measured as the alternative once considered (`--vis`; off by default: it downloads the wheel).

"draw" is page load to every node of the tree in the DOM (graphviz, svg) or vis-network's first
`afterDrawing` (a canvas), the median of three loads of the page (the first one finds the tree
not yet cached by the server: the note gives it); "select" is a click on a node (graphviz:
picking it in the sidebar) to the side panel showing that node and, for graphviz, the redrawn
graph highlighting it; "settled" is the same click to the URL and the conversation below naming
the node (the fragment rerun done). The two SVG variants are measured in turns, tree by tree,
so that the machine's load falls on both alike; the load average is read before and after.

For the SVG component it also checks the first view of each tree: the opener and the start of
the ideal path inside the view at a scale where text is drawn (big trees open folded on their
ideal path), and saves a screenshot of the explorer for the biggest tree
(bench/results/app-first-view.png).

Usage: python bench/bench_app.py [--repeats 5] [--before-rev REV] [--baseline-rev REV]
       [--no-baseline] [--no-before] [--vis]
Writes bench/results/app.md. Needs /usr/bin/chromium and the toolwoz data (josh data prepare).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app_browser import chromium, streamlit_app  # noqa: E402
from app_fixtures import add_big_tree, make_app_db  # noqa: E402
from josh_core.storage import reads  # noqa: E402
from josh_core.storage.db import Database  # noqa: E402

# The last revision with the Graphviz Trees page (pages/trees.py, st.graphviz_chart).
BASELINE_REV = "a6cbeff"
# The last revision whose explorer drew the side panel in Python, on a rerun per click.
BEFORE_REV = "9c5e3da"
PYVIS = "pyvis==0.3.2"


def build_db(folder: Path) -> tuple[Path, list[str]]:
    """The app database plus trees of about 45, 213 and 506 nodes; their conversation ids."""
    from josh_core.envs import get_env

    db = make_app_db(folder)
    scenario = get_env("toolwoz").load_split("train", 1)[0]
    runs = [
        add_big_tree(db, folder, scenario, beam=8, turns=4, goal_turns=(3,)),
        add_big_tree(db, folder, scenario, beam=8),
        add_big_tree(db, folder, scenario, beam=32),
    ]
    conversations = {c.run_id: c.id for c in reads.list_conversations(Database(db))}
    return db, [conversations[r] for r in runs]


def app_at(folder: Path, rev: str) -> Path:
    """The app at `rev` with its own josh_core (app.py, ui_common.py, its pages, assets and
    josh_core as they were): the page as it was, reading today's database."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev], check=True, capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    wanted = [n for n in ("app.py", "ui_common.py", "pages", "app_pages", "assets", "josh_core") if n in names]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *wanted], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def vis_network_js(folder: Path) -> Path:
    """vis-network.min.js from the pyvis wheel (pip download, no install)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PYVIS, "-d", str(folder)],
                   check=True)  # fmt: skip
    wheel = next(folder.glob("pyvis-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("lib/vis-9.1.2/vis-network.min.js"))
        target = folder / "vis-network.min.js"
        target.write_bytes(z.read(name))
    return target


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


VISIBLE = """(view) => { const v = view.getBoundingClientRect();
  return [...view.querySelectorAll('.jg-node:not(.jg-hidden)')].filter(g => { const r = g.getBoundingClientRect();
    return r.width > 0 && r.left >= v.left && r.right <= v.right && r.top >= v.top && r.bottom <= v.bottom; })
    .map(g => g.dataset.path); }"""
TEXT_MIN_SCALE = 0.55  # assets/tree_graph.js draws node text from this scale up
SHOT = ROOT / "bench" / "results" / "app-first-view.png"


def first_view(page, tree, shot: Path | None) -> str:
    """Whether the first view shows the opener and the start of the ideal path, readable."""
    from josh_core.search.labels import ideal_path

    time.sleep(0.6)  # the initial view is set on the next animation frame
    view = page.locator(".jg-view")
    scale = float(view.get_attribute("data-scale"))
    shown = int(view.get_attribute("data-shown"))
    in_view = view.evaluate(VISIBLE)
    spine = [n.path for n in ideal_path(tree)]
    spine_in_view = sum(1 for p in spine if p in in_view)
    ok = spine[0] in in_view and spine_in_view >= min(3, len(spine)) and scale >= TEXT_MIN_SCALE
    if shot is not None:
        page.locator(".jg-root").screenshot(path=str(shot), scale="css", type="png")
    return (f"first view {'OK' if ok else 'NOT OK'}: opener in view, {spine_in_view} of {len(spine)} ideal-path "
            f"nodes in view, scale {scale:.2f}, {shown} of {len(tree.nodes)} nodes unfolded")


def load_tree_page(page, url: str, db: Path, cid: str, nodes: int) -> float:
    started = time.perf_counter()
    page.goto(f"{url}/trees?db={db}&conversation={cid}")
    page.locator(".jg-node").nth(nodes - 1).wait_for(state="attached", timeout=120_000)
    return time.perf_counter() - started


def measure_svg(page, url: str, db: Path, cid: str, tree, repeats: int, shot: Path | None = None, loads: int = 3):
    """Draw (median of `loads` page loads), select and settled times; a note."""
    nodes = len(tree.nodes)
    # Each variant has its own page: a page behind another gets its animation frames throttled
    # (Playwright's click waits for two of them), so the measured one comes to the front.
    page.bring_to_front()
    draws = []
    for _ in range(loads):
        draws.append(load_tree_page(page, url, db, cid, nodes))
        page.locator(".jw-panel .jw-head").wait_for(timeout=60_000)
        time.sleep(0.5)
    draw_ms = page.locator(".jg-view").get_attribute("data-draw-ms")
    view_note = first_view(page, tree, shot)
    current = page.evaluate("new URLSearchParams(location.search).get('node')")
    targets = [p for p in page.locator(".jg-view").evaluate(VISIBLE) if p != current][:repeats]
    selects, settled = [], []
    for path in targets:
        started = time.perf_counter()
        page.locator(f'.jg-node[data-path="{path}"]').click()
        page.locator(".jw-panel .jw-head", has_text=f"Node {path} ·").wait_for(timeout=60_000)
        selects.append(time.perf_counter() - started)
        # ... and the rerun done: the URL and the conversation below name the node
        page.wait_for_function("(p) => new URLSearchParams(location.search).get('node') === p", arg=path,
                               timeout=60_000)  # fmt: skip
        page.get_by_text(f"selected node ({path})").first.wait_for(timeout=60_000)
        settled.append(time.perf_counter() - started)
        time.sleep(0.3)
    note = (f"component draw {draw_ms} ms; first load {draws[0]:.2f} s (tree not cached), then "
            f"{', '.join(f'{d:.2f}' for d in draws[1:])} s; {view_note}")  # fmt: skip
    return statistics.median(draws), selects, settled, note


def measure_vis(page, url: str, cid: str, nodes: int, repeats: int) -> tuple[float, list[float], str]:
    started = time.perf_counter()
    page.goto(f"{url}/?conversation={cid}")
    page.locator(".vis-view[data-draw-ms]").wait_for(state="attached", timeout=120_000)
    draw = time.perf_counter() - started
    draw_ms = page.locator(".vis-view").get_attribute("data-draw-ms")
    time.sleep(0.5)
    # Node centres in page coordinates, for the ones inside the canvas.
    spots = page.locator(".vis-view").evaluate(
        """(div) => { const n = div.__network; const r = div.getBoundingClientRect(); const out = [];
          for (const [id, p] of Object.entries(n.getPositions())) { const d = n.canvasToDOM(p);
            if (d.x > 40 && d.y > 20 && d.x < r.width - 40 && d.y < r.height - 20) out.push([id, r.left + d.x, r.top + d.y]); }
          return out; }"""
    )
    selects = []
    for path, x, y in spots[:repeats]:
        started = time.perf_counter()
        page.mouse.click(x, y)
        page.locator(".jw-panel .jw-head", has_text=f"Node {path} ·").wait_for(timeout=60_000)
        selects.append(time.perf_counter() - started)
        time.sleep(0.3)
    return draw, selects, f"first canvas draw {float(draw_ms):.0f} ms"


def measure_graphviz(page, url: str, cid: str, tree, repeats: int) -> tuple[float, list[float], str]:
    nodes = len(tree.nodes)
    started = time.perf_counter()
    page.goto(f"{url}/trees?conversation={cid}")
    page.locator("svg g.node").nth(nodes - 1).wait_for(state="attached", timeout=180_000)
    draw = time.perf_counter() - started
    time.sleep(0.5)
    ordered = sorted(tree.nodes.values(), key=lambda n: n.path_key())
    targets = [n for n in ordered if n.kind == "agent"][1 : 1 + repeats]
    selects = []
    for node in targets:
        box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Node")
        started = time.perf_counter()
        box.click()
        page.keyboard.type(f"{node.path} · agent")
        page.keyboard.press("Enter")
        page.get_by_text(f"Node {node.path} · agent").first.wait_for(timeout=180_000)
        # ... and the graph redrawn with this node highlighted (penwidth 3)
        page.wait_for_function(
            """(id) => [...document.querySelectorAll('svg g.node')].some(g =>
                 g.querySelector('title') && g.querySelector('title').textContent === id &&
                 g.querySelector('[stroke-width="3"]'))""",
            arg=node.id, timeout=180_000,
        )  # fmt: skip
        selects.append(time.perf_counter() - started)
        time.sleep(0.3)
    return draw, selects, "Graphviz (d3-graphviz in the browser)"


SVG_NOW, SVG_BEFORE, GRAPHVIZ, VIS_NETWORK = ("svg, panel in the browser (now)", "svg, rerun per click (before)",
                                              "graphviz (before)", "vis-network")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="node selections per tree and view")
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--no-before", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--vis", action="store_true", help="also measure vis-network (downloads the pyvis wheel)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "app.md")
    parser.add_argument("--db", type=Path, help="reuse the database of an earlier run (its last three runs)")
    args = parser.parse_args()

    load_start = os.getloadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []  # (view, nodes, draw, selects, settled, note)

    def record(view, tree, draw, selects, settled, note):
        rows.append((view, len(tree.nodes), draw, selects, settled, note))
        print(view, len(tree.nodes), f"draw {draw:.2f} s, select {median(selects):.3f} s, settled "
              f"{median(settled):.3f} s ({note}), load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.db:  # a database made by an earlier run of this bench: its last three runs
            db = args.db
            conversations = [c.id for c in reads.list_conversations(Database(db)) if c.position == 0][-3:]
        else:
            (tmp / "data").mkdir()
            db, conversations = build_db(tmp / "data")
        trees = {cid: reads.load_tree(Database(db), cid) for cid in conversations}
        print("trees:", ", ".join(f"{len(t.nodes)} nodes" for t in trees.values()))
        biggest = max(trees, key=lambda c: len(trees[c].nodes))
        with chromium() as new_page, ExitStack() as servers:
            variants = [(SVG_NOW, servers.enter_context(streamlit_app(db)))]
            if not args.no_before:
                (tmp / "before").mkdir()
                folder = app_at(tmp / "before", args.before_rev)
                variants.append((SVG_BEFORE, servers.enter_context(streamlit_app(db, cwd=folder,
                                                                                env={"PYTHONPATH": str(folder)}))))
            pages = {}
            for view, url in variants:
                pages[view] = new_page()
                pages[view].goto(url)  # warm the server
                pages[view].get_by_role("heading", name="JOSH Workbench").wait_for(timeout=60_000)
            for i, (cid, tree) in enumerate(trees.items()):
                # The two SVG variants in turns (now first on one tree, before first on the next).
                order = variants if i % 2 == 0 else variants[::-1]
                for view, url in order:
                    shot = SHOT if cid == biggest and view == SVG_NOW else None
                    draw, selects, settled, note = measure_svg(pages[view], url, db, cid, tree, args.repeats, shot)
                    record(view, tree, draw, selects, settled, note)
            for page in pages.values():
                page.close()
            if args.vis:
                (tmp / "vis").mkdir()
                js = vis_network_js(tmp / "vis")
                env = {"VIS_NETWORK_JS": str(js)}
                with streamlit_app(db, cwd=ROOT, app="bench/app_variants/vis_network_tree.py", env=env) as url:
                    page = new_page()
                    for cid, tree in trees.items():
                        draw, selects, note = measure_vis(page, url, cid, len(tree.nodes), args.repeats)
                        record(VIS_NETWORK, tree, draw, selects, [], note)
                    page.close()
            if not args.no_baseline:
                (tmp / "baseline").mkdir()
                folder = app_at(tmp / "baseline", args.baseline_rev)
                with streamlit_app(db, cwd=folder, env={"PYTHONPATH": str(folder)}) as url:
                    page = new_page()
                    page.goto(url)  # the old app's first session runs in folder mode: warm it
                    page.get_by_text("Runs").first.wait_for(timeout=60_000)
                    for cid, tree in trees.items():
                        repeats = max(2, min(args.repeats, 3))
                        draw, selects, note = measure_graphviz(page, url, cid, tree, repeats)
                        record(GRAPHVIZ, tree, draw, selects, [], note)
                    page.close()
    load_end = os.getloadavg()
    write_results(args, rows, started_at, load_start, load_end)


def write_results(args, rows, started_at: str, load_start, load_end) -> None:
    def cell(view: str, nodes: int):
        match = [r for r in rows if r[0] == view and r[1] == nodes]
        return match[0] if match else None

    def ms(values: list[float]) -> str:
        return f"{median(values):.3f} s (n={len(values)})" if values else ""

    sizes = sorted({r[1] for r in rows})
    lines = [
        "# Tree explorer in the browser",
        "",
        f"`python bench/bench_app.py` ({started_at}) on {platform.machine()}, Python {platform.python_version()}, "
        f"headless Chromium; a shared 2-core machine: load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in load_start)} at the start, {', '.join(f'{x:.1f}' for x in load_end)} at "
        "the end, so absolute times are noisy: compare the rows of one run (the two SVG variants were measured "
        "in turns). Medians. draw = page load to the tree drawn (median of three loads); select = click "
        "(Graphviz: pick in the sidebar) to the side panel showing the node (Graphviz: and the graph redrawn); "
        "settled = click to the URL and the conversation below the explorer naming the node.",
        "",
        "| nodes | view | draw | select | settled | select vs svg, rerun per click | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for nodes in sizes:
        before = cell(SVG_BEFORE, nodes)
        for view in (GRAPHVIZ, SVG_BEFORE, SVG_NOW, VIS_NETWORK):
            row = cell(view, nodes)
            if row is None:
                continue
            _, _, draw, selects, settled, note = row
            ratio = (f"{median(before[3]) / median(selects):.1f}x faster" if before and view != SVG_BEFORE
                     and median(selects) < median(before[3]) else
                     f"{median(selects) / median(before[3]):.1f}x slower" if before and view != SVG_BEFORE else "")  # fmt: skip
            lines.append(f"| {nodes} | {view} | {draw:.2f} s | {ms(selects)} | {ms(settled)} | {ratio} | {note} |")
    biggest = max(sizes) if sizes else 0
    now, before, gv = (cell(v, biggest) for v in (SVG_NOW, SVG_BEFORE, GRAPHVIZ))
    lines += ["", "Goal: on a tree of at least 400 nodes, the first view shows the opener and the ideal path "
              "readable, the tree is drawn in under 2 s and a selection shown in under 0.3 s (median, in the browser)."]
    if now:
        ok = now[2] < 2 and median(now[3]) < 0.3 and "first view OK" in now[5]
        lines.append(f"At {biggest} nodes the SVG component draws in {now[2]:.2f} s from page load and shows a "
                     f"selection in {median(now[3]):.3f} s (the URL and the conversation below follow in "
                     f"{median(now[4]):.3f} s); {now[5].split('; ')[-1]}: {'met' if ok else 'NOT met'} on this run. "
                     f"The first view: `{SHOT.relative_to(ROOT)}`.")  # fmt: skip
    if now and before:
        lines.append(f"Before, the side panel came with the explorer's rerun: {median(before[3]):.3f} s at {biggest} "
                     f"nodes, {median(before[3]) / median(now[3]):.1f}x the time it takes now.")  # fmt: skip
    if gv and now:
        lines.append(f"The first Trees page (Graphviz) redrew the whole graph on every selection: {median(gv[3]):.1f} s "
                     f"at {biggest} nodes ({median(gv[3]) / median(now[3]):.0f}x the time it takes now).")  # fmt: skip
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
