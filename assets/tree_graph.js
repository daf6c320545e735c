// Tree explorer for the JOSH Workbench (a Streamlit components.v2 component).
//
// Python sends positioned nodes (josh_core/treeviz.py graph_data); this draws them once per
// tree `key` as SVG, then only moves a highlight when the selection changes. Zoom with the
// wheel or the buttons, pan by dragging, click a node (or use the arrow keys) to select it;
// the selection goes back to Python as the state value `selected` (a node path).
// Model text is untrusted: it only ever enters the page through textContent.

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

function build(parentElement) {
  const root = html("div", "jg-root", parentElement);
  const bar = html("div", "jg-bar", root);
  const buttons = {};
  for (const [name, text, title] of [
    ["fit", "Fit", "Show the whole tree"],
    ["out", "−", "Zoom out"],
    ["in", "+", "Zoom in"],
    ["sel", "Selected", "Centre the selected node"],
  ]) {
    buttons[name] = html("button", "jg-btn", bar, text);
    buttons[name].type = "button";
    buttons[name].title = title;
    buttons[name].dataset.action = name;
  }
  const legend = html("div", "jg-legend", bar);
  const view = html("div", "jg-view", root);
  html("div", "jg-hint", root, "drag to pan · wheel to zoom · click a node · arrow keys move");
  view.tabIndex = 0;
  view.setAttribute("role", "application");
  view.setAttribute("aria-label", "conversation tree");
  const svg = el("svg", { class: "jg-svg", width: "100%", height: "100%" }, view);
  const world = el("g", { class: "jg-world" }, svg);
  const tip = html("div", "jg-tip", root);
  return { root, bar, buttons, legend, view, svg, world, tip };
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
    ["jg-mark-root", "▌", "new root"],
    ["jg-mark-err", "!", "error"],
    ["jg-mark-pruned", "┄", "pruned"],
    ["jg-mark-user", "□", "user turn"],
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
  const w = data.node_w, h = data.node_h;
  const byId = new Map();
  for (const n of data.nodes) byId.set(n.id, n);
  const children = new Map();
  const edges = el("g", { class: "jg-edges" }, ui.world);
  for (const n of data.nodes) {
    if (n.parent === null || !byId.has(n.parent)) continue;
    const p = byId.get(n.parent);
    if (!children.has(p.id)) children.set(p.id, []);
    children.get(p.id).push(n.id);
    const x1 = p.x + w, y1 = p.y + h / 2, x2 = n.x, y2 = n.y + h / 2, mx = (x1 + x2) / 2;
    const ideal = n.label === "ideal" && p.label === "ideal";
    el("path", {
      d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      class: ideal ? "jg-edge jg-edge-ideal" : "jg-edge",
    }, edges);
  }
  const layer = el("g", { class: "jg-nodes" }, ui.world);
  const groups = new Map();
  for (const n of data.nodes) {
    const g = el("g", { class: "jg-node jg-" + n.kind + (n.pruned ? " jg-pruned" : ""),
                        transform: `translate(${n.x},${n.y})` }, layer);
    g.dataset.path = n.id;
    g.dataset.label = n.label;
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
    if (n.errors > 0) {
      el("circle", { cx: w - 2, cy: h - 2, r: 8, class: "jg-err" }, g);
      const t = el("text", { x: w - 2, y: h + 2, class: "jg-err-text" }, g);
      t.textContent = "!";
    }
    groups.set(n.id, g);
  }
  state.highlight = el("rect", { width: w + 10, height: h + 10, x: -5, y: -5, rx: 9,
                                 class: "jg-highlight", visibility: "hidden" }, ui.world);
  state.byId = byId;
  state.children = children;
  state.groups = groups;
  state.data = data;
  // Neighbours at the same depth, top to bottom, for the up/down keys.
  const columns = new Map();
  for (const n of data.nodes) {
    if (!columns.has(n.x)) columns.set(n.x, []);
    columns.get(n.x).push(n);
  }
  for (const col of columns.values()) col.sort((a, b) => a.y - b.y);
  state.columns = columns;
}

function apply(state) {
  const { s, tx, ty } = state.view;
  state.ui.world.setAttribute("transform", `translate(${tx},${ty}) scale(${s})`);
  state.ui.svg.classList.toggle("jg-far", s < TEXT_MIN_SCALE);
  state.ui.view.dataset.scale = s.toFixed(3);
}

function viewSize(state) {
  const r = state.ui.view.getBoundingClientRect();
  return { vw: r.width || 800, vh: r.height || 560 };
}

function fit(state) {
  const { vw, vh } = viewSize(state);
  const d = state.data;
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

function centreOn(state, id, scale) {
  const n = state.byId.get(id);
  if (!n) return;
  const { vw, vh } = viewSize(state);
  const s = scale || state.view.s;
  const d = state.data;
  state.view = {
    s,
    tx: clampAxis(vw / 2 - (n.x + d.node_w / 2) * s, vw, d.width * s),
    ty: clampAxis(vh / 2 - (n.y + d.node_h / 2) * s, vh, d.height * s),
  };
  apply(state);
}

function initialView(state) {
  const d = state.data;
  // A small tree gets a short view; a big one the full height.
  state.ui.view.style.height = Math.round(Math.min(600, Math.max(240, d.height * 0.8 + 40))) + "px";
  const { vw, vh } = viewSize(state);
  const whole = Math.min((vw - 24) / d.width, (vh - 24) / d.height);
  if (whole >= 0.75) return fit(state);
  const s = 0.8; // readable text; the rest of the tree is a drag or "Fit" away
  if (state.selected && state.byId.has(state.selected)) return centreOn(state, state.selected, s);
  const first = d.nodes[0];
  state.view = { s, tx: 12, ty: clampAxis(vh / 2 - (first.y + d.node_h / 2) * s, vh, d.height * s) };
  apply(state);
}

function zoomAt(state, factor, cx, cy) {
  const v = state.view;
  const s = Math.max(0.05, Math.min(3, v.s * factor));
  const k = s / v.s;
  state.view = { s, tx: cx - (cx - v.tx) * k, ty: cy - (cy - v.ty) * k };
  apply(state);
}

function highlight(state, id) {
  state.selected = id;
  state.ui.view.dataset.selected = id || "";
  if (state.selectedGroup) state.selectedGroup.classList.remove("jg-selected");
  const g = id ? state.groups.get(id) : null;
  state.selectedGroup = g || null;
  if (!g) {
    state.highlight.setAttribute("visibility", "hidden");
    return;
  }
  g.classList.add("jg-selected");
  const n = state.byId.get(id);
  state.highlight.setAttribute("transform", `translate(${n.x},${n.y})`);
  state.highlight.setAttribute("visibility", "visible");
}

function ensureVisible(state, id) {
  const n = state.byId.get(id);
  if (!n) return;
  const { vw, vh } = viewSize(state);
  const { s, tx, ty } = state.view;
  const x = n.x * s + tx, y = n.y * s + ty;
  if (x < 0 || y < 0 || x + state.data.node_w * s > vw || y + state.data.node_h * s > vh) centreOn(state, id);
}

function choose(state, id) {
  if (!id || !state.byId.has(id) || id === state.selected) return;
  highlight(state, id);
  ensureVisible(state, id);
  state.setStateValue("selected", id);
}

function neighbour(state, key) {
  const cur = state.byId.get(state.selected);
  if (!cur) return state.data.nodes[0] && state.data.nodes[0].id;
  if (key === "ArrowLeft") return cur.parent;
  if (key === "ArrowRight") {
    const kids = state.children.get(cur.id) || [];
    const ideal = kids.find((k) => state.byId.get(k).label === "ideal");
    return ideal || kids[0];
  }
  const col = state.columns.get(cur.x);
  const i = col.findIndex((n) => n.id === cur.id);
  const j = key === "ArrowUp" ? i - 1 : i + 1;
  return j >= 0 && j < col.length ? col[j].id : null;
}

function attach(state) {
  const { ui } = state;
  let drag = null;
  ui.view.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, tx: state.view.tx, ty: state.view.ty, moved: false,
             target: e.target.closest ? e.target.closest(".jg-node") : null };
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
    ui.tip.textContent = n.hover;
    const r = ui.root.getBoundingClientRect();
    ui.tip.style.left = Math.min(e.clientX - r.left + 14, r.width - 340) + "px";
    ui.tip.style.top = e.clientY - r.top + 16 + "px";
    ui.tip.style.display = "block";
  });
  const end = (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (!d.moved && d.target) choose(state, d.target.dataset.path);
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
  ui.bar.addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    const { vw, vh } = viewSize(state);
    const a = b.dataset.action;
    if (a === "fit") fit(state);
    else if (a === "in") zoomAt(state, 1.25, vw / 2, vh / 2);
    else if (a === "out") zoomAt(state, 0.8, vw / 2, vh / 2);
    else if (a === "sel" && state.selected) centreOn(state, state.selected, Math.max(state.view.s, 0.8));
  });
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data) return;
  let ui = parentElement.__jgUi;
  if (!ui || !ui.root.isConnected) {
    ui = build(parentElement);
    parentElement.__jgUi = ui;
    ui.state = { ui, view: { s: 1, tx: 0, ty: 0 }, selected: null };
    attach(ui.state);
  }
  const state = ui.state;
  state.setStateValue = setStateValue;
  if (state.key !== data.key) {
    const tree = (key) => key.slice(0, key.lastIndexOf(":")); // "<conversation id>:<signature>"
    const fresh = state.key === undefined || tree(state.key) !== tree(data.key);
    const started = performance.now();
    drawLegend(ui, data);
    draw(state, data);
    state.key = data.key;
    const keep = !fresh && state.selected && state.byId.has(state.selected) ? state.selected : data.selected;
    state.selected = null;
    state.dataSelected = data.selected;
    highlight(state, keep);
    if (fresh) requestAnimationFrame(() => initialView(state));
    ui.view.dataset.drawMs = (performance.now() - started).toFixed(1);
    ui.view.dataset.key = data.key;
  } else if (data.selected !== state.dataSelected) {
    // Python chose another node (not a click here): follow it. The same data sent again
    // after a click must not move the highlight back.
    state.dataSelected = data.selected;
    if (data.selected && data.selected !== state.selected) {
      highlight(state, data.selected);
      ensureVisible(state, data.selected);
    }
  }
}
