"""Pair annotator: a queue of every alternative agent turn beside the ideal one (same earlier
turns, same user turn), across conversations. Annotators say good / bad / don't use / skip
(keys G, B, D, S; Left and Right move), comment, and see each other's verdicts and agreement.
Export uses the resolved label (josh_core/storage/annotations.py)."""

from __future__ import annotations

import streamlit as st

from josh_core.analysis.pairs import (
    VERDICT_WORDS, agreement, author_name, pair_queue, progress, turn_text, votes_by_node, word_diff,
)  # fmt: skip
from josh_core.analysis.transcript import path_views, turn_view
from josh_core.storage import reads, writes
from josh_core.storage.annotations import ANONYMOUS, add_verdict, comments
from josh_core.treeviz import LABEL_WORDS
from ui_common import (
    conversation_html, conversations_stamp, esc, load_tree, md, pick_run, require_database, tree_labels, tree_verdicts,
    turn_html, verdict_badge,
)  # fmt: skip

# What export does with a turn of each label, in plain words.
USE_WORDS = {"ideal": "a positive", "negative": "a negative", "partial": "nothing (partial credit)", "unexplored": "nothing"}

st.title("Pair annotator")
db = require_database()
run_id = pick_run(db, key="pairs-run")

# The annotator's name: kept for the session (a plain key: page widgets are dropped when the
# page is left) and in the URL (a link opens the same queue).
if "annotator" not in st.session_state:
    st.session_state["annotator"] = st.query_params.get("annotator", "")
st.session_state["pairs-author"] = st.session_state["annotator"]
author = st.sidebar.text_input(
    "Your name (annotator)", key="pairs-author",
    on_change=lambda: st.session_state.update(annotator=st.session_state["pairs-author"].strip()),
    help="Every verdict and comment is stored under it; several annotators can judge the same pairs.",
).strip()  # fmt: skip
if author:
    st.query_params["annotator"] = author
else:
    st.query_params.pop("annotator", None)
only_todo = st.sidebar.toggle("Only pairs I have not judged", value=False, key="pairs-todo")
hide_identical = st.sidebar.toggle(
    "Hide pairs of identical turns", value=True, key="pairs-identical",
    help="An alternative that says and calls exactly what the ideal turn does: no verdict on it changes an export.",
)  # fmt: skip


@st.cache_data(max_entries=8, show_spinner=False)
def _queue(path: str, run: str | None, stamp: tuple):
    from josh_core.storage.db import Database

    return pair_queue(Database(path), run)


every_item = _queue(str(db.path), run_id, conversations_stamp(db, run_id))
identical = sum(item.identical for item in every_item)
items = [item for item in every_item if not (hide_identical and item.identical)]
with st.expander("Annotation guidelines"):
    st.markdown(
        "Each pair shows, after the same conversation and the same user turn, the turn the search kept "
        "(**ideal**) and one it tried instead (**alternative**). Judge the alternative as a reply to that user "
        "turn, whatever happened later in the tree:\n"
        "- **Good**: it serves the user as well as the ideal turn: the right API with the right parameters, or "
        "a correct question or answer. Export uses it as a positive (SFT leaves it out: SFT trains on the "
        "ideal path only).\n"
        "- **Bad**: it is wrong: a wrong API or parameter, a made-up fact, a needless question, rudeness. "
        "Export uses it as a negative.\n"
        "- **Don't use**: it is neither clearly good nor clearly bad, or broken in a way you would not train "
        "on (truncated, garbled). Export leaves it out.\n"
        "- **Skip**: you cannot tell. It counts as seen and gives no label.\n\n"
        "The colours and the *search label* are the search's own verdict and never change; your verdict "
        "shows as a blue ✎ badge with your name beside it. The diff marks what the alternative removes "
        "(red) and adds (green) against the ideal turn."
    )
if identical:
    st.caption(f"{identical} of {len(every_item)} pairs have identical turns (the alternative repeats the ideal "
               "turn word for word): " + ("hidden, since no verdict on them changes an export." if hide_identical
                                          else "shown, flagged."))  # fmt: skip
if not items:
    if every_item:
        st.info("Every pair here has identical turns: nothing to judge that could change an export.")
    else:
        st.info("No pairs yet: pairs come from finished JOSH trees whose ideal path branched (a user turn "
                "with the ideal agent turn and at least one alternative).")
    st.stop()

votes = votes_by_node(db, items)
mine = progress(items, votes, author or ANONYMOUS)
if only_todo:
    order = [i for i, item in enumerate(items)
             if not any(v.author == (author or ANONYMOUS) for v in votes.get(item.alternative_node_id, []))]  # fmt: skip
else:
    order = list(range(len(items)))

if "pairs-index" not in st.session_state:
    linked = st.query_params.get("pair")
    start = int(linked) - 1 if linked and linked.isdigit() and 0 < int(linked) <= len(items) else None
    st.session_state["pairs-index"] = start if start is not None else (mine.next_pending or 0)
index = min(max(st.session_state["pairs-index"], 0), len(items) - 1)
if order and index not in order:
    index = next((i for i in order if i > index), order[0])
st.session_state["pairs-index"] = index
st.query_params["pair"] = str(index + 1)
item = items[index]

# -- progress ---------------------------------------------------------------------------------
cols = st.columns([2, 2, 3])
cols[0].metric("Pair", f"{index + 1} of {len(items)}")
cols[1].metric(f"Judged by {author_name(author or ANONYMOUS)}", f"{mine.done} of {mine.total}")
agree = agreement(items, votes)
if agree.multi:
    cols[2].metric("Annotators agree", f"{agree.unanimous} of {agree.multi} pairs ({100 * agree.rate:.0f}%)",
                   help="Pairs judged by two annotators or more where all gave the same label (skips left out).")  # fmt: skip
else:
    cols[2].metric("Annotators agree", "–", help="No pair has been judged by two annotators yet.")
st.progress(mine.done / mine.total if mine.total else 0.0,
            text="All pairs judged." if mine.next_pending is None else f"{mine.total - mine.done} to go")  # fmt: skip
if not author:
    st.warning("Enter your name in the sidebar to judge pairs (verdicts are stored per annotator).")

# -- the pair ---------------------------------------------------------------------------------
tree = load_tree(db, reads.get_conversation(db, item.conversation_id))
labels = tree_labels(db, tree)
verdicts = tree_verdicts(db, tree)
here_verdicts = verdicts.get(item.alternative_node_id)
resolved = (here_verdicts.resolved if here_verdicts and here_verdicts.resolved else None) or item.tree_label
st.caption(f"{md(item.scenario_id)} · conversation {md(item.conversation_id)} · after user turn {md(item.user_path)}")

context = path_views(tree, item.user_node_id, labels)
if len(context) > 3:
    with st.expander(f"All {len(context) - 1} earlier turns"):
        st.html(conversation_html(context[:-3], verdicts=verdicts))
st.html(conversation_html(context[-3:], selected=item.user_path, verdicts=verdicts))

left, right = st.columns(2, gap="medium")
with left:
    st.markdown("**Ideal turn** · what the search kept")
    st.html('<div class="jw-chat">' + turn_html(turn_view(tree, item.ideal_node_id, labels)) + "</div>")
with right:
    st.markdown(f"**Alternative** · search label: {LABEL_WORDS[item.tree_label]} · export uses it as "
                f"{USE_WORDS[resolved]}")  # fmt: skip
    st.html('<div class="jw-chat">' + turn_html(turn_view(tree, item.alternative_node_id, labels),
                                                 verdicts=here_verdicts) + "</div>")  # fmt: skip
if item.identical:
    st.warning("The two turns are identical: a verdict on this pair cannot change an export.", icon="⚠️")
else:
    runs = word_diff(turn_text(tree.nodes[item.ideal_node_id]), turn_text(tree.nodes[item.alternative_node_id]))
    tags = {"same": "{}", "del": "<del>{}</del>", "add": "<ins>{}</ins>"}
    with st.expander("What the alternative changes (word diff: ideal → alternative)", expanded=True):
        st.html('<div class="jw-diff">' + "".join(tags[op].format(esc(text)) for op, text in runs) + "</div>")

# -- verdict ----------------------------------------------------------------------------------


def _judge(verdict: str) -> None:
    add_verdict(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id,
                verdict=verdict, author=author)  # fmt: skip
    st.session_state["pairs-flash"] = f"Saved: {VERDICT_WORDS[verdict]} for pair {index + 1}."
    later = [i for i in order if i > index]
    st.session_state["pairs-index"] = later[0] if later else index


def _move(step: int) -> None:
    position = order.index(index) if index in order else 0
    st.session_state["pairs-index"] = order[min(max(position + step, 0), len(order) - 1)]


st.markdown("**Is the alternative as good as the ideal turn?**")
buttons = st.columns([2, 2, 2, 2, 1, 1])
disabled = not author
buttons[0].button("Good", key="v-good", shortcut="G", on_click=_judge, args=("good",),
                  disabled=disabled, width="stretch", help="As good as the ideal turn: trained on as desirable.")  # fmt: skip
buttons[1].button("Bad", key="v-bad", shortcut="B", on_click=_judge, args=("bad",),
                  disabled=disabled, width="stretch", help="Worse than the ideal turn: trained on as undesirable.")  # fmt: skip
buttons[2].button("Don't use", key="v-dont", shortcut="D", on_click=_judge, args=("dont_use",),
                  disabled=disabled, width="stretch", help="Leave this turn out of the training data.")  # fmt: skip
buttons[3].button("Skip", key="v-skip", shortcut="S", on_click=_judge, args=("skip",), disabled=disabled,
                  width="stretch", help="No opinion: counts as seen, gives no label.")  # fmt: skip
buttons[4].button("◀", key="v-prev", shortcut="Left", on_click=_move, args=(-1,), help="Previous pair", width="stretch")
buttons[5].button("▶", key="v-next", shortcut="Right", on_click=_move, args=(1,), help="Next pair", width="stretch")
st.caption("Good: use it as a positive · Bad: use it as a negative · Don't use: leave it out of the data · "
           "Skip: no opinion. Keys G, B, D, S; ← and → move between pairs.")
flash = st.session_state.pop("pairs-flash", None)
if flash:
    st.success(flash)

# -- who said what ------------------------------------------------------------------------------
here = sorted(votes.get(item.alternative_node_id, []), key=lambda v: v.created_at)
notes = [c for c in comments(db, [item.conversation_id]) if c["node_id"] == item.alternative_node_id]
history = [
    f"<tr><td>{esc(author_name(v.author))}</td><td>{esc(VERDICT_WORDS.get(v.verdict or '', v.label or ''))}</td>"
    f"<td>{esc(v.created_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC</td></tr>"
    for v in here
]
cols = st.columns(2, gap="medium")
with cols[0]:
    st.markdown("**Verdicts on this pair** (each annotator's latest)")
    if here_verdicts:
        st.html(verdict_badge(here_verdicts))
    if history:
        st.html('<table class="jw-goals"><tr><th>annotator</th><th>verdict</th><th>when</th></tr>' + "".join(history) + "</table>")
        st.caption(f"Export uses it as {USE_WORDS[resolved]}: the label most annotators gave (a tie goes to the latest).")
    else:
        st.caption(f"No verdict yet: export uses it as {USE_WORDS[item.tree_label]} (the tree's label).")
with cols[1]:
    st.markdown("**Comments**")
    for note in notes:
        st.html(f'<div class="jw-muted"><b>{esc(author_name(note["author"]))}</b> · '
                f'{esc(note["created_at"].strftime("%Y-%m-%d %H:%M:%S"))} UTC</div>'
                f'<div class="jw-bubble">{esc(note["comment"])}</div>')  # fmt: skip
    with st.form(f"comment-{item.alternative_node_id}", clear_on_submit=True, border=False):
        text = st.text_area("Comment", placeholder="Why is this turn good or bad?", height=80)
        if st.form_submit_button("Save comment", disabled=disabled) and text.strip():
            writes.add_annotation(db, node_id=item.alternative_node_id, conversation_id=item.conversation_id,
                                  comment=text.strip(), author=author or None)  # fmt: skip
            st.rerun()

if agree.pairwise:
    with st.expander("Agreement between annotators"):
        st.html(
            '<table class="jw-goals"><tr><th>annotators</th><th>pairs both judged</th><th>same label</th>'
            "<th>Cohen's kappa</th></tr>"
            + "".join(
                f"<tr><td>{esc(author_name(p.first))} · {esc(author_name(p.second))}</td><td>{p.both}</td>"
                f"<td>{p.agree} ({100 * p.agree / p.both:.0f}%)</td>"
                f"<td>{'–' if p.kappa is None else f'{p.kappa:.2f}'}</td></tr>"
                for p in agree.pairwise
            )
            + "</table>"
        )
