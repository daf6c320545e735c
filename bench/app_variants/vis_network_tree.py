"""Bench-only variant of the tree explorer drawn with vis-network (bench/bench_app.py).

vis-network comes from the `pyvis` wheel on PyPI (its bundled `vis-network.min.js`, path in
$VIS_NETWORK_JS), served inline with the component: nothing is fetched at run time. The same
layout (josh_core.treeviz.graph_data), side panel and path view as the app, so a selection
costs the same work; the page has no metrics, goal table or legend above the graph.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from josh_core.analysis.transcript import path_views, turn_view  # noqa: E402
from josh_core.search.labels import compute_labels  # noqa: E402
from josh_core.storage import reads  # noqa: E402
from josh_core.storage.db import Database  # noqa: E402
from josh_core.treeviz import graph_data  # noqa: E402
from ui_common import ASSETS, conversation_html, node_panel_html  # noqa: E402

GLUE = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let s = parentElement.__vis;
  if (!s) {
    const div = document.createElement("div");
    div.className = "vis-view";
    div.style.height = "600px";
    div.style.border = "1px solid #ddd";
    parentElement.appendChild(div);
    s = parentElement.__vis = { div };
  }
  if (s.key === data.key) return;
  const t0 = performance.now();
  const nodes = new vis.DataSet(data.nodes.map((n) => ({
    id: n.id, x: n.x + data.node_w / 2, y: n.y + data.node_h / 2, label: n.head + "\\n" + n.text,
    title: n.hover, shape: "box", color: { background: n.fill, border: n.border },
    widthConstraint: { minimum: data.node_w, maximum: data.node_w }, heightConstraint: { minimum: data.node_h },
    font: { size: 12 },
  })));
  const edges = new vis.DataSet(data.nodes.filter((n) => n.parent !== null).map((n) => ({ from: n.parent, to: n.id })));
  const network = new vis.Network(s.div, { nodes, edges }, {
    physics: false, layout: { hierarchical: false }, interaction: { hover: true },
    edges: { smooth: false, color: "#bdbdbd" },
  });
  s.div.__network = network;
  network.once("afterDrawing", () => { s.div.dataset.drawMs = String(performance.now() - t0); });
  network.on("click", (p) => {
    if (p.nodes.length) { s.div.dataset.selected = p.nodes[0]; setStateValue("selected", p.nodes[0]); }
  });
  s.key = data.key;
}
"""

VIS = st.components.v2.component(
    "bench_vis_tree", js=Path(os.environ["VIS_NETWORK_JS"]).read_text() + "\n" + GLUE, isolate_styles=False
)

st.set_page_config(page_title="vis-network variant", layout="wide")
st.html(ASSETS / "app.css")
db = Database(os.environ["JOSH_DB"])
conversation_id = st.query_params["conversation"]
tree = reads.load_tree(db, conversation_id)
labels = compute_labels(tree)
st.title("vis-network variant")


@st.fragment
def explorer() -> None:
    data = graph_data(tree, labels)
    paths = {n.path: n.id for n in tree.nodes.values()}
    left, right = st.columns([3, 2])
    with left:
        result = VIS(key="vis", data=data, default={"selected": None}, on_selected_change=lambda: None)
    selected = result.get("selected") if hasattr(result, "get") else getattr(result, "selected", None)
    if selected in paths:
        st.query_params["node"] = selected
        with right:
            st.html(node_panel_html(turn_view(tree, paths[selected], labels)))
        # the same path view as the app's explorer, so both reruns carry the same work
        st.html(conversation_html(path_views(tree, paths[selected], labels), selected=selected))


explorer()
