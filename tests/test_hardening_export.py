"""Issue item 2: `josh export` never destroys its input or an old output.

The output is written to a temporary file beside it and moved into place only when the
export succeeded; an output that is the database itself (or its WAL) is refused before
anything is opened."""

from __future__ import annotations

import os

import pytest

from hardening_fixtures import invoke, no_traceback, stored_run
from josh_core.extract import ExportOptions, export_dataset
from josh_core.storage import reads
from josh_core.storage.db import Database


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, toolwoz_data):
    return stored_run(tmp_path_factory.mktemp("export"))


def _export(db_path, out, *extra):
    return invoke("export", "--db", str(db_path), "--kind", "kto", "--out", str(out), "--all-rewards", *extra)


def test_export_onto_its_own_database_is_refused(run_db, tmp_path):
    db_path, _ = run_db
    before = db_path.read_bytes()
    for out in (db_path, db_path.parent / "." / db_path.name, db_path.with_name(db_path.name + ".wal")):
        result = _export(db_path, out)
        assert result.exit_code == 1 and no_traceback(result), result.output
        assert "database" in result.output
    assert db_path.read_bytes() == before  # not truncated
    assert len(reads.list_runs(Database(db_path))) == 1

    link = tmp_path / "link.jsonl"
    link.symlink_to(db_path)
    result = _export(db_path, link)
    assert result.exit_code == 1 and no_traceback(result)
    assert db_path.read_bytes() == before


def test_a_failed_export_keeps_the_old_output(run_db, tmp_path):
    db_path, _ = run_db
    out = tmp_path / "kto.jsonl"
    out.write_text('{"old": "contents"}\n')  # an earlier export (any other file is refused)
    # KTO has no OpenAI fine-tuning format: the export fails while rows are being written.
    result = _export(db_path, out, "--format", "openai")
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert out.read_text() == '{"old": "contents"}\n'
    assert sorted(os.listdir(tmp_path)) == ["kto.jsonl"]  # no temporary file left behind

    result = _export(db_path, out)
    assert result.exit_code == 0, result.output
    assert out.read_text() != '{"old": "contents"}\n' and out.read_text().count("\n") > 0
    assert sorted(os.listdir(tmp_path)) == ["kto.jsonl"]


def test_export_dataset_refuses_the_database_as_output(run_db):
    db_path, _ = run_db
    before = db_path.read_bytes()
    with pytest.raises(ValueError, match="database"):
        export_dataset(Database(db_path), ExportOptions(kind="sft", min_reward=None), db_path)
    assert db_path.read_bytes() == before
