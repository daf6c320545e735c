"""The app frame's helpers: untrusted text stays text in Markdown and HTML, the database check
never lets a folder or a foreign file reach DuckDB as a database."""

from __future__ import annotations

import html

import pytest
from markdown_it import MarkdownIt

import ui_common
from josh_core.analysis.transcript import CallView, TurnView

PAYLOADS = [
    "![](http://127.0.0.1:9/pwn.png)",
    "[click](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "**bold** _it_ `code` # head\n- item",
    ":red[danger] :material/home: $x^2$",
    "&lt;script&gt; \\*",
]


@pytest.mark.parametrize("text", PAYLOADS)
def test_md_keeps_every_character_and_renders_no_markup(text):
    rendered = MarkdownIt("commonmark").renderInline(ui_common.md(text))
    assert "<img" not in rendered and "<a " not in rendered and "<strong" not in rendered
    assert "<code" not in rendered and "<em" not in rendered
    assert html.unescape(rendered) == " ".join(text.split())


def test_html_renderings_escape_model_text():
    call = CallView(name="<b>x</b>", parameters={"q": "<script>"}, ok=False, error_kind="unknown_api", error="<i>no</i>")
    view = TurnView(node_id="c:0.1", path="0.1", kind="agent", label="negative", text='<img src=x onerror="y">',
                    turn=1, step=1, status="alive", calls=[call])  # fmt: skip
    for out in (ui_common.turn_html(view), ui_common.node_panel_html(view), ui_common.call_html(call)):
        assert "<b>x</b>" not in out and "<script>" not in out and "<img src=x" not in out and "<i>no</i>" not in out
        assert "&lt;b&gt;x&lt;/b&gt;" in out


def test_the_side_panel_is_markup_data_of_listed_tags_with_text_left_as_text():
    """The explorer fills the side panel in the browser from this data (text nodes only there);
    here it renders as escaped HTML: the same panel, and no tag outside the list either way."""
    call = CallView(name="<b>x</b>", parameters={"q": "<script>"}, ok=True, content={"r": "<i>"})
    view = TurnView(node_id="c:0.1", path="0.1", kind="agent", label="ideal", text='<img src=x onerror="y">',
                    turn=1, step=1, status="alive", calls=[call])  # fmt: skip
    panel = ui_common.node_panel(view, cost="1.00 s", name="turn 1 · branch 2")

    def tags(node):
        if isinstance(node, str):
            return set()
        found = {node[0].partition(".")[0]}
        for child in node[1:]:
            if not isinstance(child, dict):
                found |= tags(child)
        return found

    assert tags(panel) <= ui_common.MARKUP_TAGS
    out = ui_common.markup_html(panel)
    assert "<img" not in out and "<script>" not in out and "&lt;img src=x onerror=&quot;y&quot;&gt;" in out
    assert 'title="the conversation the search settled on' in out  # the label badge's tooltip
    with pytest.raises(ValueError):
        ui_common.markup_html(["script", "alert(1)"])
    assert ui_common.markup_html(ui_common.mk("span.a", "<b>", title='"t"')) == \
        '<span class="a" title="&quot;t&quot;">&lt;b&gt;</span>'


def test_database_check_names_folders_missing_and_foreign_files(tmp_path):
    assert ui_common.check_database("")[0] == "empty"
    assert ui_common.check_database(str(tmp_path))[0] == "folder"
    assert ui_common.check_database(str(tmp_path / "none.duckdb"))[0] == "missing"
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database")
    state, message = ui_common.check_database(str(text))
    assert state == "invalid" and "notes.duckdb" in message


def test_page_urls_carry_the_database(monkeypatch):
    monkeypatch.setenv("JOSH_DB", "/data/my db.duckdb")
    url = ui_common.page_url("trees", conversation="run-1:0", node=None)
    assert url == "/trees?db=%2Fdata%2Fmy+db.duckdb&conversation=run-1%3A0"
