"""The app's frame and the helpers its pages share (the only Streamlit code beside app.py and
app_pages/).

The frame (`frame()`, called by app.py before any page runs) owns the database choice: one
sidebar field for every page, kept in `st.session_state` and in the URL (`?db=PATH`), so
moving between pages, reloading, or opening a link in a new tab keeps it. Pages read storage
through `josh_core` functions and never write SQL.

Model text is untrusted. It is shown with `st.text`, or as HTML built here with every value
through `html.escape`, or in Markdown contexts (labels, captions) through `md()`, which
escapes every Markdown control character so `![](http://x/y.png)` stays text.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from josh_core.analysis.transcript import CallView, GoalRow, TurnView, goal_word
from josh_core.paths import default_db_path
from josh_core.storage.db import Database
from josh_core.treeviz import LABEL_COLORS, LABEL_HELP, LABEL_WORDS

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"

DB_KEY = "josh_db"  # the chosen database path (a plain session key: survives page changes)
DB_FIELD = "josh_db_field"  # the sidebar field (drawn by app.py, so one widget on every page)
DB_IN_URL = "josh_db_in_url"  # the value this session last wrote to the URL


# -- Markdown and HTML safety ------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'])")


def md(text: Any) -> str:
    """Untrusted text for a Markdown context (labels, captions): every control character
    escaped, line breaks folded, so it renders as the same characters and nothing else."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


# -- the frame: one database for every page --------------------------------------------------


def frame() -> None:
    """Styles and the database field; app.py calls it on every run before the page."""
    st.html(ASSETS / "app.css")
    keep_widget_state()
    _choose_database()


KEPT = "keep-"  # widgets whose keys start with this keep their values across page changes
KEPT_COPY = "josh-kept-values"  # the kept values, under a plain session key


def keep_widget_state() -> None:
    """Streamlit forgets a widget's value when a run does not draw it (another page ran), and
    a page change that interrupts a fragment's rerun (a training or rollout being followed)
    drops it before the next run even starts. So every run copies the kept values to a plain
    session key, which nothing drops, and writes them back from there: a form stays as it
    was left."""
    copy = st.session_state.setdefault(KEPT_COPY, {})
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(KEPT):
            copy[key] = st.session_state[key]
    for key, value in copy.items():
        st.session_state[key] = value


def kept(name: str, default: Any) -> str:
    """The key for a widget whose value outlives page changes, its first value `default`.
    Give the widget no value/index of its own: the session holds it."""
    key = KEPT + name
    if key not in st.session_state:
        st.session_state[key] = default
    return key


def _adopt_field() -> None:
    st.session_state[DB_KEY] = st.session_state[DB_FIELD].strip()


def _choose_database() -> None:
    linked = st.query_params.get("db")
    if DB_KEY not in st.session_state:
        st.session_state[DB_KEY] = linked or os.environ.get("JOSH_DB") or str(default_db_path())
    elif linked and linked != st.session_state.get(DB_IN_URL):
        # A link or a pasted URL naming a database (not the value this session wrote).
        st.session_state[DB_KEY] = linked
    if st.session_state.get(DB_FIELD) != st.session_state[DB_KEY]:
        st.session_state[DB_FIELD] = st.session_state[DB_KEY]
    st.sidebar.text_input(
        "Database", key=DB_FIELD, on_change=_adopt_field,
        help="A DuckDB file written by `josh rollout` / `josh eval`. Kept for every page and in the URL.",
    )  # fmt: skip
    path = st.session_state[DB_KEY]
    if st.query_params.get("db") != path:
        st.query_params["db"] = path
    st.session_state[DB_IN_URL] = path
    state, message = check_database(path)
    if state != "ok":
        st.sidebar.caption(message)


def check_database(path: str) -> tuple[str, str]:
    """("ok" | "old" | "blank" | "empty" | "missing" | "folder" | "invalid", message for a person).
    "old": a JOSH database of an older schema; "blank": a DuckDB file with no tables. Checking
    never writes: the file is opened read-only (migrating is `migrate_database`, a person's act)."""
    if not path.strip():
        return "empty", "Enter the path of a DuckDB file."
    target = Path(path).expanduser()
    if target.is_dir():
        return "folder", f"{path} is a folder, not a database file."
    if not target.exists():
        return "missing", f"No database at {path} yet: the Launch page creates it."
    stamp = target.stat().st_mtime_ns
    return _probe(str(target), stamp)


@st.cache_data(max_entries=64, show_spinner=False)
def _probe(path: str, stamp: int) -> tuple[str, str]:
    from josh_core.storage import reads
    from josh_core.storage.db import BlankDatabase
    from josh_core.storage.schema import LATEST_VERSION

    try:
        version = reads.schema_version(Database(path, read_only=True))
    except BlankDatabase:
        return "blank", f"{path} is a DuckDB file with no tables: it holds no JOSH data yet."
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable database"
        return "invalid", f"{path} could not be opened as a JOSH database: {error}"
    if version < LATEST_VERSION:
        return "old", (f"{path} has the database schema of an older JOSH Workbench (version {version}; this one "
                       f"reads version {LATEST_VERSION}). Viewing leaves the file as it is; migrating it adds the "
                       "newer tables and columns, after which older versions of the workbench cannot open it.")
    return "ok", ""


def migrate_database(path: str) -> int:
    """Create or migrate the JOSH schema in the file (a person's explicit act); the new version."""
    version = Database(Path(path).expanduser()).ensure_schema()
    _probe.clear()
    return version


def known(value: Any) -> Any:
    """None for a missing value of a data frame (NaN, None, pandas' NA), else the value: pandas'
    NA refuses `or` and `if`, and a run being written has pending conversations full of it."""
    import pandas as pd

    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):  # list-like values: never missing as a whole
        return value


def shell_command(args: list[str]) -> str:
    """A command line to paste into a shell: every argument quoted where it needs it."""
    return shlex.join(str(a) for a in args)


def show_command(args: list[str]) -> None:
    """A command in a code block (copy button, no Markdown escaping in the way)."""
    st.code(shell_command(args), language="bash", wrap_lines=True)


def database_path() -> str:
    """The chosen path, whether or not a file is there yet (the Launch page creates it)."""
    return st.session_state.get(DB_KEY) or os.environ.get("JOSH_DB") or str(default_db_path())


def require_database() -> Database:
    """The chosen database, or a message in the page and a stop. The check opens it read-only;
    the handle returned writes only when a page writes (annotations, exports), never on
    reads, since its schema is current (an older one is migrated only by the button here)."""
    path = database_path()
    state, message = check_database(path)
    if state == "ok":
        migrated = st.session_state.pop("josh-migrated", None)
        if migrated:
            st.success(migrated)
        return Database(Path(path).expanduser())
    if state == "missing":
        st.info(message + " Start a rollout there, for example:")
        show_command(["josh", "rollout", "--josh", "--split", "train", "--limit", "1", "--db", path])
    elif state in ("old", "blank"):
        (st.warning if state == "old" else st.info)(message)
        label = "Migrate this database" if state == "old" else "Create the JOSH schema in this file"
        if st.button(label, key="josh-migrate", type="primary"):
            try:
                version = migrate_database(path)
            except Exception as error:  # noqa: BLE001 - shown to the person, nothing lost
                st.error(f"Could not migrate {path}: {error}")
            else:
                st.session_state["josh-migrated"] = f"{path} now has schema version {version}."
                st.rerun()
    else:
        st.error(message)
    st.stop()


def page_url(page: str, **params: Any) -> str:
    """A link to another page that keeps the database (`page` as in its URL, e.g. "trees")."""
    query = {"db": database_path(), **{k: v for k, v in params.items() if v is not None}}
    return f"/{page}?{urlencode(query)}"


def page_link(page_file: str, label: str, **params: Any) -> None:
    query = {"db": database_path(), **{k: str(v) for k, v in params.items() if v is not None}}
    st.page_link(page_file, label=label, query_params=query)


# -- shared pickers and numbers ----------------------------------------------------------------


def fmt_reward(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def share(count: int, total: int) -> str:
    """"2 of 18 (11%)" for a count-like metric."""
    if not total:
        return f"{count} of 0"
    return f"{count} of {total} ({100 * count / total:.0f}%)"


def pick_run(db: Database, label: str = "Run", allow_all: bool = True, key: str = "run") -> str | None:
    """A run id, or None for every run of the database (kept in the URL as `?run=`)."""
    from josh_core.storage import reads

    runs = reads.list_runs(db)
    ids = [r.id for r in runs]
    options = ([None] if allow_all else []) + ids
    if not ids:
        return None
    linked = st.query_params.get("run")
    index = options.index(linked) if linked in options else (0 if allow_all else len(options) - 1)
    describe = {r.id: f"{r.id} · {r.kind} · {r.agent_spec or ''}" for r in runs}
    chosen = st.sidebar.selectbox(label, options, index=index, key=key,
                                  format_func=lambda r: "every run" if r is None else describe[r])  # fmt: skip
    if chosen is None:
        st.query_params.pop("run", None)
    else:
        st.query_params["run"] = chosen
    return chosen


def pick_conversation(db: Database, key: str = "conv"):
    """Sidebar pickers for a run and one of its conversations (None, with a note, when none).
    A link may name a conversation (`?conversation=ID`): the pickers show it.

    The pickers' values live in the session, and the conversation in the URL: a URL naming a
    conversation this session did not put there (a link followed, a reload, the browser's
    history) sets both pickers; a run picked in the sidebar selects its first conversation. So
    the pickers always name the conversation the page shows."""
    runs, conversations = runs_and_conversations(db)
    if not runs:
        st.info("No runs in this database yet. Start one on the Launch page.")
        return None
    by_id = {c.id: c for c in conversations}
    run_ids = [r.id for r in runs]
    run_key, conv_key, in_url_key = f"{key}-run", f"{key}-conversation", f"{key}-in-url"
    linked = st.query_params.get("conversation")
    if linked in by_id and (conv_key not in st.session_state or linked != st.session_state.get(in_url_key)):
        st.session_state[run_key] = by_id[linked].run_id
        st.session_state[conv_key] = linked
    if st.session_state.get(run_key) not in run_ids:
        st.session_state[run_key] = run_ids[-1]
    describe = {r.id: f"{r.id} · {r.kind} · {r.agent_spec or ''}" for r in runs}
    run_id = st.sidebar.selectbox("Run", run_ids, format_func=lambda r: describe[r], key=run_key)
    in_run = [c.id for c in conversations if c.run_id == run_id]
    if not in_run:
        st.info("This run has no conversations yet.")
        return None
    if st.session_state.get(conv_key) not in in_run:  # another run was picked
        st.session_state[conv_key] = in_run[0]
    conversation_id = st.sidebar.selectbox(
        "Conversation", in_run, key=conv_key,
        format_func=lambda c: f"{by_id[c].scenario_id} · reward {fmt_reward(by_id[c].reward)} · {by_id[c].status}",
    )  # fmt: skip
    if st.query_params.get("conversation") != conversation_id:
        st.query_params["conversation"] = conversation_id
        st.query_params.pop("node", None)
    st.session_state[in_url_key] = conversation_id
    return by_id[conversation_id]


# -- runs being written, stopped, resumed ------------------------------------------------------

LAUNCHED = "launched"  # the rollout this session started (the Launch page follows it)


def start_resume(run_id: str) -> None:
    """`josh rollout --resume RUN` in the background, as the Launch page starts a rollout; the
    Launch page follows it (progress, stop)."""
    import time

    from josh_core.launch import resume_args, start_josh_process

    db_path = Path(database_path()).expanduser()
    args = resume_args(run_id, db_path)
    log_path = db_path.resolve().parent / "logs" / f"rollout-{time.strftime('%Y%m%d-%H%M%S')}-resume.log"
    process = start_josh_process(args, log_path)
    st.session_state[LAUNCHED] = {"pid": process.pid, "log": str(log_path), "process": process, "args": args,
                                  "run": run_id, "stopped": False, "started": time.time()}  # fmt: skip


def _resume_here(run_id: str) -> None:
    launched = st.session_state.get(LAUNCHED)
    if launched and launched["process"].poll() is None:
        st.session_state["josh-resume-refused"] = run_id
        return
    start_resume(run_id)


def resume_offer(run_id: str, key: str) -> None:
    """A stopped run's resume: a button (the Launch page then follows it) and the command."""
    from josh_core.launch import resume_args

    launched = st.session_state.get(LAUNCHED)
    if launched and launched.get("run") == run_id and launched["process"].poll() is None:
        st.info(f"Run {run_id} is being resumed.")
        page_link("app_pages/launch.py", "Follow it on the Launch page")
        return
    cols = st.columns([1, 4])
    cols[0].button("Resume", key=key, on_click=_resume_here, args=(run_id,), type="primary")
    with cols[1]:
        show_command(["josh", *resume_args(run_id, database_path())])
    if st.session_state.get("josh-resume-refused") == run_id:
        st.error("Not resumed: a rollout this session started is still running. Stop it or wait for it first.")


def stopped_runs(db: Database, runs) -> None:
    """Each run left with conversations to play and no process playing it: say so, offer resume."""
    from josh_core.launch import resumable, run_is_played

    for row in runs.itertuples():
        finished = int(known(row.done) or 0)
        total = int(known(row.conversations) or 0)
        if row.status not in ("done",) and finished < total and resumable(
                row.status, total, finished, run_is_played(db.path, row.id)):  # fmt: skip
            st.warning(f"Run {row.id} was stopped ({row.status}) with {finished} of {total} conversations "
                       "finished. Resuming plays the rest (interrupted conversations from their start).")  # fmt: skip
            resume_offer(row.id, key=f"resume-{row.id}")


def conversation_is_played(db: Database, conversation) -> bool:
    """Whether a process is playing the conversation's run now (so its tree may still grow)."""
    from josh_core.launch import run_is_played

    return conversation.status in ("running", "pending", "interrupted") and run_is_played(db.path, conversation.run_id)


def conversation_note(db: Database, conversation, played: bool | None = None) -> bool:
    """Under a conversation's header: a note while it is played, or, when its run was stopped
    before it finished, that it was stopped and a resume. True while it is being played."""
    if conversation.status not in ("running", "pending", "interrupted"):
        return False
    if played if played is not None else conversation_is_played(db, conversation):
        st.caption("This conversation is still being played: the tree below grows as the rollout writes.")
        return True
    word = "was not started" if conversation.status == "pending" else "was stopped before it finished"
    st.warning(f"This conversation {word}: its run {conversation.run_id} was stopped. Resuming the run plays it.")
    resume_offer(conversation.run_id, key=f"resume-conv-{conversation.id}")
    return False


# -- the tree explorer component ---------------------------------------------------------------

_TREE_GRAPH = st.components.v2.component(
    "josh_tree_graph",
    # The side panel is drawn inside the component (its own style scope): it takes the app's
    # styles for the HTML renderings with it.
    css=(ASSETS / "tree_graph.css").read_text() + (ASSETS / "app.css").read_text(),
    js=(ASSETS / "tree_graph.js").read_text(),
)


def tree_graph(tree, stamp: tuple, verdicts: dict | None, pick: dict, key: str) -> str | None:
    """Draw the tree (zoom, pan, click, hover, keyboard) and the selected node's side panel;
    returns the selected node path. `pick` is the node the page chose ({"node", "count",
    "reveal"}): a new count makes the explorer select it, `reveal` brings it into view.

    The component gets its data as UTF-8 JSON bytes, encoded once per state of the tree, the
    verdicts and the pick (cached): a rerun after a click passes the same bytes again, which
    Streamlit forwards without serialising them (and its message cache does not resend)."""
    verdicts = verdicts or {}
    verdicts_key = tuple(sorted((k, v.words) for k, v in verdicts.items()))
    data = _graph(tree.conversation_id, stamp, verdicts_key, tree, verdicts)
    node = pick.get("node") if pick.get("node") in data["paths"] else None
    payload = _payload(tree.conversation_id, stamp, verdicts_key, node, pick.get("count", 0), bool(pick.get("reveal")),
                       data)  # fmt: skip
    result = _TREE_GRAPH(key=key, data=payload, default={"selected": node}, height="content",
                         on_selected_change=lambda: None)  # fmt: skip
    return result.get("selected") if hasattr(result, "get") else getattr(result, "selected", None)


# -- HTML renderings (every value escaped) -----------------------------------------------------


# Markup as data: ["tag.class names", child, ...] (["tag.class", {"title": text}, child, ...]
# for a tooltip), a child being text or markup. One description of a view, two renderers:
# `markup_html` here (every text escaped) and the tree explorer's `markup` (assets/
# tree_graph.js: text nodes only, never innerHTML), so the side panel the browser fills on a
# click is the one drawn here. Compact on purpose: the explorer carries one panel per node.
MARKUP_TAGS = frozenset({"div", "span", "b", "h4"})


def mk(tag: str, *children: Any, title: str | None = None) -> list:
    """One element of markup data: `mk("span.jw-badge jw-goal", "text")`."""
    return [tag, {"title": title}, *children] if title is not None else [tag, *children]


def markup_html(node: Any) -> str:
    if isinstance(node, str):
        return esc(node)
    head, *children = node
    tag, _, classes = head.partition(".")
    if tag not in MARKUP_TAGS:
        raise ValueError(f"markup tag {tag!r} is not allowed")
    attributes = f' class="{esc(classes)}"' if classes else ""
    if children and isinstance(children[0], dict):
        attributes += f' title="{esc(children[0]["title"])}"'
        children = children[1:]
    return f"<{tag}{attributes}>" + "".join(markup_html(child) for child in children) + f"</{tag}>"


def label_badge_markup(label: str) -> list:
    return mk(f"span.jw-badge jw-l-{label}", LABEL_WORDS[label], title=LABEL_HELP[label])


def label_badge(label: str) -> str:
    return markup_html(label_badge_markup(label))


def legend() -> None:
    st.html(" ".join(label_badge(label) for label in LABEL_COLORS))


def _json(value: Any, limit: int = 4000) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=1, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inline_params(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in parameters.items())


def _result_summary(call: CallView) -> str:
    if not call.ok:
        return f"error ({call.error_kind}): {call.error or ''}"
    content = call.content
    if isinstance(content, list):
        return f"{len(content)} row" + ("" if len(content) == 1 else "s")
    if isinstance(content, dict):
        return ", ".join(f"{k}={v}" for k, v in list(content.items())[:4])
    return str(content)


def call_html(call: CallView) -> str:
    name = call.name if call.name is not None else "unreadable call"
    goals = "".join(f'<span class="jw-badge jw-goal">✓ {esc(goal_word(g))}</span>' for g in call.goals)
    params = _inline_params(call.parameters) if call.name is not None else (call.raw or "")
    return (
        f'<div class="jw-call{"" if call.ok else " jw-bad"}"><div class="jw-call-head">'
        f'<span class="jw-muted">API call</span><span class="jw-api">{esc(name)}</span>'
        f'<span class="jw-params">({esc(params)})</span> {goals}</div>'
        f'<details><summary>result: {esc(_result_summary(call)[:160])}</summary>'
        f'<div class="jw-pre">{esc(_json(call.content if call.ok else {"error_kind": call.error_kind, "error": call.error}))}</div>'
        "</details></div>"
    )


def turn_badges(view: TurnView) -> list:
    """The badges of a turn (search label, goals, new root, errors...) as markup data."""
    out = [label_badge_markup(view.label)]
    out += [mk("span.jw-badge jw-goal", f"★ {goal_word(g)}") for g in view.goals_hit]
    out += [mk("span.jw-badge jw-partial", f"partial {goal_word(r.goal_id)}") for r in view.rewards if r.kind == "partial"]
    if view.new_root:
        out.append(mk("span.jw-badge jw-root", "▶ new root"))
    if view.format_errors:
        out.append(mk("span.jw-badge jw-err", f"{view.format_errors} format error(s)"))
    if view.api_errors:
        out.append(mk("span.jw-badge jw-err", f"{view.api_errors} failed call(s)"))
    if view.status == "pruned":
        out.append(mk("span.jw-badge", "pruned"))
    if view.ended:
        out.append(mk("span.jw-badge", "hung up"))
    return out


def _turn_badges(view: TurnView) -> str:
    return " ".join(markup_html(badge) for badge in turn_badges(view))


def turn_html(view: TurnView, selected: bool = False, verdicts=None) -> str:
    who = "User" + (" (opener)" if view.opener else "") if view.kind == "user" else f"Agent turn {view.turn}"
    calls = "".join(call_html(c) for c in view.calls)
    text = f'<div class="jw-bubble">{esc(view.text)}</div>' if view.text else '<div class="jw-bubble jw-empty">(no spoken text)</div>'
    classes = f"jw-turn jw-{view.kind} jw-l-{esc(view.label)}" + (" jw-selected" if selected else "")
    return (
        f'<div class="{classes}" data-path="{esc(view.path)}"><div class="jw-who"><b>{esc(who)}</b>'
        f'<span class="jw-muted">{esc(view.path)}</span> {_turn_badges(view)} {verdict_badge(verdicts)}</div>{calls}{text}</div>'
    )


def conversation_html(views: list[TurnView], selected: str | None = None, verdicts: dict | None = None) -> str:
    if not views:
        return '<div class="jw-muted">No turns.</div>'
    verdicts = verdicts or {}
    return ('<div class="jw-chat">' + "".join(turn_html(v, v.path == selected, verdicts.get(v.node_id)) for v in views)
            + "</div>")  # fmt: skip


def node_cost_text(node) -> str:
    """Time and tokens of one turn (stored with the node; absent for script policies)."""
    parts = []
    if node.seconds is not None:
        parts.append(f"{node.seconds:.2f} s")
    if node.prompt_tokens is not None or node.completion_tokens is not None:
        parts.append(f"{node.prompt_tokens if node.prompt_tokens is not None else '–'} prompt tokens · "
                     f"{node.completion_tokens if node.completion_tokens is not None else '–'} completion tokens")  # fmt: skip
    return " · ".join(parts) if parts else "no time or token counts stored for this turn"


def node_panel(view: TurnView, verdicts=None, cost: str | None = None, name: str | None = None) -> list:
    """The side panel of one node as markup data: what the tree explorer shows on a click."""
    who = "user turn" if view.kind == "user" else f"agent turn {view.turn}"
    head = f"Node {view.path} · {who}"
    badges = turn_badges(view) + ([verdict_markup(verdicts)] if verdicts is not None else [])
    parts: list = [
        "div.jw-panel",
        mk("div.jw-head", name + " ", mk("span.jw-muted", "· " + head)) if name else mk("div.jw-head", head),
        mk("div", *[item for badge in badges for item in (badge, " ")]),
        mk("div.jw-muted", f"step {view.step} · {view.status} · {view.children} children"),
    ]
    if cost is not None:
        parts.append(mk("div.jw-muted jw-cost", f"latency and tokens: {cost}"))
    parts += [mk("h4", "Spoken"), mk("div.jw-bubble", view.text) if view.text else mk("div.jw-muted", "(nothing)")]
    if view.kind == "agent":
        parts.append(mk("h4", f"Generations ({len(view.generations)})"))
        for i, generation in enumerate(view.generations, 1):
            block = mk("div.jw-gen", mk("div.jw-gen-head", mk("b", f"#{i}"), mk("span.jw-badge", generation.action)),
                       mk("div.jw-pre", generation.text))  # fmt: skip
            if generation.format_error:
                block.append(mk("div.jw-badge jw-err", f"format error: {generation.format_error}"))
            parts.append(block)
        parts.append(mk("h4", f"API calls and results ({len(view.calls)})"))
        if not view.calls:
            parts.append(mk("div.jw-muted", "No API calls in this turn."))
        for call in view.calls:
            call_name = call.name if call.name is not None else "unreadable call"
            status = "ok" if call.ok else f"error: {call.error_kind}"
            goals = [mk("span.jw-badge jw-goal", f"✓ {goal_word(g)}") for g in call.goals]
            parts.append(mk(
                "div.jw-call" if call.ok else "div.jw-call jw-bad",
                mk("div.jw-call-head", mk("span.jw-api", call_name), mk("span.jw-badge", status), *goals),
                mk("div.jw-muted", "call"),
                mk("div.jw-pre", _json(call.parameters) if call.name is not None else (call.raw or "")),
                mk("div.jw-muted", "result"),
                mk("div.jw-pre", _json(call.content) if call.ok else (call.error or "")),
            ))  # fmt: skip
        parts.append(mk("h4", "Reward events"))
        for reward in view.rewards:
            kind = "goal reached, new root" if reward.kind == "goal" else "partial credit (no reward)"
            parts.append(mk("div", f"{goal_word(reward.goal_id)}: {kind}, reward {reward.reward:.2f} (step {reward.step})"))
        if not view.rewards:
            parts.append(mk("div.jw-muted", "None."))
        parts.append(mk("div.jw-muted", f"format errors: {view.format_errors} · failed API calls: {view.api_errors}"))
    return parts


def node_panel_html(view: TurnView, verdicts=None, cost: str | None = None, name: str | None = None) -> str:
    return markup_html(node_panel(view, verdicts, cost, name))


def goals_html(rows: list[GoalRow]) -> str:
    if not rows:
        return '<div class="jw-muted">This conversation stores no goal calls.</div>'
    body = []
    for row in rows:
        state = ('<span class="jw-badge jw-ok">✓ hit</span>' if row.reached
                 else '<span class="jw-badge jw-miss">✗ missed</span>')  # fmt: skip
        where = f"node {esc(row.node_path)}" if row.node_path else ""
        if row.partial:
            where += f" · {row.partial} partial"
        body.append(
            f"<tr><td>{state}</td><td>{esc(row.word)}</td>"
            f'<td class="jw-params">{esc(_inline_params(row.parameters))}</td><td class="jw-muted">{where}</td></tr>'
        )
    return ('<table class="jw-goals"><tr><th></th><th>goal call</th><th>parameters</th><th>reached at</th></tr>'
            + "".join(body) + "</table>")  # fmt: skip


# -- cached reads ------------------------------------------------------------------------------


def db_stamp(db: Database) -> tuple[int, int]:
    """Changes whenever the database file or its write-ahead log changes (cache keys)."""
    def mtime(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    return mtime(db.path), mtime(db.wal_path)


def conversations_stamp(db: Database, run_id: str | None = None) -> tuple:
    """Changes when conversations are added, grow or finish (not when annotations are written)."""
    from josh_core.storage import reads

    frame = reads.conversations_frame(db, run_id=run_id)
    return (len(frame), int(frame["node_count"].fillna(0).sum()), int((frame["status"] == "done").sum()))


@st.cache_resource(max_entries=8, show_spinner=False)
def _runs_and_conversations(path: str, stamp: tuple) -> tuple:
    from josh_core.storage import reads

    db = Database(path)
    return reads.list_runs(db), reads.list_conversations(db)


def runs_and_conversations(db: Database) -> tuple[list, list]:
    """Every run and conversation record, read again only when the database file changes (the
    Trees page's pickers and compare view run on every page run; records are shared: read only)."""
    return _runs_and_conversations(str(db.path), db_stamp(db))


@st.cache_resource(max_entries=12, show_spinner=False)
def _tree(path: str, conversation_id: str, stamp: tuple):
    from josh_core.storage import reads

    return reads.load_tree(Database(path), conversation_id)


def load_tree(db: Database, conversation) -> Any:
    """The conversation's tree, read once per state of the conversation (a running one is
    read again as it grows; a finished one comes from the cache)."""
    stamp = (conversation.status, conversation.steps, conversation.node_count)
    return _tree(str(db.path), conversation.id, stamp)


@st.cache_resource(max_entries=12, show_spinner=False)
def _graph(conversation_id: str, stamp: tuple, verdicts_key: tuple, _tree, _verdicts) -> dict:
    """The explorer's data, once per state of the tree and the verdicts on it: the drawing and
    every node's side panel (a click shows it without asking Python)."""
    from josh_core.analysis.transcript import turn_view
    from josh_core.search.labels import compute_labels
    from josh_core.treeviz import graph_data

    labels = compute_labels(_tree)  # the labels follow from the tree: its stamp keys them too
    data = graph_data(_tree, labels, verdicts=_verdicts)
    by_path = {node.path: node for node in _tree.nodes.values()}
    for item in data["nodes"]:
        node = by_path[item["id"]]
        item["panel"] = node_panel(turn_view(_tree, node.id, labels), _verdicts.get(node.id),
                                   cost=node_cost_text(node), name=item["name"])  # fmt: skip
    data["paths"] = frozenset(by_path)  # not sent: which paths `pick` may name
    return data


@st.cache_resource(max_entries=12, show_spinner=False)
def _payload(conversation_id: str, stamp: tuple, verdicts_key: tuple, selected: str | None, pick: int, reveal: bool,
             _data: dict) -> bytes:  # fmt: skip
    sent = {k: v for k, v in _data.items() if k != "paths"}
    return json.dumps({**sent, "selected": selected, "pick": pick, "reveal": reveal}, ensure_ascii=False,
                      separators=(",", ":")).encode()  # fmt: skip


def tree_labels(db: Database, tree) -> dict:
    """The search's labels, as the search made them: people's verdicts never change them (they
    are shown beside, as badges naming the annotators: `tree_verdicts`)."""
    from josh_core.search.labels import compute_labels

    return compute_labels(tree)


def tree_verdicts(db: Database, tree) -> dict:
    """node id -> NodeVerdicts (josh_core.analysis.pairs) for every node someone judged."""
    from josh_core.analysis.pairs import node_verdicts
    from josh_core.storage.annotations import latest_votes

    return node_verdicts(latest_votes(db, [tree.conversation_id]))


VERDICT_TO_USE = {"ideal": "positive", "negative": "negative", "unexplored": "left out"}


def verdict_markup(verdicts) -> list:
    """A person's word on a turn, apart from the search label: who said what, and what export
    makes of it."""
    use = VERDICT_TO_USE.get(verdicts.resolved or "", "no label")
    return mk("span.jw-badge jw-verdict", f"✎ verdict {verdicts.words}", title=f"human verdict (export uses it as {use})")


def verdict_badge(verdicts) -> str:
    return "" if verdicts is None else markup_html(verdict_markup(verdicts))
