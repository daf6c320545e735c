// Tree explorer for the JOSH Workbench (a Streamlit components.v2 component).
//
// Python sends the nodes (josh_core/treeviz.py graph_data): parent, depth, drawing order,
// names, labels, the spine (the ideal path), which subtrees open folded, and each node's side
// panel as markup data (ui_common.py node_panel). This draws every node once per tree `key` as
// SVG, lays out the unfolded ones (the same rule as treeviz.py layout_tree: the spine one
// straight line at the top), and on a fold or unfold only lays out again; a new selection moves
// a highlight, marks its path from the opener and fills the side panel here, at once (no round
// trip to Python). Zoom with the wheel or the buttons, pan by dragging or on the minimap, click
// a node (or use the arrow keys) to select it, click a "+N" handle to unfold what is behind it;
// the selection goes back to Python as the state value `selected` (a node path), which keeps
// the URL and the conversation below the explorer. Python chooses a node (a link) by sending a
// new `pick`; `reveal` asks for it to be brought into view.
// Model text is untrusted: it only ever enters the page as text nodes (textContent,
// createTextNode), never through innerHTML.

const SVG = "http://www.w3.org/2000/svg";
const TEXT_MIN_SCALE = 0.55; // below this zoom the boxes are drawn without text

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, cls, parent, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

// Markup data: ["tag.class names", child...] or ["tag.class", {title}, child...], a child
// being text or markup (ui_common.py markup_html renders the same data as HTML). A tag outside
// this list is dropped, no other attribute is ever set, and text becomes text nodes.
const MARKUP_TAGS = new Set(["div", "span", "b", "h4"]);

function markup(node) {
  if (typeof node === "string") return document.createTextNode(node);
  if (!Array.isArray(node) || typeof node[0] !== "string") return document.createTextNode("");
  const [head, ...children] = node;
  const dot = head.indexOf(".");
  const tag = dot < 0 ? head : head.slice(0, dot);
  if (!MARKUP_TAGS.has(tag)) return document.createTextNode("");
  const e = document.createElement(tag);
  if (dot >= 0) e.className = head.slice(dot + 1);
  for (const child of children) {
    if (child && typeof child === "object" && !Array.isArray(child)) {
      if (typeof child.title === "string") e.title = child.title;
    } else e.appendChild(markup(child));
  }
  return e;
}

function build(parentElement) {
  const root = html("div", "jg-root", parentElement);
  const bar = html("div", "jg-bar", root);
  const buttons = {};
  for (const [name, text, title] of [
    ["fit", "Fit", "Show every unfolded node"],
    ["out", "−", "Zoom out"],
    ["in", "+", "Zoom in"],
    ["sel", "Selected", "Centre the selected node"],
    ["start", "Opener", "Back to the opener at readable size"],
    ["unfold", "Unfold all", "Show every node of the tree"],
    ["fold", "Spine only", "Fold every subtree off the ideal path"],
  ]) {
    buttons[name] = html("button", "jg-btn", bar, text);
    buttons[name].type = "button";
    buttons[name].title = title;
    buttons[name].dataset.action = name;
  }
  const legend = html("div", "jg-legend", bar);
  const body = html("div", "jg-body", root);
  const frame = html("div", "jg-frame", body);
  const view = html("div", "jg-view", frame);
  html("div", "jg-hint", frame, "drag to pan · wheel to zoom · click a node · +N unfolds · arrow keys move");
  view.tabIndex = 0;
  view.setAttribute("role", "application");
  view.setAttribute("aria-label", "conversation tree");
  const svg = el("svg", { class: "jg-svg", width: "100%", height: "100%" }, view);
  const world = el("g", { class: "jg-world" }, svg);
  const mini = html("div", "jg-mini", frame);
  mini.title = "the whole tree: click to go there";
  const miniSvg = el("svg", { class: "jg-mini-svg", width: "100%", height: "100%", preserveAspectRatio: "xMidYMid meet" }, mini);
  const miniNodes = el("g", {}, miniSvg);
  const miniView = el("rect", { class: "jg-mini-view" }, miniSvg);
  // The selected node in detail, beside the graph (role "region": its own scroll).
  const side = html("div", "jg-side", body);
  side.setAttribute("role", "region");
  side.setAttribute("aria-label", "selected node");
  side.tabIndex = 0;
  const tip = html("div", "jg-tip", root);
  return { root, bar, buttons, legend, frame, view, svg, world, mini, miniSvg, miniNodes, miniView, side, tip };
}

function drawLegend(ui, data) {
  ui.legend.replaceChildren();
  for (const item of data.legend) {
    const chip = html("span", "jg-chip", ui.legend, item.word);
    chip.style.background = item.fill;
    chip.style.borderColor = item.border;
    chip.title = item.help;
  }
  const marks = [
    ["jg-mark-goal", "★", "goal reached"],
    ["jg-mark-partial", "★", "partial credit"],
    ["jg-mark-verdict", "✎", "human verdict"],
    ["jg-mark-root", "▌", "new root"],
    ["jg-mark-err", "!", "error"],
    ["jg-mark-pruned", "┄", "pruned"],
    ["jg-mark-user", "□", "user turn"],
    ["jg-mark-fold", "+N", "folded subtree"],
  ];
  for (const [cls, sym, word] of marks) {
    const m = html("span", "jg-key", ui.legend);
    html("span", "jg-sym " + cls, m, sym);
    html("span", "", m, " " + word);
  }
}

function draw(state, data) {
  const { ui } = state;
  ui.world.replaceChildren();
  ui.miniNodes.replaceChildren();
  const w = data.node_w, h = data.node_h;
  const byId = new Map();
  for (const n of data.nodes) byId.set(n.id, n);
  const children = new Map();
  for (const n of data.nodes) {
    if (n.parent === null || !byId.has(n.parent)) continue;
    if (!children.has(n.parent)) children.set(n.parent, []);
    children.get(n.parent).push(n.id);
  }
  for (const kids of children.values()) kids.sort((a, b) => byId.get(a).rank - byId.get(b).rank);
  // Nodes below each node (the count on a folded node's handle).
  const below = new Map();
  for (const n of [...data.nodes].sort((a, b) => b.depth - a.depth)) {
    const kids = children.get(n.id) || [];
    below.set(n.id, kids.reduce((sum, k) => sum + 1 + below.get(k), 0));
  }
  const edgeLayer = el("g", { class: "jg-edges" }, ui.world);
  const edges = new Map(); // child id -> its edge from the parent
  for (const n of data.nodes) {
    if (n.parent === null || !byId.has(n.parent)) continue;
    const ideal = n.label === "ideal" && byId.get(n.parent).label === "ideal";
    edges.set(n.id, el("path", { class: ideal ? "jg-edge jg-edge-ideal" : "jg-edge" }, edgeLayer));
  }
  const layer = el("g", { class: "jg-nodes" }, ui.world);
  const groups = new Map(), handles = new Map(), minis = new Map();
  for (const n of data.nodes) {
    const g = el("g", { class: "jg-node jg-" + n.kind + (n.pruned ? " jg-pruned" : "") + (n.spine ? " jg-spine" : "") }, layer);
    g.dataset.path = n.id;
    g.dataset.label = n.label;
    g.dataset.name = n.name;
    el("rect", { width: w, height: h, rx: 6, fill: n.fill, stroke: n.border, class: "jg-box" }, g);
    if (n.root) el("rect", { x: -1, y: 4, width: 5, height: h - 8, rx: 2, class: "jg-root-bar" }, g);
    const head = el("text", { x: 9, y: 17, class: "jg-head" }, g);
    head.textContent = n.head;
    const text = el("text", { x: 9, y: 34, class: "jg-text" }, g);
    text.textContent = n.text;
    if (n.goals > 0 || n.partial > 0) {
      const count = n.goals || n.partial;
      el("circle", { cx: w - 2, cy: 2, r: 10, class: n.goals ? "jg-goal" : "jg-partial" }, g);
      const t = el("text", { x: w - 2, y: 6, class: n.goals ? "jg-goal-text" : "jg-partial-text" }, g);
      t.textContent = count > 1 ? "★" + count : "★";
    }
    if (n.verdict) {
      g.dataset.verdict = n.verdict;
      el("circle", { cx: w - 26, cy: 2, r: 9, class: "jg-verdict" }, g);
      const t = el("text", { x: w - 26, y: 6, class: "jg-verdict-text" }, g);
      t.textContent = "✎";
    }
    if (n.errors > 0) {
      el("circle", { cx: w - 2, cy: h - 2, r: 8, class: "jg-err" }, g);
      const t = el("text", { x: w - 2, y: h + 2, class: "jg-err-text" }, g);
      t.textContent = "!";
    }
    if (children.has(n.id)) {
      const handle = el("g", { class: "jg-fold", transform: `translate(${w + 4},${h / 2 - 9})` }, g);
      handle.dataset.path = n.id;
      el("rect", { width: 36, height: 18, rx: 9, class: "jg-fold-box" }, handle);
      handles.set(n.id, el("text", { x: 18, y: 13, class: "jg-fold-text" }, handle));
    }
    groups.set(n.id, g);
    minis.set(n.id, el("rect", { width: w, height: h, fill: n.label === "unexplored" ? "#cfcfcf" : n.border }, ui.miniNodes));
  }
  state.highlight = el("rect", { width: w + 10, height: h + 10, x: -5, y: -5, rx: 9,
                                 class: "jg-highlight", visibility: "hidden" }, ui.world);
  Object.assign(state, { byId, children, below, edges, groups, handles, minis, data, onPath: [] });
  state.folded = new Set(data.nodes.filter((n) => n.folded).map((n) => n.id));
  layout(state);
}

// The same rule as josh_core/treeviz.py layout_tree, over the nodes not folded away.
function layout(state) {
  const { data, byId, children, folded } = state;
  const w = data.node_w, h = data.node_h, gx = data.gap_x, gy = data.gap_y;
  const kids = (id) => (folded.has(id) ? [] : children.get(id) || []);
  const nextFree = new Map(), ys = new Map();
  const shift = (id, delta) => {
    const stack = [id];
    while (stack.length) {
      const cur = stack.pop();
      ys.set(cur, ys.get(cur) + delta);
      const d = byId.get(cur).depth;
      nextFree.set(d, Math.max(nextFree.get(d) || 0, ys.get(cur) + h + gy));
      stack.push(...kids(cur));
    }
  };
  const place = (n) => {
    const ks = kids(n.id);
    const floor = nextFree.get(n.depth) || 0;
    let y = floor;
    if (ks.length) {
      y = n.spine ? ys.get(ks[0]) : (ys.get(ks[0]) + ys.get(ks[ks.length - 1])) / 2;
      if (y < floor) {
        for (const k of ks) shift(k, floor - y);
        y = floor;
      }
    }
    ys.set(n.id, y);
    nextFree.set(n.depth, y + h + gy);
  };
  for (const r of data.nodes.filter((n) => n.parent === null || !byId.has(n.parent))) {
    const stack = [[r, false]];
    while (stack.length) {
      const [n, expanded] = stack.pop();
      if (expanded) { place(n); continue; }
      stack.push([n, true]);
      for (const k of [...kids(n.id)].reverse()) stack.push([byId.get(k), false]);
    }
  }
  let width = w, height = h;
  const columns = new Map();
  for (const n of data.nodes) {
    const shown = ys.has(n.id);
    const g = state.groups.get(n.id), m = state.minis.get(n.id);
    n.visible = shown;
    g.classList.toggle("jg-hidden", !shown);
    m.setAttribute("visibility", shown ? "visible" : "hidden");
    if (!shown) continue;
    n.x = n.depth * (w + gx);
    n.y = ys.get(n.id);
    width = Math.max(width, n.x + w + 44);
    height = Math.max(height, n.y + h);
    g.setAttribute("transform", `translate(${n.x},${n.y})`);
    m.setAttribute("x", n.x);
    m.setAttribute("y", n.y);
    if (!columns.has(n.depth)) columns.set(n.depth, []);
    columns.get(n.depth).push(n);
    const handle = state.handles.get(n.id);
    if (handle) {
      const isFolded = folded.has(n.id);
      handle.textContent = isFolded ? "+" + state.below.get(n.id) : "−";
      handle.parentNode.classList.toggle("jg-folded", isFolded);
      handle.parentNode.setAttribute("aria-label", isFolded ? `unfold ${state.below.get(n.id)} nodes` : "fold");
      g.dataset.folded = isFolded ? String(state.below.get(n.id)) : "";
    }
  }
  for (const [id, edge] of state.edges) {
    const n = byId.get(id), p = byId.get(n.parent);
    if (!n.visible) { edge.setAttribute("visibility", "hidden"); continue; }
    const x1 = p.x + w, y1 = p.y + h / 2, x2 = n.x, y2 = n.y + h / 2, mx = (x1 + x2) / 2;
    edge.setAttribute("d", `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
    edge.setAttribute("visibility", "visible");
  }
  for (const col of columns.values()) col.sort((a, b) => a.y - b.y);
  state.columns = columns;
  state.bounds = { width, height };
  state.ui.miniSvg.setAttribute("viewBox", `-20 -20 ${width + 40} ${height + 40}`);
  state.ui.view.dataset.shown = String(ys.size);
  if (state.selected) highlight(state, state.selected, true);
}

function apply(state) {
  const { s, tx, ty } = state.view;
  state.ui.world.setAttribute("transform", `translate(${tx},${ty}) scale(${s})`);
  state.ui.svg.classList.toggle("jg-far", s < TEXT_MIN_SCALE);
  state.ui.view.dataset.scale = s.toFixed(3);
  if (state.bounds) {
    const { vw, vh } = viewSize(state);
    const mv = state.ui.miniView;
    mv.setAttribute("x", -tx / s);
    mv.setAttribute("y", -ty / s);
    mv.setAttribute("width", vw / s);
    mv.setAttribute("height", vh / s);
  }
}

function viewSize(state) {
  const r = state.ui.view.getBoundingClientRect();
  return { vw: r.width || 800, vh: r.height || 560 };
}

function fit(state) {
  const { vw, vh } = viewSize(state);
  const d = state.bounds;
  const s = Math.min(1.2, (vw - 24) / d.width, (vh - 24) / d.height);
  state.view = { s, tx: (vw - d.width * s) / 2, ty: (vh - d.height * s) / 2 };
  apply(state);
}

function clampAxis(t, size, world) {
  // Keep the tree from leaving an empty band: when it is larger than the view, its edges
  // stay at or beyond the view's; when smaller, it starts at the view's edge.
  const pad = 12;
  if (world + 2 * pad <= size) return pad;
  return Math.min(Math.max(t, size - world - pad), pad);
}

function centreAt(state, wx, wy, scale) {
  const { vw, vh } = viewSize(state);
  const s = scale || state.view.s;
  const d = state.bounds;
  state.view = {
    s,
    tx: clampAxis(vw / 2 - wx * s, vw, d.width * s),
    ty: clampAxis(vh / 2 - wy * s, vh, d.height * s),
  };
  apply(state);
}

function centreOn(state, id, scale) {
  const n = state.byId.get(id);
  if (!n || !n.visible) return;
  centreAt(state, n.x + state.data.node_w / 2, n.y + state.data.node_h / 2, scale);
}

function start(state) {
  // The opener at the left edge at readable size, the spine along the top.
  const { vh } = viewSize(state);
  const s = 0.8;
  state.view = { s, tx: 12, ty: clampAxis(12, vh, state.bounds.height * s) };
  apply(state);
}

function initialView(state) {
  const d = state.bounds;
  // A small tree gets a short view; a big one (the minimap shown) room to unfold.
  const vw0 = viewSize(state).vw;
  const big = (vw0 - 24) / d.width < 0.75;
  state.ui.view.style.height = Math.round(Math.min(600, Math.max(big ? 360 : 240, d.height * 0.8 + 40))) + "px";
  // The side panel beside it: as tall as the view, and tall enough to read a turn.
  state.ui.side.style.height = Math.max(440, parseInt(state.ui.view.style.height, 10)) + "px";
  const { vw, vh } = viewSize(state);
  const whole = Math.min((vw - 24) / d.width, (vh - 24) / d.height);
  state.ui.mini.style.display = whole >= 0.75 ? "none" : "block";
  if (whole >= 0.75) return fit(state);
  start(state);
  // A link named the node: the opener's view if it shows it, else the node at readable size,
  // wherever it sits in the tree.
  if (state.reveal && state.selected) reveal(state, state.selected);
}

function zoomAt(state, factor, cx, cy) {
  const v = state.view;
  const s = Math.max(0.05, Math.min(3, v.s * factor));
  const k = s / v.s;
  state.view = { s, tx: cx - (cx - v.tx) * k, ty: cy - (cy - v.ty) * k };
  apply(state);
}

function unfoldTo(state, id) {
  // A node chosen from Python (a link, the conversation list) may sit in a folded subtree.
  let changed = false;
  for (let p = state.byId.get(id); p && p.parent !== null; p = state.byId.get(p.parent)) {
    if (state.folded.delete(p.parent)) changed = true;
  }
  if (changed) layout(state);
}

function showPanel(state, id) {
  // The panel is rebuilt only when the node or its data changed (a live tree may update the
  // selected node); a new node starts at the panel's top.
  const n = id ? state.byId.get(id) : null;
  const json = n && n.panel ? JSON.stringify(n.panel) : "";
  if (state.panelShown === id && state.panelJson === json) return;
  const side = state.ui.side;
  side.replaceChildren(n && n.panel ? markup(n.panel) : html("div", "jw-muted", null, "Click a node to see its turn here."));
  if (state.panelShown !== undefined && state.panelShown !== id) side.scrollTop = 0;
  state.panelShown = id;
  state.panelJson = json;
}

function highlight(state, id, again) {
  if (!again) {
    state.selected = id;
    showPanel(state, id);
  }
  state.ui.view.dataset.selected = id || "";
  if (state.selectedGroup) state.selectedGroup.classList.remove("jg-selected");
  for (const item of state.onPath) item.classList.remove("jg-on-path");
  state.onPath = [];
  const n = id ? state.byId.get(id) : null;
  const g = n ? state.groups.get(id) : null;
  state.selectedGroup = g || null;
  if (!g || !n.visible) {
    state.highlight.setAttribute("visibility", "hidden");
    return;
  }
  g.classList.add("jg-selected");
  // The path from the opener to the selection: its boxes and edges marked.
  for (let p = n; p; p = p.parent === null ? null : state.byId.get(p.parent)) {
    const box = state.groups.get(p.id), edge = state.edges.get(p.id);
    box.classList.add("jg-on-path");
    state.onPath.push(box);
    if (edge) { edge.classList.add("jg-on-path"); state.onPath.push(edge); }
  }
  state.highlight.setAttribute("transform", `translate(${n.x},${n.y})`);
  state.highlight.setAttribute("visibility", "visible");
}

function ensureVisible(state, id) {
  const n = state.byId.get(id);
  if (!n || !n.visible) return;
  const { vw, vh } = viewSize(state);
  const { s, tx, ty } = state.view;
  const x = n.x * s + tx, y = n.y * s + ty;
  if (x < 0 || y < 0 || x + state.data.node_w * s > vw || y + state.data.node_h * s > vh) centreOn(state, id);
}

function report(state, id) {
  // Python keeps the URL and the conversation below in step (a rerun of the explorer only;
  // the panel is already filled).
  if (id === state.reported) return;
  state.reported = id;
  state.setStateValue("selected", id);
}

function reveal(state, id) {
  // A node Python chose (a link): in view and readable, wherever it sits in the tree.
  const n = state.byId.get(id);
  if (!n || !n.visible) return;
  if (state.view.s < TEXT_MIN_SCALE) centreOn(state, id, 0.8);
  else ensureVisible(state, id);
}

function choose(state, id) {
  if (!id || !state.byId.has(id) || id === state.selected) return;
  unfoldTo(state, id);
  highlight(state, id);
  ensureVisible(state, id);
  report(state, id);
}

function toggleFold(state, id) {
  const n = state.byId.get(id);
  const before = { x: n.x, y: n.y };
  if (state.folded.has(id)) {
    // Unfold everything behind the handle: the "+N" said how many nodes come into view.
    const stack = [id];
    while (stack.length) {
      const cur = stack.pop();
      state.folded.delete(cur);
      stack.push(...(state.children.get(cur) || []));
    }
  } else state.folded.add(id);
  layout(state);
  // Keep the node under the pointer where it was.
  const v = state.view;
  state.view = { s: v.s, tx: v.tx - (n.x - before.x) * v.s, ty: v.ty - (n.y - before.y) * v.s };
  apply(state);
}

function neighbour(state, key) {
  const cur = state.byId.get(state.selected);
  if (!cur || !cur.visible) return state.data.nodes[0] && state.data.nodes[0].id;
  if (key === "ArrowLeft") return cur.parent;
  if (key === "ArrowRight") {
    if (state.folded.has(cur.id)) toggleFold(state, cur.id);
    const kids = state.children.get(cur.id) || [];
    const ideal = kids.find((k) => state.byId.get(k).label === "ideal");
    return ideal || kids[0];
  }
  const col = state.columns.get(cur.depth);
  const i = col.findIndex((n) => n.id === cur.id);
  const j = key === "ArrowUp" ? i - 1 : i + 1;
  return j >= 0 && j < col.length ? col[j].id : null;
}

function attach(state) {
  const { ui } = state;
  let drag = null;
  ui.view.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    const at = e.target.closest ? e.target : null;
    drag = { x: e.clientX, y: e.clientY, tx: state.view.tx, ty: state.view.ty, moved: false,
             fold: at ? at.closest(".jg-fold") : null, target: at ? at.closest(".jg-node") : null };
    ui.view.setPointerCapture(e.pointerId);
  });
  ui.view.addEventListener("pointermove", (e) => {
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (drag.moved) {
        state.view.tx = drag.tx + dx;
        state.view.ty = drag.ty + dy;
        apply(state);
        ui.tip.style.display = "none";
      }
      return;
    }
    const g = e.target.closest ? e.target.closest(".jg-node") : null;
    if (!g) {
      ui.tip.style.display = "none";
      return;
    }
    const n = state.byId.get(g.dataset.path);
    const folded = state.folded.has(n.id) ? `\n${state.below.get(n.id)} nodes folded behind +${state.below.get(n.id)}: click it to unfold` : "";
    ui.tip.textContent = n.hover + folded;
    const r = ui.root.getBoundingClientRect();
    ui.tip.style.left = Math.min(e.clientX - r.left + 14, r.width - 340) + "px";
    ui.tip.style.top = e.clientY - r.top + 16 + "px";
    ui.tip.style.display = "block";
  });
  const end = () => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (!d.moved && d.fold) toggleFold(state, d.fold.dataset.path);
    else if (!d.moved && d.target) choose(state, d.target.dataset.path);
    ui.view.focus({ preventScroll: true });
  };
  ui.view.addEventListener("pointerup", end);
  ui.view.addEventListener("pointercancel", () => { drag = null; });
  ui.view.addEventListener("pointerleave", () => { ui.tip.style.display = "none"; });
  ui.view.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = ui.view.getBoundingClientRect();
    zoomAt(state, Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  ui.view.addEventListener("keydown", (e) => {
    if (!["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(e.key)) return;
    e.preventDefault();
    choose(state, neighbour(state, e.key));
  });
  ui.mini.addEventListener("pointerdown", (e) => {
    // The minimap's point under the pointer, in layout units, becomes the view's centre.
    const m = ui.miniSvg.getScreenCTM();
    if (!m) return;
    const pt = new DOMPoint(e.clientX, e.clientY).matrixTransform(m.inverse());
    centreAt(state, pt.x, pt.y);
  });
  ui.bar.addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    const { vw, vh } = viewSize(state);
    const a = b.dataset.action;
    if (a === "fit") fit(state);
    else if (a === "in") zoomAt(state, 1.25, vw / 2, vh / 2);
    else if (a === "out") zoomAt(state, 0.8, vw / 2, vh / 2);
    else if (a === "sel" && state.selected) centreOn(state, state.selected, Math.max(state.view.s, 0.8));
    else if (a === "start") start(state);
    else if (a === "unfold") { state.folded.clear(); layout(state); apply(state); }
    else if (a === "fold") {
      state.folded = new Set(state.data.nodes.filter((n) => !n.spine && state.children.has(n.id)).map((n) => n.id));
      if (state.selected) unfoldTo(state, state.selected);
      layout(state);
      start(state);
    }
  });
}

function sameBytes(a, b) {
  if (a === b) return true;
  if (!a || !b || a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function decode(raw, ui) {
  // Python sends UTF-8 JSON bytes (ui_common.py tree_graph). A rerun after a click sends the
  // same bytes again: comparing them costs far less than parsing them.
  if (raw instanceof ArrayBuffer) raw = new Uint8Array(raw);
  if (!(raw instanceof Uint8Array)) return raw;
  if (ui && sameBytes(ui.raw, raw)) return ui.parsed;
  return JSON.parse(new TextDecoder().decode(raw));
}

export default function (component) {
  const { parentElement, setStateValue } = component;
  if (!component.data) return;
  const data = decode(component.data, parentElement.__jgUi);
  let ui = parentElement.__jgUi;
  if (!ui || !ui.root.isConnected) {
    ui = build(parentElement);
    parentElement.__jgUi = ui;
    // `reported`: the state value Python holds (its default is the first `selected`).
    ui.state = { ui, view: { s: 1, tx: 0, ty: 0 }, selected: null, reported: data.selected };
    attach(ui.state);
  }
  const state = ui.state;
  Object.assign(ui, { raw: component.data instanceof ArrayBuffer ? new Uint8Array(component.data) : component.data, parsed: data });
  state.setStateValue = setStateValue;
  const picked = data.pick !== state.pick; // Python chose a node (first data, or a link)
  state.pick = data.pick;
  state.reveal = Boolean(data.reveal);
  if (state.key !== data.key) {
    const tree = (key) => key.slice(0, key.lastIndexOf(":")); // "<conversation id>:<signature>"
    const fresh = state.key === undefined || tree(state.key) !== tree(data.key);
    const started = performance.now();
    const keepFolds = !fresh && state.folded ? new Set(state.folded) : null;
    drawLegend(ui, data);
    draw(state, data);
    if (keepFolds) {
      // The same tree grew (a live run): keep what the person folded and unfolded.
      state.folded = new Set(data.nodes.filter((n) => keepFolds.has(n.id) || (n.folded && !state.known.has(n.id))).map((n) => n.id));
      layout(state);
    }
    state.known = new Set(data.nodes.map((n) => n.id));
    state.key = data.key;
    const own = !fresh && !picked && state.selected && state.byId.has(state.selected);
    const keep = own ? state.selected : data.selected;
    state.selected = null;
    state.panelShown = undefined;
    if (keep) unfoldTo(state, keep);
    highlight(state, keep);
    if (fresh) requestAnimationFrame(() => initialView(state));
    else {
      apply(state);
      if (picked && keep) (state.reveal ? reveal : ensureVisible)(state, keep);
    }
    if (picked && keep) report(state, keep);
    ui.view.dataset.drawMs = (performance.now() - started).toFixed(1);
    ui.view.dataset.key = data.key;
  } else {
    // The same drawing: take the nodes' newest panels (the data may be a newer read).
    if (data !== state.panelsFrom) {
      state.panelsFrom = data;
      for (const n of data.nodes) {
        const known = state.byId.get(n.id);
        if (known) known.panel = n.panel;
      }
    }
    if (picked && data.selected && state.byId.has(data.selected)) {
      // Python chose another node (a link, not a click here): follow it, bring it into view,
      // and say so, so that Python's state value is that node. The same data sent again after
      // a click carries the same `pick` and must not move the highlight back.
      unfoldTo(state, data.selected);
      if (data.selected !== state.selected) highlight(state, data.selected);
      (state.reveal ? reveal : ensureVisible)(state, data.selected);
      report(state, data.selected);
    } else showPanel(state, state.selected);
  }
}
