"""toolwoz-synth follows the MultiWOZ goal statistics (within sampling tolerance)."""

from __future__ import annotations

import pytest

from josh_core.envs.toolwoz.data import load_goal_model
from josh_core.envs.toolwoz.build.generate import FAIL_BOOK_PROBABILITY
from josh_core.envs.toolwoz.scenarios import load_split
from josh_core.envs.toolwoz.stats import compute_stats, expected_stats
from josh_core.envs.toolwoz.types import DOMAINS


@pytest.fixture(scope="module")
def observed(toolwoz_data):
    everything = [s for split in ("train", "val", "test") for s in load_split(split)]
    return compute_stats(everything, "all")


@pytest.fixture(scope="module")
def expected(toolwoz_data):
    return expected_stats(load_goal_model())


def test_domain_combinations_follow_the_goal_model(observed, expected):
    assert set(observed.combinations) == set(expected.combinations)
    assert not any(d in key for key in observed.combinations for d in ("taxi", "police", "hospital"))
    for key, p in expected.combinations.items():
        assert abs(observed.combinations[key] / observed.scenarios - p) < 0.015, key
    single = observed.single_domain / observed.scenarios
    assert abs(single - expected.single_domain_share) < 0.02
    # ToolWOZ (Table 3): 2439 single-domain of 7849
    assert abs(single - 2439 / 7849) < 0.02


def test_slot_inclusion_and_booking_follow_the_goal_model(observed, expected):
    for domain in DOMAINS:
        stats = observed.domains[domain]
        assert abs(stats.book_share - expected.book_share[domain]) < 0.03, domain
        assert abs(stats.name_share - expected.name_share[domain]) < 0.03, domain
        for slot, p in expected.info_inclusion[domain].items():
            assert abs(stats.info_inclusion.get(slot, 0.0) - p) < 0.04, (domain, slot)


def test_fail_info_and_fail_book_shares(observed):
    for domain in ("restaurant", "hotel", "attraction"):
        assert 0.05 < observed.domains[domain].fail_info_share < 0.35, domain
    assert observed.domains["train"].fail_info_share == 0.0
    for domain, p in FAIL_BOOK_PROBABILITY.items():
        assert abs(observed.domains[domain].fail_book_share - p) < 0.04, domain
    assert observed.domains["train"].fail_book_share == 0.0
    assert observed.domains["attraction"].book_share == 0.0


def test_every_split_looks_alike(observed):
    test = compute_stats(load_split("test"), "test")
    for key, count in observed.combinations.items():
        assert abs(test.combinations.get(key, 0) / test.scenarios - count / observed.scenarios) < 0.04, key
    assert abs(test.mean_goals - observed.mean_goals) < 0.15
    assert set(observed.goals_per_scenario) == {"1", "2", "3", "4"}
