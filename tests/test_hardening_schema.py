"""Issue item 5: read commands never write, and the schema version is guarded.

`josh export`, `josh metrics`, `josh errors` and `josh leaderboard` open the database
read-only: they neither create the schema in a DuckDB file that is not a JOSH database nor
migrate an older JOSH database. A database written by a newer schema version than the code
knows is refused by every command with a clear message (nothing read, nothing written); one
at or below the code's version is read as it is, and migrated when opened for writing."""

from __future__ import annotations

import duckdb
import pytest

from hardening_fixtures import foreign_duckdb, invoke, no_traceback, stored_run, tables_of
from josh_core.storage import reads, writes
from josh_core.storage.db import Database
from josh_core.storage.schema import LATEST_VERSION, MIGRATIONS

READ_COMMANDS = (
    ("metrics",),
    ("errors",),
    ("leaderboard",),
    ("export", "--kind", "sft", "--all-rewards", "--out", "OUT"),
)


def _read_command(command: tuple[str, ...], db_path, tmp_path) -> list[str]:
    args = [a if a != "OUT" else str(tmp_path / "out.jsonl") for a in command]
    return [args[0], "--db", str(db_path), *args[1:]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_read_commands_do_not_create_the_schema_in_a_foreign_duckdb_file(command, tmp_path):
    path = foreign_duckdb(tmp_path / "theirs.duckdb")
    result = invoke(*_read_command(command, path, tmp_path))
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert "not a JOSH database" in result.output
    assert tables_of(path) == ["measurements"]
    assert not (tmp_path / "out.jsonl").exists()


def _downgrade(path, version: int) -> None:
    """Rewrite a latest-version database as one at `version`: the schema of the first
    `version` migrations, holding the same rows (in the columns that schema has)."""
    from josh_core.storage.schema import migrate

    old = path.with_name("old-" + path.name)
    con = duckdb.connect(str(old))
    try:
        migrate(con, MIGRATIONS[:version])
        con.execute(f"ATTACH '{path}' AS full_db (READ_ONLY)")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_name <> 'schema_migrations'").fetchall()]
        for table in tables:
            columns = ", ".join(r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
                "AND table_name = ? ORDER BY ordinal_position", [table]).fetchall())
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM full_db.{table}")
        con.execute("DETACH full_db")
    finally:
        con.close()
    old.replace(path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def _version(path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    finally:
        con.close()


@pytest.fixture()
def run_db(tmp_path, toolwoz_data):
    return stored_run(tmp_path)


def test_read_commands_do_not_migrate_an_older_database(run_db, tmp_path):
    db_path, run_id = run_db
    _downgrade(db_path, 2)
    before_tables = tables_of(db_path)
    for command in READ_COMMANDS:
        result = invoke(*_read_command(command, db_path, tmp_path))
        assert result.exit_code == 0, (command, result.output, result.exception)
    assert _version(db_path) == 2 and tables_of(db_path) == before_tables
    # Opening it for writing migrates it.
    writes.set_run_status(Database(db_path), run_id, "done")
    assert _version(db_path) == LATEST_VERSION


def test_a_newer_schema_is_refused_everywhere(run_db, tmp_path):
    db_path, run_id = run_db
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', now())", [LATEST_VERSION + 1])
    con.close()
    before = db_path.read_bytes()

    for command in READ_COMMANDS:
        result = invoke(*_read_command(command, db_path, tmp_path))
        assert result.exit_code == 1 and no_traceback(result), (command, result.output)
        assert f"schema version {LATEST_VERSION + 1}" in result.output and "newer" in result.output
    scenario_file = tmp_path / "s.json"
    scenario_file.write_text("[]")
    resumed = invoke("rollout", "--resume", run_id, "--db", str(db_path))
    assert resumed.exit_code == 1 and no_traceback(resumed), resumed.output
    assert "newer" in resumed.output

    from josh_core.storage.db import SchemaTooNew

    with pytest.raises(SchemaTooNew, match=f"{LATEST_VERSION + 1}"):
        reads.list_runs(Database(db_path))
    with pytest.raises(SchemaTooNew):
        writes.set_run_status(Database(db_path), run_id, "done")
    assert db_path.read_bytes() == before


def test_the_guard_reads_the_latest_version_from_the_migrations(tmp_path):
    from josh_core.storage.db import NotAJoshDatabase

    assert LATEST_VERSION == MIGRATIONS[-1].version
    db = Database(tmp_path / "new.duckdb")
    assert db.ensure_schema() == LATEST_VERSION
    with pytest.raises(NotAJoshDatabase):
        reads.list_runs(Database(foreign_duckdb(tmp_path / "f.duckdb"), read_only=True))
    with pytest.raises(NotAJoshDatabase):  # writing does not take over someone else's file either
        writes.create_run(Database(tmp_path / "f.duckdb"), kind="plain", config={}, scenarios=[])
    assert tables_of(tmp_path / "f.duckdb") == ["measurements"]
