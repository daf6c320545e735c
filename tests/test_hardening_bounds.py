"""Issue item 8: bounds. Scenario files must name known domains, APIs and parameters (else a
run could never be won); search sizes, temperature and the other numeric flags are bounded
and a bad value is an error naming its flag; the restricted unpickler cannot be made to
allocate memory out of proportion to its input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from hardening_fixtures import JOSH, invoke, no_traceback, scenario_dicts, simple_scripts, write_json


@pytest.fixture()
def files(tmp_path, toolwoz_data):
    return simple_scripts(tmp_path, scenario_dicts(1))


def _rollout(files, tmp_path, *extra: str, scenario_file=None):
    scenarios, agent, user = files
    return invoke("rollout", "--scenario-file", str(scenario_file or scenarios), "--agent", f"script:{agent}",
                  "--user", f"script:{user}", "--max-turns", "1", "--db", str(tmp_path / "b.duckdb"), *extra)


def _edited(tmp_path, edit) -> object:
    scenario = scenario_dicts(1)[0]
    edit(scenario)
    return write_json(tmp_path / "edited.json", [scenario])


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda s: s["domains"].append("spaceship"), ["spaceship", "domain"]),
        (lambda s: s["goal"].update({"spaceship": {}}), ["spaceship", "domain"]),
        (lambda s: s["goal_calls"].append({"name": "book_spaceship", "parameters": {}}), ["book_spaceship", "API"]),
        (lambda s: s["goal_calls"][0]["parameters"].update({"warp": "9"}), ["warp", "parameter"]),
        (lambda s: s.update({"goal_calls": []}), ["goal call"]),
    ],
    ids=["unknown-domain", "unknown-goal-domain", "unknown-api", "unknown-parameter", "no-goal-calls"],
)
def test_scenario_files_must_be_winnable(edit, words, files, tmp_path):
    from josh_core.envs.toolwoz.scenarios import load_scenario_file

    path = _edited(tmp_path, edit)
    result = _rollout(files, tmp_path, scenario_file=path)
    assert result.exit_code == 1 and no_traceback(result), (result.output, result.exception)
    for word in words:
        assert word in result.output, (word, result.output)
    assert not (tmp_path / "b.duckdb").exists()
    with pytest.raises(ValueError):
        load_scenario_file(path)


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--josh", "--branching", "1000000"], "--branching"),
        (["--max-turns", "100000000"], "--max-turns"),
        (["--max-actions", "100000000"], "--max-actions"),
        (["--concurrency", "100000000"], "--concurrency"),
        (["--temperature", "nan"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--temperature", "-1"], "--temperature"),
        (["--limit", "-1"], "--limit"),
    ],
)
def test_numeric_flags_are_bounded(args, flag, files, tmp_path):
    result = _rollout(files, tmp_path, *args)
    assert result.exit_code in (1, 2) and no_traceback(result), (result.output, result.exception)
    assert flag in result.output
    assert not (tmp_path / "b.duckdb").exists()


def test_a_huge_beam_is_refused_not_played(files, tmp_path):
    """Before the bound this hung, growing without end: run it with a time and memory cap."""
    import resource

    scenarios, agent, user = files

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    try:
        done = subprocess.run(
            [*JOSH, "rollout", "--josh", "--beam", "1000000000", "--branching", "1000000", "--scenario-file",
             str(scenarios), "--agent", f"script:{agent}", "--user", f"script:{user}", "--max-turns", "1",
             "--db", str(tmp_path / "b.duckdb")],
            capture_output=True, text=True, timeout=60, preexec_fn=cap_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("--beam 1e9 --branching 1e6 was still running after 60 s")
    assert done.returncode in (1, 2) and no_traceback(done), done.stderr
    assert "--beam" in done.stderr and "--branching" in done.stderr
    assert not (tmp_path / "b.duckdb").exists()


def test_eval_flags_are_bounded_too(files, tmp_path):
    scenarios, agent, user = files
    for args, flag in ((["--temperature", "nan"], "--temperature"), (["--concurrency", "0"], "--concurrency")):
        result = invoke("eval", "--scenario-file", str(scenarios), "--agent", f"script:{agent}", "--user",
                        f"script:{user}", "--db", str(tmp_path / "e.duckdb"), *args)
        assert result.exit_code in (1, 2) and no_traceback(result), (result.output, result.exception)
        assert flag in result.output


def test_rollout_config_rejects_non_finite_temperature():
    from pydantic import ValidationError

    from josh_core.rollout import RolloutConfig

    for value in (math.nan, math.inf, -0.5):
        with pytest.raises(ValidationError):
            RolloutConfig(temperature=value)


# A few dozen bytes that make an unpickler reserve hundreds of MB: a huge memo index, and a
# call of an allowed builtin with a huge size.
MEMO_BOMB = b"\x80\x04N\x94r\x00\x00\x00\x03."  # LONG_BINPUT 50331648
BYTES_BOMB = b"\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x30\x85R."  # bytes(805306368)
# A tuple nested 34 deep with both halves shared (a few hundred bytes), used as a dict key:
# hashing it walks 2**34 leaves.
NESTED_BOMB = (
    b"\x80\x04K\x01\x940"
    + b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x940" for i in range(34))
    + b"}h" + bytes([34]) + b"K\x01s."
)

MEASURE = textwrap.dedent(
    """
    import sys, time, tracemalloc
    from josh_core.envs.toolwoz.goal_model import goal_model_from_pickle
    raw = bytes.fromhex(sys.argv[1])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        goal_model_from_pickle(raw)
        outcome = "accepted"
    except Exception as error:
        outcome = type(error).__name__
    print(outcome, tracemalloc.get_traced_memory()[1], time.perf_counter() - start)
    """
)


@pytest.mark.parametrize("payload", [MEMO_BOMB, BYTES_BOMB, NESTED_BOMB], ids=["memo", "bytes", "nested"])
def test_the_goal_model_unpickler_is_bounded(payload):
    assert len(payload) < 400
    try:
        done = subprocess.run([sys.executable, "-c", MEASURE, payload.hex()], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("unpickling did not finish in 30 s")
    assert done.returncode == 0, done.stderr
    outcome, peak, seconds = done.stdout.split()
    assert outcome != "accepted"
    assert int(peak) < 16 * 2**20, f"peak {int(peak) / 2**20:.0f} MB"
    assert float(seconds) < 5


def test_the_real_goal_model_still_loads(toolwoz_data):
    from josh_core.envs.toolwoz import store
    from josh_core.envs.toolwoz.build.fetch import GOAL_MODEL_FILE, SDIST_NAME, read_sdist_members
    from josh_core.envs.toolwoz.goal_model import GoalModel, goal_model_from_pickle

    sdist = store.downloads_dir() / SDIST_NAME
    if not sdist.exists():
        pytest.skip("the convlab sdist is not cached")
    model = goal_model_from_pickle(read_sdist_members(sdist)[GOAL_MODEL_FILE])
    cached = GoalModel.model_validate_json((store.multiwoz_dir() / "goal_model.json").read_text())
    assert json.loads(model.model_dump_json()) == json.loads(cached.model_dump_json())
