"""Script files and comparisons for the rollout tests (ToolWOZ scenarios, script policies)."""

from __future__ import annotations

import json
from pathlib import Path

from engine_fixtures import call, speak
from josh_core.storage import reads
from josh_core.storage.db import Database


def goal_call(scenario, index: int) -> str:
    goal = scenario.goal_calls[index]
    return call(goal.name, **goal.parameters)


def write_scripts(folder: Path, scenarios, chatty_turns: int = 2) -> tuple[Path, Path, Path]:
    """A scenario file, an agent script and a user script.

    The agent chats for `chatty_turns` turns (two alternatives each, so the beam fills up),
    then one alternative per turn makes goal calls of the scenarios: the first scenario's
    goals in two turns, the second's first goal only; the others get nothing. A failed search
    and an unknown API give the trees negative turns with errors.
    """
    first, second = scenarios[0], scenarios[1]
    turns = [[[speak(f"Hello {t}.")], [speak(f"How can I help {t}?")]] for t in range(chatty_turns)]
    turns.append(
        [
            [call("search_restaurant", food="no such food"), speak("Nothing matches.")],
            [goal_call(first, 0), goal_call(second, 0), speak("I found it.")],
        ]
    )
    turns.append(
        [
            [call("find_everything"), speak("Sorry.")],
            [*(goal_call(first, i) for i in range(1, len(first.goal_calls))), speak("Done.")],
        ]
    )
    turns.append([[speak("Anything else?")], [speak("Let me know.")]])
    scenario_file = folder / "scenarios.json"
    scenario_file.write_text(json.dumps([s.model_dump(mode="json") for s in scenarios]))
    agent_file = folder / "agent.json"
    agent_file.write_text(json.dumps({"turns": turns}))
    user_file = folder / "user.json"
    user_file.write_text(json.dumps({"turns": [f"Request number {i}." for i in range(12)]}))
    return scenario_file, agent_file, user_file


CONVERSATION_FIELDS = (
    "position", "scenario_id", "scenario", "status", "stop_reason", "reward", "success", "goals",
    "goals_reached", "score", "system_prompt", "tools", "seed", "steps", "node_count", "error",
)


def run_contents(db_path: Path, run_id: str) -> list[dict]:
    """Everything a run stored, minus timings and with the run id masked."""
    db = Database(db_path)
    conversations = reads.list_conversations(db, run_id=run_id)
    trees = reads.load_trees(db, [c.id for c in conversations])
    contents = []
    for conversation in conversations:
        tree = trees[conversation.id].model_dump(mode="json")
        for node in tree["nodes"].values():
            node.pop("started_at")
            node.pop("seconds")
            for generation in node["generations"]:
                generation.pop("seconds", None)
        record = {field: getattr(conversation, field) for field in CONVERSATION_FIELDS}
        contents.append(json.loads(json.dumps({"conversation": record, "tree": tree}).replace(run_id, "RUN")))
    return contents
