"""The τ²-bench airline tools (our own code, after the benchmark's semantics).

Tables: `flights` (flight_number -> {origin, destination, scheduled times, dates: {date ->
{status, available_seats, prices, ...}}}), `users` (user_id -> {name, address, email, dob,
payment_methods, saved_passengers, membership, reservations}), `reservations`
(reservation_id -> {user_id, origin, destination, flight_type, cabin, flights, passengers,
payment_history, created_at, total_baggages, nonfree_baggages, insurance[, status]}).

As in τ²-bench: the clock is 2024-05-15 15:00 EST; new reservations get the ids HATHAT,
HATHAU, HATHAV and new certificates certificate_3221322..4 (at most three per task);
cancelling a reservation or changing its flights does not change the flights' seat counts.
Differences (all listed, with reasons, in docs/environments.md): a one-stop search looks for
the second leg on the next calendar day when the first arrives after midnight (the benchmark's
string arithmetic misses single-digit days); `book_reservation` sums a booking's payments per
method before it writes anything, so no gift card or certificate pays more than it holds
(`_check_payments`); direct-flight results carry their `date`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from josh_core.envs.tau2.state import Transaction
from josh_core.envs.tau2.tools import (
    Calculate, Tool, ToolError, TransferToHumanAgents, array, integer, obj, string,
)

NOW = "2024-05-15T15:00:00"
NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
NEW_CERTIFICATE_IDS = ("certificate_3221322", "certificate_3221323", "certificate_3221324")
CABINS = ["basic_economy", "economy", "business"]

RESERVATION_ID = "The reservation ID, such as 'ZFA04Y'."
USER_ID = "The user ID, such as 'sara_doe_496'."
PAYMENT_ID = ("The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', "
              "'certificate_7815826'.")
FLIGHT_INFO = obj({"flight_number": string("Flight number, such as 'HAT001'."),
                   "date": string("The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.")})
PASSENGER = obj({"first_name": string("The passenger's first name."),
                 "last_name": string("The passenger's last name."),
                 "dob": string("Date of birth in the format 'YYYY-MM-DD'.")})
PAYMENT = obj({"payment_id": string(PAYMENT_ID), "amount": integer("The amount in dollars paid with this method.")})


def _user(db: Transaction, user_id: str, edit: bool = False) -> dict[str, Any]:
    if db.get("users", user_id) is None:
        raise ToolError(f"User {user_id} not found")
    return db.edit("users", user_id) if edit else db.get("users", user_id)


def _reservation(db: Transaction, reservation_id: str, edit: bool = False) -> dict[str, Any]:
    if db.get("reservations", reservation_id) is None:
        raise ToolError(f"Reservation {reservation_id} not found")
    return db.edit("reservations", reservation_id) if edit else db.get("reservations", reservation_id)


def _flight(db: Transaction, flight_number: str) -> dict[str, Any]:
    flight = db.get("flights", flight_number)
    if flight is None:
        raise ToolError(f"Flight {flight_number} not found")
    return flight


def _flight_date(db: Transaction, flight_number: str, date: str) -> dict[str, Any]:
    flight = _flight(db, flight_number)
    if date not in flight["dates"]:
        raise ToolError(f"Flight {flight_number} not found on date {date}")
    return flight["dates"][date]


def _take_seats(db: Transaction, flight_number: str, date: str, cabin: str, seats: int) -> None:
    flight = db.edit("flights", flight_number)
    flight["dates"][date]["available_seats"][cabin] -= seats


def _direct_flights(db: Transaction, date: str, origin: str | None = None, destination: str | None = None,
                    leave_after: str | None = None) -> list[dict[str, Any]]:
    found = []
    for number in db.keys("flights"):
        flight = db.get("flights", number)
        day = flight["dates"].get(date)
        if (day is not None and day["status"] == "available"
                and (origin is None or flight["origin"] == origin)
                and (destination is None or flight["destination"] == destination)
                and (leave_after is None or flight["scheduled_departure_time_est"] >= leave_after)):
            found.append({
                "flight_number": number, "origin": flight["origin"], "destination": flight["destination"],
                "status": "available", "scheduled_departure_time_est": flight["scheduled_departure_time_est"],
                "scheduled_arrival_time_est": flight["scheduled_arrival_time_est"], "date": date,
                "available_seats": dict(day["available_seats"]), "prices": dict(day["prices"]),
            })
    return found


def _charge_for_update(db: Transaction, user_id: str, payment_id: str, total: int) -> dict[str, Any] | None:
    """Charge a change to a reservation: gift cards pay at once, certificates cannot pay."""
    user = _user(db, user_id)
    if payment_id not in user["payment_methods"]:
        raise ToolError("Payment method not found")
    method = user["payment_methods"][payment_id]
    if method["source"] == "certificate":
        raise ToolError("Certificate cannot be used to update reservation")
    if method["source"] == "gift_card" and method["amount"] < total:
        raise ToolError("Gift card balance is not enough")
    if method["source"] == "gift_card":
        _user(db, user_id, edit=True)["payment_methods"][payment_id]["amount"] = method["amount"] - total
    return {"payment_id": payment_id, "amount": total} if total != 0 else None


def _check_payments(user: dict[str, Any], payments: list[dict[str, Any]]) -> None:
    """Refuse a booking's payments that the user's methods cannot cover, before anything is written.

    Amounts are summed per payment method, so a gift card listed twice cannot pay more than its
    balance; a certificate is spent whole by one payment (it is removed), so it may be listed
    once; a negative amount would credit the method and is refused. τ²-bench checks each entry
    on its own: it lets a gift card listed twice go below zero, and a certificate listed twice
    makes its tool crash (the second removal finds nothing).
    """
    totals: dict[str, int] = {}
    for payment in payments:
        payment_id, amount = payment["payment_id"], payment["amount"]
        if payment_id not in user["payment_methods"]:
            raise ToolError(f"Payment method {payment_id} not found")
        if amount < 0:
            raise ToolError(f"Payment amount for {payment_id} must not be negative, not {amount}")
        method = user["payment_methods"][payment_id]
        if method["source"] == "certificate" and payment_id in totals:
            raise ToolError(f"Certificate {payment_id} is listed twice; a certificate pays once, with one amount")
        totals[payment_id] = totals.get(payment_id, 0) + amount
        if method["source"] in ("gift_card", "certificate") and method["amount"] < totals[payment_id]:
            if totals[payment_id] == amount:
                raise ToolError(f"Not enough balance in payment method {payment_id}")
            raise ToolError(f"Not enough balance in payment method {payment_id}: it is listed more than once for "
                            f"{totals[payment_id]} in all, and holds {method['amount']:g}")


class BookReservation(Tool):
    name = "book_reservation"
    writes = True
    description = "Book a reservation."
    parameters = {
        "user_id": string("The ID of the user to book the reservation such as 'sara_doe_496'."),
        "origin": string("The IATA code for the origin city such as 'SFO'."),
        "destination": string("The IATA code for the destination city such as 'JFK'."),
        "flight_type": string("The type of flight such as 'one_way' or 'round_trip'.", ["round_trip", "one_way"]),
        "cabin": string("The cabin class such as 'basic_economy', 'economy', or 'business'.", CABINS),
        "flights": array("An array of objects containing details about each piece of flight.", FLIGHT_INFO),
        "passengers": array("An array of objects containing details about each passenger.", PASSENGER),
        "payment_methods": array("An array of objects containing details about each payment method.", PAYMENT),
        "total_baggages": integer("The total number of baggage items to book the reservation."),
        "nonfree_baggages": integer("The number of non-free baggage items to book the reservation."),
        "insurance": string("Whether the reservation has insurance.", ["yes", "no"]),
    }

    def invoke(self, db: Transaction, user_id: str, origin: str, destination: str, flight_type: str, cabin: str,
               flights: list[dict], passengers: list[dict], payment_methods: list[dict], total_baggages: int,
               nonfree_baggages: int, insurance: str) -> Any:
        user = _user(db, user_id)
        reservation_id = next((r for r in NEW_RESERVATION_IDS if db.get("reservations", r) is None), None)
        if reservation_id is None:
            raise ToolError("Too many reservations")
        booked, total = [], 0
        for info in flights:
            flight = _flight(db, info["flight_number"])
            day = _flight_date(db, info["flight_number"], info["date"])
            if day["status"] != "available":
                raise ToolError(f"Flight {info['flight_number']} not available on date {info['date']}")
            if day["available_seats"][cabin] < len(passengers):
                raise ToolError(f"Not enough seats on flight {info['flight_number']}")
            price = day["prices"][cabin]
            booked.append({"origin": flight["origin"], "destination": flight["destination"],
                           "flight_number": info["flight_number"], "date": info["date"], "price": price})
            total += price * len(passengers)
        if insurance == "yes":
            total += 30 * len(passengers)
        total += 50 * nonfree_baggages
        _check_payments(user, payment_methods)
        paid = sum(payment["amount"] for payment in payment_methods)
        if paid != total:
            raise ToolError(f"Payment amount does not add up, total price is {total}, but paid {paid}")
        user = _user(db, user_id, edit=True)
        for payment in payment_methods:
            method = user["payment_methods"][payment["payment_id"]]
            if method["source"] == "gift_card":
                method["amount"] = method["amount"] - payment["amount"]
            elif method["source"] == "certificate":
                del user["payment_methods"][payment["payment_id"]]
        for info in flights:
            _take_seats(db, info["flight_number"], info["date"], cabin, len(passengers))
        reservation = {
            "reservation_id": reservation_id, "user_id": user_id, "origin": origin, "destination": destination,
            "flight_type": flight_type, "cabin": cabin, "flights": booked,
            "passengers": [dict(p) for p in passengers], "payment_history": [dict(p) for p in payment_methods],
            "created_at": NOW, "total_baggages": total_baggages, "nonfree_baggages": nonfree_baggages,
            "insurance": insurance,
        }
        db.put("reservations", reservation_id, reservation)
        user["reservations"].append(reservation_id)
        return reservation


class CancelReservation(Tool):
    name = "cancel_reservation"
    writes = True
    description = "Cancel the whole reservation."
    parameters = {"reservation_id": string(RESERVATION_ID)}

    def invoke(self, db: Transaction, reservation_id: str) -> Any:
        reservation = _reservation(db, reservation_id, edit=True)
        refunds = [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]]
        reservation["payment_history"].extend(refunds)
        reservation["status"] = "cancelled"
        return reservation


class GetReservationDetails(Tool):
    name = "get_reservation_details"
    description = "Get the details of a reservation."
    parameters = {"reservation_id": string("The reservation ID, such as '8JX2WO'.")}

    def invoke(self, db: Transaction, reservation_id: str) -> Any:
        return _reservation(db, reservation_id)


class GetUserDetails(Tool):
    name = "get_user_details"
    description = "Get the details of a user, including their reservations."
    parameters = {"user_id": string(USER_ID)}

    def invoke(self, db: Transaction, user_id: str) -> Any:
        return _user(db, user_id)


AIRPORTS = [("SFO", "San Francisco"), ("JFK", "New York"), ("LAX", "Los Angeles"), ("ORD", "Chicago"),
            ("DFW", "Dallas"), ("DEN", "Denver"), ("SEA", "Seattle"), ("ATL", "Atlanta"), ("MIA", "Miami"),
            ("BOS", "Boston"), ("PHX", "Phoenix"), ("IAH", "Houston"), ("LAS", "Las Vegas"), ("MCO", "Orlando"),
            ("EWR", "Newark"), ("CLT", "Charlotte"), ("MSP", "Minneapolis"), ("DTW", "Detroit"),
            ("PHL", "Philadelphia"), ("LGA", "LaGuardia")]


class ListAllAirports(Tool):
    name = "list_all_airports"
    description = "Returns a list of all available airports (IATA code and city)."
    parameters = {}

    def invoke(self, db: Transaction) -> Any:
        return [{"iata": code, "city": city} for code, city in AIRPORTS]


class SearchDirectFlight(Tool):
    name = "search_direct_flight"
    description = "Search for direct flights between two cities on a specific date."
    parameters = {
        "origin": string("The origin city airport in three letters, such as 'JFK'."),
        "destination": string("The destination city airport in three letters, such as 'LAX'."),
        "date": string("The date of the flight in the format 'YYYY-MM-DD', such as '2024-01-01'."),
    }

    def invoke(self, db: Transaction, origin: str, destination: str, date: str) -> Any:
        return _direct_flights(db, date, origin, destination)


def _next_day(date: str) -> str:
    try:
        return (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
    except ValueError:
        return date


class SearchOnestopFlight(Tool):
    name = "search_onestop_flight"
    description = "Search for one-stop flights between two cities on a specific date. Returns pairs of flights."
    parameters = {
        "origin": string("The origin city airport in three letters, such as 'JFK'."),
        "destination": string("The destination city airport in three letters, such as 'LAX'."),
        "date": string("The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'."),
    }

    def invoke(self, db: Transaction, origin: str, destination: str, date: str) -> Any:
        pairs = []
        for first in _direct_flights(db, date, origin, None):
            arrival = first["scheduled_arrival_time_est"]
            date2 = _next_day(date) if "+1" in arrival else date
            for second in _direct_flights(db, date2, first["destination"], destination, leave_after=arrival):
                pairs.append([first, second])
        return pairs


class SendCertificate(Tool):
    name = "send_certificate"
    writes = True
    description = "Send a certificate to a user. Be careful!"
    parameters = {
        "user_id": string("The ID of the user to send the certificate to, such as 'sara_doe_496'."),
        "amount": integer("The amount of the certificate to send."),
    }

    def invoke(self, db: Transaction, user_id: str, amount: int) -> Any:
        _user(db, user_id)
        user = _user(db, user_id, edit=True)
        for payment_id in NEW_CERTIFICATE_IDS:
            if payment_id not in user["payment_methods"]:
                user["payment_methods"][payment_id] = {"source": "certificate", "id": payment_id, "amount": amount}
                return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
        raise ToolError("Too many certificates")


class UpdateReservationBaggages(Tool):
    name = "update_reservation_baggages"
    writes = True
    description = "Update the baggage information of a reservation."
    parameters = {
        "reservation_id": string(RESERVATION_ID),
        "total_baggages": integer("The updated total number of baggage items included in the reservation."),
        "nonfree_baggages": integer("The updated number of non-free baggage items included in the reservation."),
        "payment_id": string(PAYMENT_ID),
    }

    def invoke(self, db: Transaction, reservation_id: str, total_baggages: int, nonfree_baggages: int,
               payment_id: str) -> Any:
        reservation = _reservation(db, reservation_id)
        total = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
        payment = _charge_for_update(db, reservation["user_id"], payment_id, total)
        reservation = _reservation(db, reservation_id, edit=True)
        if payment is not None:
            reservation["payment_history"].append(payment)
        reservation["total_baggages"] = total_baggages
        reservation["nonfree_baggages"] = nonfree_baggages
        return reservation


class UpdateReservationFlights(Tool):
    name = "update_reservation_flights"
    writes = True
    description = "Update the flight information of a reservation."
    parameters = {
        "reservation_id": string(RESERVATION_ID),
        "cabin": string("The cabin class of the reservation.", CABINS),
        "flights": array("An array of objects containing details about each piece of flight in the ENTIRE new "
                         "reservation. Even if a flight segment is not changed, it should still be included in the "
                         "array.", FLIGHT_INFO),
        "payment_id": string(PAYMENT_ID),
    }

    def invoke(self, db: Transaction, reservation_id: str, cabin: str, flights: list[dict], payment_id: str) -> Any:
        reservation = _reservation(db, reservation_id)
        _user(db, reservation["user_id"])
        people = len(reservation["passengers"])
        total, new_flights = 0, []
        for info in flights:
            kept = next((f for f in reservation["flights"] if f["flight_number"] == info["flight_number"]
                         and f["date"] == info["date"] and cabin == reservation["cabin"]), None)
            if kept is not None:
                total += kept["price"] * people
                new_flights.append(dict(kept))
                continue
            flight = _flight(db, info["flight_number"])
            day = _flight_date(db, info["flight_number"], info["date"])
            if day["status"] != "available":
                raise ToolError(f"Flight {info['flight_number']} not available on date {info['date']}")
            if day["available_seats"][cabin] < people:
                raise ToolError(f"Not enough seats on flight {info['flight_number']}")
            entry = {"flight_number": info["flight_number"], "date": info["date"], "price": day["prices"][cabin],
                     "origin": flight["origin"], "destination": flight["destination"]}
            total += entry["price"] * people
            new_flights.append(entry)
        total -= sum(f["price"] for f in reservation["flights"]) * people
        payment = _charge_for_update(db, reservation["user_id"], payment_id, total)
        reservation = _reservation(db, reservation_id, edit=True)
        if payment is not None:
            reservation["payment_history"].append(payment)
        reservation["flights"] = new_flights
        reservation["cabin"] = cabin
        return reservation


class UpdateReservationPassengers(Tool):
    name = "update_reservation_passengers"
    writes = True
    description = "Update the passenger information of a reservation."
    parameters = {
        "reservation_id": string(RESERVATION_ID),
        "passengers": array("An array of objects containing details about each passenger.", PASSENGER),
    }

    def invoke(self, db: Transaction, reservation_id: str, passengers: list[dict]) -> Any:
        if len(passengers) != len(_reservation(db, reservation_id)["passengers"]):
            raise ToolError("Number of passengers does not match")
        reservation = _reservation(db, reservation_id, edit=True)
        reservation["passengers"] = [dict(p) for p in passengers]
        return reservation


class GetFlightStatus(Tool):
    name = "get_flight_status"
    description = "Get the status of a flight."
    parameters = {"flight_number": string("The flight number."), "date": string("The date of the flight.")}

    def invoke(self, db: Transaction, flight_number: str, date: str) -> Any:
        return _flight_date(db, flight_number, date)["status"]


TOOLS: list[Tool] = [
    BookReservation(), Calculate(), CancelReservation(), GetReservationDetails(), GetUserDetails(),
    ListAllAirports(), SearchDirectFlight(), SearchOnestopFlight(), SendCertificate(), TransferToHumanAgents(),
    UpdateReservationBaggages(), UpdateReservationFlights(), UpdateReservationPassengers(), GetFlightStatus(),
]

# One filled-in call per API for the agent's prompt (values unlike any record of the database).
API_EXAMPLES: list[dict[str, Any]] = [
    {"name": "get_user_details", "parameters": {"user_id": "jane_example_0000"}},
    {"name": "get_reservation_details", "parameters": {"reservation_id": "EXMPL0"}},
    {"name": "list_all_airports", "parameters": {}},
    {"name": "search_direct_flight", "parameters": {"origin": "AAA", "destination": "BBB", "date": "2024-05-01"}},
    {"name": "search_onestop_flight", "parameters": {"origin": "AAA", "destination": "BBB", "date": "2024-05-01"}},
    {"name": "get_flight_status", "parameters": {"flight_number": "HAT000", "date": "2024-05-01"}},
    {"name": "calculate", "parameters": {"expression": "2 * (100 + 30)"}},
    {"name": "book_reservation", "parameters": {
        "user_id": "jane_example_0000", "origin": "AAA", "destination": "BBB", "flight_type": "one_way",
        "cabin": "economy", "flights": [{"flight_number": "HAT000", "date": "2024-05-01"}],
        "passengers": [{"first_name": "Jane", "last_name": "Example", "dob": "1990-01-01"}],
        "payment_methods": [{"payment_id": "credit_card_0000000", "amount": 100}],
        "total_baggages": 0, "nonfree_baggages": 0, "insurance": "no"}},
    {"name": "cancel_reservation", "parameters": {"reservation_id": "EXMPL0"}},
    {"name": "update_reservation_baggages", "parameters": {
        "reservation_id": "EXMPL0", "total_baggages": 2, "nonfree_baggages": 1, "payment_id": "credit_card_0000000"}},
    {"name": "update_reservation_flights", "parameters": {
        "reservation_id": "EXMPL0", "cabin": "economy", "flights": [{"flight_number": "HAT000", "date": "2024-05-01"}],
        "payment_id": "gift_card_0000000"}},
    {"name": "update_reservation_passengers", "parameters": {
        "reservation_id": "EXMPL0", "passengers": [{"first_name": "Jane", "last_name": "Example", "dob": "1990-01-01"}]}},
    {"name": "send_certificate", "parameters": {"user_id": "jane_example_0000", "amount": 50}},
    {"name": "transfer_to_human_agents", "parameters": {"summary": "The user wants to ... and I cannot help because ..."}},
]
