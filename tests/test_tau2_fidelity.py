"""Where our τ² tools knowingly differ from τ²-bench's (docs/environments.md lists each, with
its reason): the booking's payments are checked per payment method before anything is written;
`calculate` takes + - * / only; direct-flight results carry their date; numbers written as text
are taken, badly typed values refused. Each test plays a real task's database.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from josh_core.envs import get_env
from josh_core.envs.tau2_retail.tools import TOOLS as RETAIL_TOOLS
from josh_core.types import ToolCall

# Airline task 8: sophia_silva_7557 books ORD -> PHL for two passengers in economy (348 in all)
# and holds certificate_8045380 (500), certificate_3887113 (150), gift_card_5094406 (274) and
# credit_card_4196779.
USER = "sophia_silva_7557"
CERTIFICATE_500, CERTIFICATE_150 = "certificate_8045380", "certificate_3887113"
GIFT_CARD, CREDIT_CARD = "gift_card_5094406", "credit_card_4196779"


@pytest.fixture(scope="module")
def airline():
    environment = get_env("tau2-airline")
    environment.ensure_prepared()
    env = environment.make_env(environment.get_task("8"))
    booking = next(a for a in env.task.actions if a.name == "book_reservation").arguments
    return env, booking


def _digest(state) -> str:
    return hashlib.sha256(json.dumps(state.get("users", USER), sort_keys=True).encode()).hexdigest()


def _book(airline, payments):
    env, booking = airline
    state = env.initial_state()
    record, after = env.apply(state, ToolCall(name="book_reservation",
                                              parameters={**booking, "payment_methods": payments}))
    return state, record.result, after


def _refused(airline, payments) -> str:
    state, result, after = _book(airline, payments)
    assert (result.ok, result.error_kind) == (False, "tool_error")
    # Nothing written: the state is the one we started from, the user's record as loaded.
    assert after is state and after.get("reservations", "HATHAT") is None
    assert _digest(after) == _digest(airline[0].initial_state())
    return result.error


def test_a_certificate_listed_twice_is_refused_and_nothing_is_written(airline):
    # The case: a 150 certificate listed twice pays 300 (each entry alone fits its balance).
    error = _refused(airline, [{"payment_id": CERTIFICATE_150, "amount": 150},
                               {"payment_id": CERTIFICATE_150, "amount": 150},
                               {"payment_id": CREDIT_CARD, "amount": 48}])
    assert error == f"Certificate {CERTIFICATE_150} is listed twice; a certificate pays once, with one amount"
    # Even when the two entries together fit its balance: a certificate is spent by one payment.
    error = _refused(airline, [{"payment_id": CERTIFICATE_500, "amount": 174},
                               {"payment_id": CERTIFICATE_500, "amount": 174}])
    assert "listed twice" in error


def test_a_gift_card_listed_twice_cannot_pay_more_than_its_balance(airline):
    error = _refused(airline, [{"payment_id": GIFT_CARD, "amount": 174},
                               {"payment_id": GIFT_CARD, "amount": 174}])
    assert error == (f"Not enough balance in payment method {GIFT_CARD}: it is listed more than once for 348 in all, "
                     f"and holds 274")
    # One entry over the balance keeps τ²-bench's own message.
    assert _refused(airline, [{"payment_id": GIFT_CARD, "amount": 300}, {"payment_id": CREDIT_CARD, "amount": 48}]) \
        == f"Not enough balance in payment method {GIFT_CARD}"
    # A negative amount would credit the card (and let another method pay more): refused.
    assert "must not be negative" in _refused(airline, [{"payment_id": GIFT_CARD, "amount": -100},
                                                        {"payment_id": CREDIT_CARD, "amount": 448}])


def test_a_gift_card_listed_twice_within_its_balance_still_pays_as_in_tau2(airline):
    _, result, after = _book(airline, [{"payment_id": GIFT_CARD, "amount": 100},
                                       {"payment_id": GIFT_CARD, "amount": 100},
                                       {"payment_id": CREDIT_CARD, "amount": 148}])
    assert result.ok, result.error
    assert after.get("users", USER)["payment_methods"][GIFT_CARD]["amount"] == 74
    assert len(after.get("reservations", "HATHAT")["payment_history"]) == 3


def test_a_valid_split_books_and_spends_each_method_once(airline):
    state, result, after = _book(airline, [{"payment_id": CERTIFICATE_150, "amount": 150},
                                           {"payment_id": GIFT_CARD, "amount": 150},
                                           {"payment_id": CREDIT_CARD, "amount": 48}])
    assert result.ok, result.error
    methods = after.get("users", USER)["payment_methods"]
    assert CERTIFICATE_150 not in methods and CERTIFICATE_500 in methods  # a certificate is spent whole
    assert methods[GIFT_CARD]["amount"] == 124
    assert after.get("reservations", "HATHAT")["payment_history"] == [
        {"payment_id": CERTIFICATE_150, "amount": 150}, {"payment_id": GIFT_CARD, "amount": 150},
        {"payment_id": CREDIT_CARD, "amount": 48}]
    assert "HATHAT" in after.get("users", USER)["reservations"]
    assert state.get("users", USER)["payment_methods"][GIFT_CARD]["amount"] == 274  # the start is untouched


def test_no_retail_tool_takes_a_list_of_payments():
    # The per-method total matters only where one call names several payments; retail's tools
    # each take one payment_method_id, so no payment method can be listed twice there.
    for tool in RETAIL_TOOLS:
        payment_parameters = [name for name in tool.parameters if "payment" in name]
        assert all(tool.parameters[name]["type"] == "string" for name in payment_parameters), tool.name


def test_calculate_takes_the_four_operators_of_its_description_only(airline):
    env, _ = airline

    def calculate(expression):
        return env.execute(ToolCall(name="calculate", parameters={"expression": expression})).result

    assert calculate("(348 - 150) / 2 * 3 + 1").content == "298.0"
    for expression in ("2 ** 10", "7 // 2"):  # τ²-bench's eval gives 1024.0 and 3.0
        result = calculate(expression)
        assert (result.ok, result.error) == (False, "Invalid expression")


def test_direct_flight_results_carry_their_date(airline):
    env, _ = airline
    found = env.execute(ToolCall(name="search_direct_flight", parameters={
        "origin": "ORD", "destination": "PHL", "date": "2024-05-26"})).result.content
    assert found and {flight["date"] for flight in found} == {"2024-05-26"}
    assert "HAT271" in {flight["flight_number"] for flight in found}


def test_numbers_as_text_are_taken_and_badly_typed_values_refused(airline):
    env, booking = airline

    def book(**changes):
        return env.execute(ToolCall(name="book_reservation", parameters={**booking, **changes})).result

    taken = book(nonfree_baggages="0", total_baggages=0.0)
    assert taken.ok and (taken.content["nonfree_baggages"], taken.content["total_baggages"]) == (0, 0)
    assert book(total_baggages=2.5).error_kind == "invalid_value"
    assert book(passengers="x").error == "passengers must be a list, not text"
    retail = get_env("tau2-retail")
    retail.ensure_prepared()
    retail_env = retail.make_env(retail.get_task("34"))
    # An item id written as a number is the same id as text.
    details = retail_env.execute(ToolCall(name="get_product_details",
                                          parameters={"product_id": 9523456873})).result
    assert details.ok and details.content["product_id"] == "9523456873"
