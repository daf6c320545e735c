"""Real `josh export` files for the training tests: small JOSH trees played by script policies
in the toy environment of engine_fixtures (system prompt "SYS", so rows are a few hundred
tokens), stored in DuckDB and exported with the function `josh export` calls."""

from __future__ import annotations

from pathlib import Path

from engine_fixtures import ToyEnv, call, speak, store_conversations, user
from josh_core.extract import ExportOptions, export_dataset
from josh_core.policies.script import ScriptAgent
from josh_core.storage.db import Database

GOALS = [("search_hotel", {"area": "north"}), ("book_hotel", {"name": "x"})]


def hotel_agent(variant: int) -> ScriptAgent:
    """Two goals in three turns; every turn has a good and a bad alternative (JOSH keeps both
    in the tree, so KTO gets undesirable rows and DPO gets pairs)."""
    return ScriptAgent(
        [
            [[speak(f"Hello {variant}, how can I help?")], [speak(f"Hi {variant}.")]],
            [[call("search_hotel", area="south"), speak("One in the south.")],
             [call("search_hotel", area="north"), speak(f"The Acorn {variant} is in the north.")]],
            [[call("book_hotel", name="x"), speak(f"Booked, reference {variant}.")],
             [call("bogus"), speak("Sorry.")]],
        ]
    )


def build_exports(folder: Path) -> dict[str, Path]:
    """A database with three JOSH conversations and its SFT / KTO / DPO exports (TRL format)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = Database(folder / "rollouts.duckdb")
    store_conversations(
        db, [(hotel_agent(i), user(prefix=f"guest {i} says"), ToyEnv(GOALS), None) for i in range(3)]
    )
    paths = {}
    for kind in ("sft", "kto", "dpo"):
        paths[kind] = folder / f"{kind}.jsonl"
        summary = export_dataset(db, ExportOptions(kind=kind, format="trl"), paths[kind])
        assert summary.rows > 0, kind
    return paths
