"""Databases for the app's tests and bench/bench_app.py, made by real rollouts with script
policies on real toolwoz-synth scenarios, through `josh rollout` as a user runs it.

- `base` and `trained`: two JOSH runs over the same two scenarios, so the compare view has a
  pair. The base agent's turns carry untrusted payloads: HTML/script in spoken text, and an
  API name that is a Markdown image (`![](http://127.0.0.1:9/pwn.png)`), which must never
  load. The trained agent makes its goal calls at once.
- `big_tree`: one JOSH conversation with many nodes (a chatty agent that reaches the goals
  late), for the tree explorer's bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine_fixtures import call, speak
from josh_core.storage import reads
from josh_core.storage.db import Database
from rollout_fixtures import goal_call

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"quoted"'
IMAGE_API = "![](http://127.0.0.1:9/pwn.png)"


def _write(folder: Path, name: str, data) -> Path:
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def base_turns(scenario) -> list:
    rest = [goal_call(scenario, i) for i in range(1, len(scenario.goal_calls))]
    return [
        [[speak(PAYLOAD)], [speak("How can I help?")]],
        [[call(IMAGE_API, q="x"), speak("Sorry, that failed.")],
         [goal_call(scenario, 0), speak("I found it.")]],
        [[*rest, speak("All done.")], [speak("Hmm, let me think.")]],
        [[speak("Anything else?")], [speak("Goodbye.")]],
    ]  # fmt: skip


def trained_turns(scenario) -> list:
    calls = [goal_call(scenario, i) for i in range(len(scenario.goal_calls))]
    return [[[*calls, speak("Everything is booked.")], [speak("Let me check.")]],
            [[speak("Anything else?")], [speak("Bye.")]]]  # fmt: skip


def big_turns(scenario, turns: int = 15, goal_turns: tuple[int, ...] = (6, 14)) -> list:
    """Chatty turns (two alternatives each); at each of `goal_turns` the first alternative
    makes the next goal call (the first goals late, the last ones never when they run out)."""
    out = []
    goals = list(range(len(scenario.goal_calls)))
    for t in range(turns):
        first = [speak(f"Turn {t}: could you tell me more about what you need?")]
        second = [call("search_restaurant", food="no such food"), speak(f"Turn {t}: nothing matches.")]
        if t in goal_turns and goals:
            first = [goal_call(scenario, goals.pop(0)), speak(f"Turn {t}: I found one.")]
        out.append([first, second])
    return out


USER_TURNS = ["I need help with a booking.", "Please go ahead.", "Book it please.", "Thanks.",
              "Anything else I should know?", "Great."]  # fmt: skip


def josh_rollout(db: Path, scenario_file: Path, agent: Path, user: Path, *, beam: int, branching: int = 2,
                 max_turns: int) -> str:
    """`josh rollout --josh` with script policies, as a user types it; returns the new run id."""
    before = {r.id for r in reads.list_runs(Database(db))} if db.exists() else set()
    subprocess.run(
        [sys.executable, "-m", "josh_core", "rollout", "--josh", "--scenario-file", str(scenario_file),
         "--agent", f"script:{agent}", "--user", f"script:{user}", "--beam", str(beam),
         "--branching", str(branching), "--max-turns", str(max_turns), "--db", str(db)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [run_id] = [r.id for r in reads.list_runs(Database(db)) if r.id not in before]
    return run_id


def run_scripted(db_path: Path, folder: Path, name: str, scenarios, turns, *, user_turns=None,
                 beam: int = 4, branching: int = 2, max_turns: int = 4) -> str:
    """One JOSH run of the scenarios in folder/scenarios.json with the given agent script."""
    agent = _write(folder, f"{name}-agent.json", {"turns": turns})
    user = _write(folder, f"{name}-user.json", {"turns": user_turns or USER_TURNS})
    return josh_rollout(db_path, folder / "scenarios.json", agent, user, beam=beam, branching=branching,
                        max_turns=max_turns)  # fmt: skip


def make_app_db(folder: Path, with_big_tree: bool = False, big_beam: int = 8) -> Path:
    """`folder/app.duckdb` with the base and trained runs (and the big tree when asked)."""
    from josh_core.envs.toolwoz.scenarios import load_split

    scenarios = load_split("train", 2)
    (folder / "scenarios.json").write_text(json.dumps([s.model_dump(mode="json") for s in scenarios]))
    db = folder / "app.duckdb"
    # One agent script per run serves both scenarios: alternatives make calls of the first
    # scenario, so the second scenario's trees reach fewer goals.
    run_scripted(db, folder, "base", scenarios, base_turns(scenarios[0]))
    run_scripted(db, folder, "trained", scenarios, trained_turns(scenarios[0]))
    if with_big_tree:
        add_big_tree(db, folder, scenarios[0], beam=big_beam)
    return db


def add_big_tree(db: Path, folder: Path, scenario, beam: int = 8, turns: int = 15,
                 goal_turns: tuple[int, ...] = (6, 14)) -> str:
    (folder / "big-scenario.json").write_text(json.dumps([scenario.model_dump(mode="json")]))
    agent = _write(folder, f"big{beam}-agent.json", {"turns": big_turns(scenario, turns, goal_turns)})
    user = _write(folder, f"big{beam}-user.json", {"turns": [f"Request number {i}." for i in range(turns + 2)]})
    return josh_rollout(db, folder / "big-scenario.json", agent, user, beam=beam, max_turns=turns)
