"""Reliability, second pass (issue 26): exports never replace what is not JSONL, untrusted text
never ends a tree, a dead endpoint or a full disk stops a run clearly and resumably, a closed
Ray address is an error, a damaged database is a one-line error, echoed keys are not stored."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time

import pytest

from engine_fixtures import call, speak
from hardening_fixtures import foreign_duckdb, invoke, josh, no_traceback, scenario_dicts, simple_scripts, stored_run
from reliability_fixtures import FakeChatServer, free_port, refused_url
from josh_core.envs.toolwoz.types import Scenario
from josh_core.rollout import RolloutConfig, resume_run, start_run
from josh_core.storage import reads
from josh_core.storage.db import Database

SECRET = "sk-reliability-0123456789abcdef"


def _scenarios(n: int) -> list[Scenario]:
    return [Scenario.model_validate(s) for s in scenario_dicts(n)]


def _stored_text(db_path, run_id: str) -> str:
    """Everything a run stored about its conversations and trees, as one text."""
    db = Database(db_path)
    conversations = reads.list_conversations(db, run_id=run_id)
    trees = reads.load_trees(db, [c.id for c in conversations if c.status == "done"])
    parts = [json.dumps([c.model_dump(mode="json") for c in conversations], ensure_ascii=False)]
    parts += [tree.model_dump_json() for tree in trees.values()]
    return "\n".join(parts)


# -- item 1: export never overwrites a database or any other non-JSONL file ------------------


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, toolwoz_data):
    return stored_run(tmp_path_factory.mktemp("reliability-export"))


def _export(db_path, out, *extra):
    return invoke("export", "--db", str(db_path), "--kind", "sft", "--out", str(out), "--all-rewards", *extra)


def test_export_refuses_an_existing_database_or_other_non_jsonl_output(run_db, tmp_path):
    db_path, _ = run_db
    other = tmp_path / "b.duckdb"
    shutil.copy(db_path, other)  # another JOSH database
    foreign = foreign_duckdb(tmp_path / "foreign.jsonl")  # a DuckDB file named like JSONL
    lite = tmp_path / "lite.jsonl"
    sqlite3.connect(lite).execute("CREATE TABLE t (x)").connection.commit()
    notes = tmp_path / "notes.jsonl"
    notes.write_text("Meeting notes: keep these.\n")
    array = tmp_path / "array.jsonl"
    array.write_text("[1, 2, 3]\n")
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(b"{\x00\x01\x02")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"a": "café"}\n'.encode("latin-1"))
    for out in (other, foreign, lite, notes, array, binary, latin):
        before = out.read_bytes()
        result = _export(db_path, out)
        assert result.exit_code == 1 and no_traceback(result), (out, result.output)
        assert "--out" in result.output and "not a JSONL export" in result.output, result.output
        assert out.read_bytes() == before, out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files
    assert len(reads.list_runs(Database(other))) == 1


def test_export_replaces_an_old_jsonl_export_or_an_empty_file(run_db, tmp_path):
    db_path, _ = run_db
    old = tmp_path / "old.jsonl"
    old.write_text('{"messages": []}\n')
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    for out in (old, empty):
        result = _export(db_path, out)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows and all("messages" in row for row in rows)


# -- item 3: a lone surrogate in model output never ends a tree -------------------------------


def test_a_lone_surrogate_in_an_action_does_not_fail_the_tree(tmp_path, toolwoz_data):
    scenarios = _scenarios(1)
    goal = scenarios[0].goal_calls[0]
    # A JSON escape of a lone surrogate in the APICALL (as a model may write it).
    bad_call = call(goal.name, **{**goal.parameters, "note": "xHEREy"}).replace("HERE", "\\ud800")
    assert "\\ud800" in bad_call
    agent = tmp_path / "agent.json"
    agent.write_text(json.dumps({"turns": [
        [[bad_call, speak("Done \ud800 here.")], [call(goal.name, **goal.parameters), speak("Done.")]],
        [[speak("Anything else?")]],
    ]}))  # fmt: skip
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"turns": ["Hello, I need help.", "Thanks, that is all."]}))
    config = RolloutConfig(josh=True, agent=f"script:{agent}", user=f"script:{user}", max_turns=2, beam=4)
    result = start_run(tmp_path / "s.duckdb", scenarios, config)
    (conversation,) = result.conversations
    assert conversation.status == "done", conversation.error
    stored = _stored_text(tmp_path / "s.duckdb", result.run_id)
    assert "x\ufffdy" in stored and "Done \ufffd here." in stored  # kept, the surrogate replaced
    assert "Done." in stored  # the good sibling too
    out = tmp_path / "kto.jsonl"
    exported = invoke("export", "--db", str(tmp_path / "s.duckdb"), "--kind", "kto", "--out", str(out),
                      "--all-rewards", "--keep-errors")
    assert exported.exit_code == 0, exported.output
    out.read_text(encoding="utf-8")  # valid UTF-8 throughout


# -- items 3 and 14: what an OpenAI-compatible server answers is made safe before it is kept ----


def test_a_server_echoing_the_key_or_a_lone_surrogate_is_stored_safely(tmp_path, monkeypatch, toolwoz_data):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    scenarios = _scenarios(2)
    _, _, user = simple_scripts(tmp_path, [s.model_dump(mode="json") for s in scenarios])
    for name, server in (
        ("echo", FakeChatServer(reply=lambda headers: f"Your key is {headers.get('Authorization')} ok")),
        ("surrogate", FakeChatServer(raw_content='"PLAN say hi <COMMAND_END> SPEAK hi \\ud800 there <COMMAND_END>"')),
    ):
        with server:
            config = RolloutConfig(josh=True, agent="openai:m", base_url=server.base_url, user=f"script:{user}",
                                   max_turns=1, beam=2)
            db_path = tmp_path / f"{name}.duckdb"
            result = start_run(db_path, scenarios, config)
        assert [c.status for c in result.conversations] == ["done", "done"], [c.error for c in result.conversations]
        stored = _stored_text(db_path, result.run_id)
        assert SECRET not in stored
        if name == "echo":
            assert "Your key is Bearer ***" in stored
        else:
            assert "hi \ufffd there" in stored
        out = tmp_path / f"{name}.jsonl"
        exported = invoke("export", "--db", str(db_path), "--kind", "kto", "--out", str(out), "--all-rewards",
                          "--keep-errors")
        assert exported.exit_code == 0 and SECRET not in out.read_text(encoding="utf-8")


def test_the_backend_masks_its_own_key_even_when_no_pattern_matches(monkeypatch):
    import asyncio

    from josh_core.llm.base import ChatRequest
    from josh_core.llm.openai_backend import OpenAIBackend
    from josh_core.types import Message

    key = "plainkey-no-known-shape-42"
    with FakeChatServer(reply=lambda headers: "echo " + headers.get("Authorization", "").split()[-1]) as server:
        backend = OpenAIBackend("m", base_url=server.base_url, api_key=key)
        response = asyncio.run(backend.chat(ChatRequest(messages=[Message(role="user", content="hi")])))
    assert response.choices[0].text == "echo ***"


# -- item 6: a dead endpoint costs bounded time and stops the run -----------------------------


@pytest.fixture
def fast_endpoint_limits(monkeypatch):
    monkeypatch.setenv("JOSH_LLM_TIMEOUT", "0.5")
    monkeypatch.setenv("JOSH_LLM_CALL_TIMEOUT", "2")
    monkeypatch.setenv("JOSH_MAX_CONNECTION_FAILURES", "2")


@pytest.mark.parametrize("kind", ["hangs", "refuses"])
def test_a_dead_endpoint_stops_the_run_in_bounded_time(kind, tmp_path, fast_endpoint_limits, toolwoz_data):
    from josh_core.policies.script import ScriptAgent, ScriptUser

    scenarios = _scenarios(4)
    _, agent_file, user_file = simple_scripts(tmp_path, [s.model_dump(mode="json") for s in scenarios])
    db_path = tmp_path / f"{kind}.duckdb"
    server = FakeChatServer(mode="hang") if kind == "hangs" else None
    url = server.base_url if server else refused_url()
    config = RolloutConfig(agent="openai:m", base_url=url, user=f"script:{user_file}", max_turns=2)
    start = time.monotonic()
    if server:
        with server:
            result = start_run(db_path, scenarios, config)
    else:
        result = start_run(db_path, scenarios, config)
    seconds = time.monotonic() - start
    # Before: 120 s x 6 attempts per conversation (hang), ~25 s per conversation (refused),
    # and every conversation tried on its own. Now: one call's budget, then one try each.
    assert seconds < 12, seconds
    if server:
        assert server.requests <= 6, server.requests  # the first call's retries, then one try
    db = Database(db_path)
    statuses = [c.status for c in reads.list_conversations(db, run_id=result.run_id)]
    assert statuses == ["failed", "failed", "pending", "pending"]
    assert result.stopped and "2 conversations in a row" in result.stopped
    assert reads.get_run(db, result.run_id).status == "stopped"
    errors = [c.error for c in reads.list_conversations(db, run_id=result.run_id)[:2]]
    assert "EndpointUnreachable" in errors[0] and "within 2 s" in errors[0], errors[0]
    assert "not retried" in errors[1]  # the endpoint was known to be down: one try
    # The endpoint is back (here: a script agent): the run resumes where it stopped.
    resumed = resume_run(db_path, result.run_id, agent=ScriptAgent.from_file(agent_file),
                         user=ScriptUser.from_file(user_file))
    assert [c.status for c in resumed.conversations] == ["done"] * 4


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_dead_endpoint_ends_the_rollout_command_with_a_resume_hint(tmp_path, toolwoz_data):
    scenario_file, _, user = simple_scripts(tmp_path, scenario_dicts(3))
    db_path = tmp_path / "cli.duckdb"
    env = {"JOSH_LLM_CALL_TIMEOUT": "1", "JOSH_MAX_CONNECTION_FAILURES": "2"}
    start = time.monotonic()
    done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", "openai:m", "--base-url", refused_url(),
                "--user", f"script:{user}", "--max-turns", "1", "--db", str(db_path), env=env, timeout=120)
    assert done.returncode == 1 and no_traceback(done), done.stdout + done.stderr
    assert "stopped" in done.stderr and "--resume" in done.stderr
    assert time.monotonic() - start < 60


def test_the_backend_bounds_one_call_and_tries_a_down_endpoint_once(monkeypatch):
    import asyncio

    from josh_core.llm.base import ChatRequest
    from josh_core.llm.openai_backend import EndpointUnreachable, OpenAIBackend
    from josh_core.types import Message

    request = ChatRequest(messages=[Message(role="user", content="hi")])

    async def main(server: FakeChatServer) -> None:
        backend = OpenAIBackend("m", base_url=server.base_url, api_key="k", timeout_s=0.3, call_timeout_s=1.0,
                                backoff_s=0.05)
        start = time.monotonic()
        with pytest.raises(EndpointUnreachable, match="no answer within 1 s"):
            await backend.chat(request)
        assert time.monotonic() - start < 2.5 and backend.endpoint_down
        sent = server.requests
        with pytest.raises(EndpointUnreachable, match="not retried"):
            await backend.chat(request)
        assert server.requests == sent + 1
        server.mode = "answer"  # it is back: the next call is answered and the backend trusts it again
        assert (await backend.chat(request)).choices[0].text == "Hello."
        assert not backend.endpoint_down
        await backend.aclose()

    with FakeChatServer(mode="hang") as server:
        asyncio.run(main(server))


# -- item 7: a closed Ray address is a bounded, plain error -----------------------------------


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_closed_ray_address_is_a_plain_error(tmp_path, toolwoz_data):
    from josh_core.distributed import RayUnavailable
    from josh_core.distributed.ray_rollout import check_reachable

    port = free_port()
    start = time.monotonic()
    with pytest.raises(RayUnavailable, match="cannot reach the cluster head"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(RayUnavailable, match="HOST:PORT"):
        check_reachable("127.0.0.1:notaport")
    check_reachable("auto")  # left to Ray
    scenario_file, agent, user = simple_scripts(tmp_path, scenario_dicts(1))
    done = josh("rollout", "--scenario-file", str(scenario_file), "--agent", f"script:{agent}", "--user",
                f"script:{user}", "--ray", f"127.0.0.1:{port}", "--db", str(tmp_path / "r.duckdb"), timeout=120)
    assert done.returncode == 1 and no_traceback(done), done.stdout + done.stderr
    assert f"--ray 127.0.0.1:{port}: cannot reach the cluster head" in done.stderr
    assert time.monotonic() - start < 60


# -- item 9: a full disk stops the run clearly, and it resumes ---------------------------------


def test_a_full_disk_stops_the_run_and_it_resumes(tmp_path, monkeypatch, toolwoz_data):
    from josh_core.storage import writes

    scenarios = _scenarios(4)
    _, agent_file, user_file = simple_scripts(tmp_path, [s.model_dump(mode="json") for s in scenarios])
    config = RolloutConfig(josh=True, agent=f"script:{agent_file}", user=f"script:{user_file}", max_turns=2)
    real_insert = writes.insert_rows

    def disk_full_for_the_second(con, table, columns, rows, *args):
        # The storage write of the second conversation's nodes meets a full disk.
        if table == "nodes" and any(str(row[1]).endswith(":1") for row in rows):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_insert(con, table, columns, rows, *args)

    monkeypatch.setattr(writes, "insert_rows", disk_full_for_the_second)
    db_path = tmp_path / "full.duckdb"
    result = start_run(db_path, scenarios, config)
    assert result.stopped and "the disk is full" in result.stopped and "resume" in result.stopped
    assert [c.status for c in result.conversations] == ["done", "stopped"]
    db = Database(db_path)
    stored = reads.list_conversations(db, run_id=result.run_id)
    # Not recorded as failed (it was not the conversation's fault); the others never started.
    assert [c.status for c in stored] == ["done", "running", "pending", "pending"]
    assert stored[1].error is None
    assert reads.get_run(db, result.run_id).status == "stopped"

    monkeypatch.setattr(writes, "insert_rows", real_insert)  # space was freed
    resumed = resume_run(db_path, result.run_id)
    assert [c.status for c in resumed.conversations] == ["done"] * 3 and resumed.skipped == 1
    assert reads.get_run(db, result.run_id).status == "done"


@pytest.mark.slow  # plays rollouts in a josh subprocess
def test_a_full_disk_ends_the_rollout_command_plainly(tmp_path, toolwoz_data):
    # The same, through the command: the injection lives in a sitecustomize of this test.
    scenario_file, agent, user = simple_scripts(tmp_path, scenario_dicts(3))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno\n"
        "from josh_core.storage import writes\n"
        "_real = writes.insert_rows\n"
        "def _full(con, table, columns, rows, *args):\n"
        "    if table == 'nodes' and any(str(row[1]).endswith(':1') for row in rows):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return _real(con, table, columns, rows, *args)\n"
        "writes.insert_rows = _full\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    db_path = tmp_path / "cli.duckdb"
    done = josh("rollout", "--josh", "--scenario-file", str(scenario_file), "--agent", f"script:{agent}",
                "--user", f"script:{user}", "--max-turns", "2", "--db", str(db_path), env=env, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and no_traceback(done), output
    assert "the disk is full" in done.stderr and f"--resume" in done.stderr
    assert "Unique file handle" not in output and "FAILED" not in output
    assert "NOT FINISHED" in done.stdout


# -- item 12: a damaged database is a one-line error; bootstrap sizes are bounded ---------------


def test_a_truncated_database_is_a_one_line_error(run_db, tmp_path):
    db_path, run_id = run_db
    truncated = tmp_path / "truncated.duckdb"
    data = db_path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    scenario_file, agent, user = simple_scripts(tmp_path, scenario_dicts(1))
    for args in (
        ("metrics", "--db", str(truncated)),
        ("errors", "--db", str(truncated)),
        ("export", "--db", str(truncated), "--kind", "sft", "--out", str(tmp_path / "o.jsonl")),
        ("rollout", "--resume", run_id, "--db", str(truncated)),
        ("rollout", "--scenario-file", str(scenario_file), "--agent", f"script:{agent}", "--user",
         f"script:{user}", "--db", str(truncated)),
    ):
        result = invoke(*args)
        assert result.exit_code == 1 and no_traceback(result), (args, result.output, result.exception)
        assert "damaged or truncated" in result.output and str(truncated.name) in result.output, result.output
        assert not (tmp_path / "o.jsonl").exists()


def test_bootstrap_resamples_are_bounded_up_front(run_db):
    db_path, _ = run_db
    for value in ("1000000000000", "0"):
        result = invoke("metrics", "--db", str(db_path), "--resamples", value)
        assert result.exit_code == 2 and no_traceback(result) and "--resamples" in result.output, result.output
    result = invoke("metrics", "--db", str(db_path), "--bootstrap-sizes", "1000000000")
    assert result.exit_code == 1 and no_traceback(result) and "--bootstrap-sizes" in result.output, result.output


# -- item 15: SIGTERM to `josh ui` leaves no server behind ------------------------------------


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sigterm_to_josh_ui_stops_the_streamlit_server(tmp_path):
    import signal
    import subprocess

    from hardening_fixtures import JOSH, default_signals

    port = free_port()
    process = subprocess.Popen([*JOSH, "ui", "--db", str(tmp_path / "ui.duckdb"), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 90
        while not _port_open(port):
            assert process.poll() is None, "josh ui ended before its server listened"
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 15
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(port), "the Streamlit server outlived josh ui"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
