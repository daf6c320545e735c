from josh_core.envs.toolwoz.normalize import is_subset, normalize, normalize_params, parse_time


def test_normalize_case_apostrophes_and_whitespace():
    assert normalize("King's College") == "kings college"
    assert normalize("  Pizza   Express\tFen Ditton ") == "pizza express fen ditton"
    assert normalize("saint john’s college") == "saint johns college"
    assert normalize("queens' college") == "queens college"
    assert normalize(4) == "4"


def test_values_without_a_constraint_are_ignored():
    for value in ["", "  ", "dontcare", "dont care", "don't care", "Don't Care", "do n't care", "not mentioned", None]:
        assert normalize(value) is None, value
    assert normalize_params({"area": "dontcare", "food": "Thai", "name": ""}) == {"food": "thai"}


def test_short_times_are_padded():
    assert normalize("9:15") == "09:15"
    assert normalize("09:15") == "09:15"
    assert parse_time("9:15") == 9 * 60 + 15
    assert parse_time("21.45") == 21 * 60 + 45
    assert parse_time("noon") is None
    assert parse_time("25:00") is None


def test_subset_rule():
    goal = {"food": "italian", "area": "centre", "name": ""}
    assert is_subset(goal, {"food": "Italian", "area": "centre", "pricerange": "cheap"})
    assert not is_subset(goal, {"food": "italian"})  # area missing
    assert not is_subset(goal, {"food": "italian", "area": "north"})  # wrong value
    assert is_subset({}, {"food": "thai"})
    assert is_subset({"area": "don't care"}, {})  # ignored values constrain nothing
    # a "don't care" in the call does not satisfy a real constraint
    assert not is_subset({"area": "centre"}, {"area": "dontcare"})


def test_apostrophes_compare_equal_on_both_sides():
    assert is_subset({"name": "king's college"}, {"name": "kings college"})
    assert is_subset({"name": "kings college"}, {"name": "King's College"})
