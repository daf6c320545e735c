"""Data preparation: caching, offline errors, --from, the goal model, generation determinism."""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter

import pytest

from josh_core.envs.toolwoz import store
from josh_core.envs.toolwoz.data import DataUnavailableError, load_db, load_goal_model, prepare
from josh_core.envs.toolwoz.env import ToolWOZEnv
from josh_core.envs.toolwoz.build.generate import SynthGenerator
from josh_core.envs.toolwoz.goal_model import goal_model_from_pickle
from josh_core.envs.toolwoz.normalize import normalize_params
from josh_core.envs.toolwoz.scenarios import get_scenario, load_scenario_file, load_split
from josh_core.envs.toolwoz.types import DOMAINS

EXPECTED_COUNTS = {"train": 6251, "val": 793, "test": 805, "official-test": 450}


def test_prepare_is_cached_and_reports_the_split_counts(toolwoz_data):
    assert prepare() == EXPECTED_COUNTS
    assert [len(load_split(split)) for split in EXPECTED_COUNTS] == list(EXPECTED_COUNTS.values())
    assert [s.id for s in load_split("official-test")] == [s.id for s in load_split("test")[:450]]
    assert load_split("train", limit=3)[2].id == "synth-train-0002"


def test_scenario_ids_are_unique_and_resolvable(toolwoz_data):
    ids = [s.id for split in ("train", "val", "test") for s in load_split(split)]
    assert len(ids) == len(set(ids)) == 7849
    assert get_scenario("synth-val-0010").id == "synth-val-0010"
    with pytest.raises(KeyError):
        get_scenario("synth-val-9999")


def test_databases_are_cleaned(toolwoz_data):
    db = load_db()
    assert {d: len(rows) for d, rows in db.items()} == {"restaurant": 110, "hotel": 33, "attraction": 79, "train": 2828}
    for row in db["hotel"]:
        assert "n" not in row and row["takesbookings"] in ("yes", "no")
        assert "price" not in row and "location" not in row
    assert all("location" not in row for d in DOMAINS for row in db[d])


def test_goal_model_element_three_is_the_booking_share(toolwoz_data):
    model = load_goal_model()
    combos = model.combination_distribution(DOMAINS)
    assert abs(sum(combos.values()) - 1.0) < 1e-9
    assert all(set(c) <= set(DOMAINS) and c for c in combos)
    for domain in ("restaurant", "hotel", "train"):
        in_combo = sum(p for combo, p in model.domain_combinations if domain in combo)
        assert abs(model.booking_share[domain] - in_combo * model.book_probability(domain)) < 0.005


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_goal_model_pickle_is_read_with_a_restricted_unpickler():
    with pytest.raises(pickle.UnpicklingError):
        goal_model_from_pickle(pickle.dumps(_Exploit()))
    with pytest.raises(pickle.UnpicklingError):
        goal_model_from_pickle(pickle.dumps((eval, {}, {}, {})))
    ok = pickle.dumps(({"x": {"info": {"a": 0.5}}}, {"x": {"info": {"a": Counter({"v": 1.0})}}}, Counter({("x",): 1.0}), {"x": 0.1}))
    assert goal_model_from_pickle(ok).slot_values == {"x": {"info": {"a": {"v": 1.0}}}}


def test_no_cache_and_no_registry_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JOSH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip may look only at local find-links: no sdist there
    with pytest.raises(DataUnavailableError) as error:
        prepare()
    message = str(error.value)
    assert "convlab-3.0.1.tar.gz" in message and "--from" in message
    with pytest.raises(DataUnavailableError, match="goal_model.pkl"):
        prepare(from_path=tmp_path)  # exists but holds nothing


def _goal_model_pickle() -> bytes:
    """The goal model written back into ConvLab's 4-tuple pickle layout."""
    model = load_goal_model()
    values = {
        d: {i: {s: Counter(dist) for s, dist in slots.items()} for i, slots in intents.items()}
        for d, intents in model.slot_values.items()
    }
    combos = Counter({tuple(c): p for c, p in model.domain_combinations})
    return pickle.dumps((model.slot_inclusion, values, combos, model.booking_share))


def test_prepare_from_loose_files_is_offline_and_deterministic(toolwoz_data, tmp_path, monkeypatch):
    inputs = tmp_path / "multiwoz-checkout" / "db"
    inputs.mkdir(parents=True)
    for domain, rows in load_db().items():
        (inputs / f"{domain}_db.json").write_text(json.dumps(rows))
    (inputs.parent / "goal_model.pkl").write_bytes(_goal_model_pickle())
    cached_test = store.split_path("synth", "test").read_bytes()

    monkeypatch.setenv("JOSH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # prove that nothing is fetched
    assert prepare(from_path=inputs.parent) == EXPECTED_COUNTS
    assert store.split_path("synth", "test").read_bytes() == cached_test
    assert prepare() == EXPECTED_COUNTS  # offline from the new cache


def test_generation_is_deterministic_for_a_seed(toolwoz_db):
    model = load_goal_model()
    again = SynthGenerator(toolwoz_db, model).split("test", 40)
    assert [s.model_dump() for s in again] == [s.model_dump() for s in load_split("test", limit=40)]
    other = SynthGenerator(toolwoz_db, model, seed=1).split("test", 40)
    assert [s.model_dump() for s in other] != [s.model_dump() for s in again]


def test_every_synth_goal_is_achievable(toolwoz_db):
    for split in ("train", "val", "test"):
        for scenario in load_split(split):
            env = ToolWOZEnv(scenario, db=toolwoz_db)
            records = [env.execute_call(call.name, call.parameters) for call in scenario.goal_calls]
            assert env.score(records).reward == 1.0, scenario.id


def test_scenario_shape(toolwoz_db):
    for scenario in load_split("val"):
        assert scenario.source == "toolwoz-synth" and scenario.instructions
        assert list(scenario.goal) == scenario.domains
        names = [c.name for c in scenario.goal_calls]
        for domain in scenario.domains:
            goal = scenario.goal[domain]
            assert goal.book or goal.reqt
            assert f"search_{domain}" in names
            assert (f"book_{domain}" in names) == bool(goal.book)
            assert not set(goal.reqt) & set(goal.info)
            if goal.fail_info:
                assert not toolwoz_db.query(domain, normalize_params(goal.fail_info))
        for call in scenario.goal_calls:
            if call.intent == "book":
                assert call.unique_id and call.returns["reference"]
                assert call.parameters[("trainID" if call.domain == "train" else "name")] == call.unique_id


def test_scenario_files_round_trip(tmp_path, toolwoz_data):
    scenarios = load_split("test", limit=2)
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_text(scenarios[0].model_dump_json())
    many.write_text(json.dumps([s.model_dump() for s in scenarios]))
    assert load_scenario_file(one) == scenarios[0]
    assert load_scenario_file(many) == scenarios
