"""The official ToolWOZ loader, on tiny fixtures in MultiWOZ 2.x and ground_truth_apis.json form."""

from __future__ import annotations

import json

import pytest

from josh_core.envs.toolwoz.env import ToolWOZEnv
from josh_core.envs.toolwoz.normalize import normalize_params
from josh_core.envs.toolwoz.build.official import load_official_dir, prepare_official
from josh_core.envs.toolwoz.scenarios import get_scenario, load_split

RESTAURANT_INFO = {"food": "italian", "pricerange": "cheap", "area": "centre"}


def _system_turn(booked: dict[str, list[dict]]) -> dict:
    return {
        "text": "Booked.",
        "metadata": {d: {"book": {"booked": entries}, "semi": {}} for d, entries in booked.items()},
    }


def _empty_goal() -> dict:
    return {d: {} for d in ("taxi", "police", "hospital", "hotel", "attraction", "train", "restaurant")}


@pytest.fixture
def multiwoz_dir(tmp_path, toolwoz_db):
    route = {"departure": "cambridge", "destination": "ely", "day": "monday", "leaveAt": "10:00"}
    rows = [toolwoz_db.row("train", i) for i in toolwoz_db.query("train", normalize_params(route))]
    train = min(rows, key=lambda r: r["leaveAt"])
    data = {
        "MUL0001.json": {
            "goal": {
                **_empty_goal(),
                "restaurant": {
                    "info": RESTAURANT_INFO,
                    "fail_info": {},
                    "book": {"time": "18:30", "day": "friday", "people": "3", "invalid": False, "pre_invalid": True},
                    "fail_book": {"day": "thursday"},
                    "reqt": ["phone"],
                },
                "hotel": {"info": {"name": "acorn guest house"}, "book": {"stay": "2", "day": "monday", "people": "2"}, "reqt": []},
                "message": [
                    "You are looking for a <span class='emphasis'>place to stay</span>. Its name is <b>acorn guest house</b>",
                    "You are also looking for a <span class='emphasis'>place to dine</span> that serves italian food",
                    "If the booking fails how about <b>friday</b>",
                ],
            },
            "log": [
                {"text": "I need a place to stay.", "metadata": {}},
                _system_turn({"hotel": [{"name": "acorn guest house", "reference": "HTL00001"}]}),
                {"text": "And a cheap italian place.", "metadata": {}},
                _system_turn({
                    "hotel": [{"name": "acorn guest house", "reference": "HTL00001"}],
                    "restaurant": [{"name": "ask restaurant", "reference": "OLD00000"}, {"name": "zizzi cambridge", "reference": "RST00002"}],
                }),
            ],
        },
        "SNG0002.json": {
            "goal": {**_empty_goal(), "train": {"info": route, "book": {"people": "2"}, "reqt": ["price"]}, "message": ["You need a train"]},
            "log": [{"text": "A train please", "metadata": {}}, _system_turn({"train": [{"trainID": train["trainID"], "reference": "TRN00003"}]})],
        },
        "SNG0003.json": {
            "goal": {
                **_empty_goal(),
                "attraction": {"info": {"type": "museum", "area": "centre"}, "fail_info": {"type": "boat", "area": "north"}, "reqt": ["phone"]},
                "message": "You want to visit a <b>museum</b>",
            },
            "log": [],
        },
        "MUL0004.json": {
            "goal": {**_empty_goal(), "restaurant": {"info": RESTAURANT_INFO}, "taxi": {"info": {"leaveAt": "10:00"}}, "message": []},
            "log": [],
        },
        "PMUL0005.json": {"goal": {**_empty_goal(), "police": {"reqt": ["phone"]}, "message": []}, "log": []},
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "testListFile.json").write_text("MUL0001.json\nSNG0003.json\nMUL0004.json\n")
    (tmp_path / "valListFile.json").write_text("SNG0002.json\n")
    return tmp_path


def test_multiwoz_layout_gives_official_scenarios(multiwoz_dir, toolwoz_db):
    loaded = load_official_dir(multiwoz_dir, db=toolwoz_db)
    assert loaded.dropped == 2  # taxi and police dialogues
    assert {split: [s.id for s in items] for split, items in loaded.splits.items()} == {
        "train": [],
        "val": ["SNG0002"],
        "test": ["MUL0001", "SNG0003"],
    }
    mul = loaded.splits["test"][0]
    assert mul.source == "official" and mul.domains == ["hotel", "restaurant"]
    assert mul.instructions[0] == "You are looking for a place to stay. Its name is acorn guest house"
    assert mul.goal["restaurant"].book == {"time": "18:30", "day": "friday", "people": "3"}  # flags dropped
    assert mul.goal["restaurant"].fail_book == {"day": "thursday"}
    calls = {c.name: c for c in mul.goal_calls}
    assert list(calls) == ["search_hotel", "book_hotel", "search_restaurant", "book_restaurant"]
    book = calls["book_restaurant"]
    assert book.unique_id == "zizzi cambridge"  # the last booked entry of the final turn
    assert book.parameters == {"time": "18:30", "day": "friday", "people": "3", "name": "zizzi cambridge"}
    assert book.returns["reference"] == "RST00002" and book.returns["food"] == "italian"
    assert calls["search_restaurant"].returns[0]["name"] == "zizzi cambridge"
    attraction = loaded.splits["test"][1]
    assert attraction.goal["attraction"].fail_info == {"type": "boat", "area": "north"}

    for scenario in [*loaded.splits["test"], *loaded.splits["val"]]:
        env = ToolWOZEnv(scenario, db=toolwoz_db)
        records = [env.execute_call(c.name, c.parameters) for c in scenario.goal_calls]
        assert env.score(records).reward == 1.0, scenario.id
        assert env.score([]).reward == 0.0


def test_ground_truth_apis_layout(tmp_path, toolwoz_db):
    served = toolwoz_db.row("restaurant", toolwoz_db.find("restaurant", "zizzi cambridge"))
    truth = {
        "MUL0001.json": {
            "restaurant": {
                "success": {
                    "search_restaurant": {"parameters": {**RESTAURANT_INFO, "name": ""}, "returns": [served]},
                    "book_restaurant": {
                        "parameters": {"time": "18:30", "day": "friday", "people": "3", "name": "zizzi cambridge"},
                        "returns": {"name": "zizzi cambridge", "reference": "RST00002"},
                        "unique_id": "zizzi cambridge",
                    },
                },
                "failure": {"search_restaurant": {"parameters": {**RESTAURANT_INFO, "food": "corsican", "name": ""}}},
                "requests": ["phone", "address"],
            }
        },
        "MUL0009.json": {"taxi": {"success": {}, "failure": {}, "requests": []}},
    }
    (tmp_path / "ground_truth_apis.json").write_text(json.dumps(truth))
    loaded = load_official_dir(tmp_path)
    assert loaded.dropped == 1 and [s.id for s in loaded.splits["test"]] == ["MUL0001"]
    scenario = loaded.splits["test"][0]
    assert scenario.goal["restaurant"].info == RESTAURANT_INFO  # empty values dropped
    assert scenario.goal["restaurant"].fail_info["food"] == "corsican"
    assert scenario.goal["restaurant"].reqt == ["phone", "address"]
    assert scenario.instructions  # written from the goal
    env = ToolWOZEnv(scenario, db=toolwoz_db)
    records = [env.execute_call(c.name, c.parameters) for c in scenario.goal_calls]
    assert env.score(records).reward == 1.0
    assert records[1].result.content["return"]["reference"] == "RST00002"


def test_prepare_official_stores_splits(multiwoz_dir, tmp_path, monkeypatch, toolwoz_db):
    monkeypatch.setenv("JOSH_DATA_DIR", str(tmp_path / "data"))
    counts = prepare_official(multiwoz_dir, db=toolwoz_db)
    assert counts == {"train": 0, "val": 1, "test": 2, "official-test": 2}
    assert [s.id for s in load_split("official-test", source="official")] == ["MUL0001", "SNG0003"]
    assert get_scenario("SNG0002").goal["train"].book == {"people": "2"}
    with pytest.raises(FileNotFoundError, match="--official"):
        monkeypatch.setenv("JOSH_DATA_DIR", str(tmp_path / "empty"))
        load_split("test", source="official")
