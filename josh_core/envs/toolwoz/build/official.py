"""Loading the official ToolWOZ scenarios from files a user has (they cannot be fetched here).

Two layouts (see the reference FORMAT notes):
- MultiWOZ 2.x `data.json` (or `delex.json`, same goals) with `testListFile.json` and
  `valListFile.json`: goals and the booked entities in the dialogue metadata give the goal
  calls exactly as the original derived them;
- a precomputed `ground_truth_apis.json` keyed by dialogue id (the original release), with
  the list files beside it when the splits are wanted (without them every scenario is test).

Dialogues with a taxi, police or hospital goal are dropped. Splits: test = sorted surviving
test ids (official-test = its first 450), val = sorted surviving val ids, train = the rest.
Scenario ids are the dialogue ids without ".json".
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from josh_core.envs.toolwoz import scenarios, store
from josh_core.envs.toolwoz.apis import API_PARAMETERS
from josh_core.envs.toolwoz.build.generate import fill_search_returns
from josh_core.envs.toolwoz.build.instructions import write_instructions
from josh_core.envs.toolwoz.data import load_database
from josh_core.envs.toolwoz.db import Database, entity_id_field
from josh_core.envs.toolwoz.normalize import normalize
from josh_core.envs.toolwoz.types import DOMAINS, DomainGoal, GoalCall, Scenario

_DROPPED_DOMAINS = ("taxi", "police", "hospital")
_KEYWORDS = {
    "restaurant": ("restaurant", "place to dine", "places to dine"),
    "hotel": ("hotel", "place to stay", "guesthouse"),
    "attraction": ("attraction", "places to go", "place to go"),
    "train": ("train",),
}
_TAG = re.compile(r"<[^>]+>")


@dataclass
class OfficialData:
    splits: dict[str, list[Scenario]]
    dropped: int = 0  # dialogues left out (taxi/police/hospital, or no usable domain)
    notes: list[str] = field(default_factory=list)


def _dialogue_key(dialogue_id: str) -> str:
    return dialogue_id[:-5] if dialogue_id.endswith(".json") else dialogue_id


def _params(values: dict[str, Any] | None, api: str, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Values of `api`'s parameters that constrain something, as strings."""
    allowed = API_PARAMETERS.get(api, [])
    out = {}
    for key, value in (values or {}).items():
        if key in allowed and key not in drop and not isinstance(value, (list, dict)):
            if normalize(value) is not None:
                out[key] = str(value)
    return out


def _message_sentences(message: Any) -> list[str]:
    if isinstance(message, str):
        message = [message]
    out = []
    for sentence in message or []:
        text = html.unescape(_TAG.sub("", str(sentence))).strip()
        if text:
            out.append(re.sub(r"\s+", " ", text))
    return out


def _domain_order(domains: list[str], sentences: list[str]) -> list[str]:
    def first_mention(domain: str) -> int:
        for i, sentence in enumerate(sentences):
            lowered = sentence.lower()
            if any(word in lowered for word in _KEYWORDS[domain]):
                return i
        return len(sentences)

    return sorted(domains, key=lambda d: (first_mention(d), DOMAINS.index(d)))


def _last_booked(log: list[dict[str, Any]], domain: str) -> dict[str, Any] | None:
    """The last booked entry of `domain` in the latest system turn that has one."""
    for turn in reversed(log):
        booked = ((turn.get("metadata") or {}).get(domain) or {}).get("book", {}).get("booked")
        if booked:
            return booked[-1]
    return None


def scenario_from_multiwoz(dialogue_id: str, dialogue: dict[str, Any], db: Database) -> Scenario | None:
    goal = dialogue.get("goal") or {}
    if any(goal.get(d) for d in _DROPPED_DOMAINS):
        return None
    present = [d for d in DOMAINS if goal.get(d)]
    if not present:
        return None
    sentences = _message_sentences(goal.get("message"))
    domains = _domain_order(present, sentences)
    goals: dict[str, DomainGoal] = {}
    calls: list[GoalCall] = []
    for domain in domains:
        spec = goal[domain]
        search, book_api = f"search_{domain}", f"book_{domain}"
        id_field = entity_id_field(domain)
        goals[domain] = DomainGoal(
            info=_params(spec.get("info"), search),
            fail_info=_params(spec.get("fail_info"), search),
            book=_params(spec.get("book"), book_api, drop=(id_field,)),
            fail_book=_params(spec.get("fail_book"), book_api, drop=(id_field,)),
            reqt=[str(slot) for slot in spec.get("reqt") or []],
        )
        calls.append(GoalCall(name=search, parameters=dict(goals[domain].info)))
        booked = _last_booked(dialogue.get("log") or [], domain) if goals[domain].book else None
        if booked and booked.get(id_field):
            entity = str(booked[id_field])
            row = db.find(domain, entity)
            returns = dict(booked)
            if row is not None:  # fill what the booked entry lacks from the database
                for key, value in db.row(domain, row).items():
                    returns.setdefault(key, value)
            calls.append(
                GoalCall(
                    name=book_api,
                    parameters={**goals[domain].book, id_field: entity},
                    returns=returns,
                    unique_id=entity,
                )
            )
    scenario = Scenario(
        id=_dialogue_key(dialogue_id),
        source="official",
        domains=domains,
        goal=goals,
        instructions=sentences or write_instructions(domains, goals),
        goal_calls=calls,
    )
    fill_search_returns(scenario, db)
    return scenario


def scenario_from_ground_truth(dialogue_id: str, entry: dict[str, Any]) -> Scenario | None:
    domains = [d for d in entry if d in DOMAINS and isinstance(entry[d], dict)]
    if any(d in entry and entry[d] for d in _DROPPED_DOMAINS) or not domains:
        return None
    goals: dict[str, DomainGoal] = {}
    calls: list[GoalCall] = []
    for domain in domains:
        search, book_api = f"search_{domain}", f"book_{domain}"
        id_field = entity_id_field(domain)
        success = entry[domain].get("success") or {}
        failure = entry[domain].get("failure") or {}
        info = _params((success.get(search) or {}).get("parameters"), search)
        book = _params((success.get(book_api) or {}).get("parameters"), book_api, drop=(id_field,))
        goals[domain] = DomainGoal(
            info=info,
            fail_info=_params((failure.get(search) or {}).get("parameters"), search),
            book=book,
            fail_book=_params((failure.get(book_api) or {}).get("parameters"), book_api, drop=(id_field,)),
            reqt=[str(slot) for slot in entry[domain].get("requests") or []],
        )
        if search in success:
            calls.append(GoalCall(name=search, parameters=info, returns=success[search].get("returns")))
        if book_api in success:
            spec = success[book_api]
            params = _params(spec.get("parameters"), book_api)
            unique = spec.get("unique_id") or params.get(id_field)
            calls.append(
                GoalCall(name=book_api, parameters=params, returns=spec.get("returns"), unique_id=unique)
            )
    return Scenario(
        id=_dialogue_key(dialogue_id),
        source="official",
        domains=domains,
        goal=goals,
        instructions=write_instructions(domains, goals),
        goal_calls=calls,
    )


def _read_id_list(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    text = path.read_text().strip()
    if text.startswith("["):
        ids = json.loads(text)
    else:
        ids = text.split()
    return [_dialogue_key(str(i).strip()) for i in ids if str(i).strip()]


def _split(scenarios: dict[str, Scenario], test_ids: list[str] | None, val_ids: list[str] | None) -> dict[str, list[Scenario]]:
    if test_ids is None and val_ids is None:
        return {"train": [], "val": [], "test": [scenarios[k] for k in sorted(scenarios)]}
    test = sorted(k for k in set(test_ids or []) if k in scenarios)
    val = sorted(k for k in set(val_ids or []) if k in scenarios)
    held = set(test) | set(val)
    train = sorted(k for k in scenarios if k not in held)
    return {
        "train": [scenarios[k] for k in train],
        "val": [scenarios[k] for k in val],
        "test": [scenarios[k] for k in test],
    }


def load_multiwoz_dialogues(data: dict[str, Any], db: Database) -> tuple[dict[str, Scenario], int]:
    out, dropped = {}, 0
    for dialogue_id, dialogue in data.items():
        scenario = scenario_from_multiwoz(dialogue_id, dialogue, db)
        if scenario is None:
            dropped += 1
        else:
            out[scenario.id] = scenario
    return out, dropped


def load_ground_truth_apis(data: dict[str, Any]) -> tuple[dict[str, Scenario], int]:
    out, dropped = {}, 0
    for dialogue_id, entry in data.items():
        scenario = scenario_from_ground_truth(dialogue_id, entry)
        if scenario is None:
            dropped += 1
        else:
            out[scenario.id] = scenario
    return out, dropped


def load_official_dir(folder: Path, db: Database | None = None) -> OfficialData:
    """Scenarios and splits from a folder in either official layout."""
    folder = Path(folder).expanduser()
    test_ids = _read_id_list(folder / "testListFile.json")
    val_ids = _read_id_list(folder / "valListFile.json")
    gt_file = folder / "ground_truth_apis.json"
    dialogue_file = next((folder / n for n in ("data.json", "delex.json") if (folder / n).exists()), None)
    notes = []
    if dialogue_file is not None:
        if db is None:
            db = load_database()
        scenarios, dropped = load_multiwoz_dialogues(json.loads(dialogue_file.read_text()), db)
        notes.append(f"read {dialogue_file.name}")
    elif gt_file.exists():
        scenarios, dropped = load_ground_truth_apis(json.loads(gt_file.read_text()))
        notes.append("read ground_truth_apis.json")
    else:
        raise FileNotFoundError(
            f"{folder} holds neither data.json / delex.json (MultiWOZ 2.x) nor ground_truth_apis.json"
        )
    if test_ids is None and val_ids is None:
        notes.append("no testListFile.json / valListFile.json: every scenario is in test")
    return OfficialData(splits=_split(scenarios, test_ids, val_ids), dropped=dropped, notes=notes)


def prepare_official(folder: Path, db: Database | None = None) -> dict[str, int]:
    """Store the official splits under the data dir; returns the split counts."""
    loaded = load_official_dir(folder, db)
    counts = {split: store.write_split("official", split, items) for split, items in loaded.splits.items()}
    store.write_json(
        store.manifest_path("official"),
        {"from": str(Path(folder).resolve()), "counts": counts, "dropped": loaded.dropped, "notes": loaded.notes},
    )
    scenarios.clear_cache()
    return store.split_counts(counts)
