"""User-facing goal sentences (the role MultiWOZ's goal "message" plays), in our own words.

One or more sentences per domain, in the order the user pursues the domains: what to look
for (and the fallback when the first constraints find nothing), what to book (and the
fallback when the first booking fails), and what to ask about.
"""

from __future__ import annotations

from josh_core.envs.toolwoz.types import DomainGoal

_NOUN = {"restaurant": "restaurant", "hotel": "place to stay", "attraction": "attraction", "train": "train"}
_ARTICLE = {"restaurant": "a", "hotel": "a", "attraction": "an", "train": "a"}
_REQUEST_WORDS = {
    "phone": "phone number",
    "postcode": "postcode",
    "address": "address",
    "pricerange": "price range",
    "food": "type of food",
    "area": "area",
    "internet": "whether it has free wifi",
    "parking": "whether it has free parking",
    "type": "type",
    "stars": "star rating",
    "entrance fee": "entrance fee",
    "duration": "travel time",
    "leaveAt": "departure time",
    "arriveBy": "arrival time",
    "trainID": "train ID",
    "price": "ticket price",
}


def _area(value: str) -> str:
    return "is in the centre" if value == "centre" else f"is in the {value} of town"


def _phrase(domain: str, slot: str, value: str) -> str:
    """A relative-clause fragment for one constraint ("serves thai food")."""
    if slot == "area":
        return _area(value)
    if slot == "pricerange":
        return f"is in the {value} price range"
    if domain == "restaurant" and slot == "food":
        return f"serves {value} food"
    if domain == "hotel":
        if slot == "type":
            return f"is a {value}"
        if slot == "stars":
            return f"has a star rating of {value}"
        if slot in ("parking", "internet"):
            what = "free parking" if slot == "parking" else "free wifi"
            return f"has {what}" if value == "yes" else f"does not need to have {what}"
    if domain == "attraction" and slot == "type":
        return f"is of the type {value}"
    if domain == "train":
        return {
            "departure": f"leaves from {value}",
            "destination": f"goes to {value}",
            "day": f"runs on {value}",
            "leaveAt": f"leaves after {value}",
            "arriveBy": f"arrives by {value}",
        }.get(slot, f"has {slot} {value}")
    return f"has {slot} {value}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _looking_for(domain: str, info: dict[str, str], first: bool) -> str:
    lead = "You are looking for" if first else "You are also looking for"
    noun = _NOUN[domain]
    if "name" in info and len(info) == 1:
        return f"{lead} a particular {noun} called {info['name']}."
    if domain == "train":
        route = []
        if "departure" in info:
            route.append(f"from {info['departure']}")
        if "destination" in info:
            route.append(f"to {info['destination']}")
        if "day" in info:
            route.append(f"on {info['day']}")
        rest = [
            _phrase(domain, slot, value)
            for slot, value in info.items()
            if slot not in ("departure", "destination", "day")
        ]
        tail = f" that {_join(rest)}" if rest else ""
        return f"{lead} a train {' '.join(route)}{tail}."
    parts = [_phrase(domain, slot, value) for slot, value in info.items()]
    return f"{lead} {_ARTICLE[domain]} {noun} that {_join(parts)}."


def _fallback(domain: str, goal: DomainGoal) -> str:
    changed = {k: v for k, v in goal.info.items() if goal.fail_info.get(k) != v}
    parts = [_phrase(domain, slot, value) for slot, value in changed.items()]
    return f"If there is no such {_NOUN[domain]}, you will take one that {_join(parts)} instead."


def _count(number: str, singular: str, plural: str) -> str:
    return f"{number} {singular if number == '1' else plural}"


def _booking(domain: str, book: dict[str, str]) -> str:
    people = _count(book.get("people", "1"), "person", "people")
    if domain == "restaurant":
        return f"Book a table for {people} at {book.get('time', '')} on {book.get('day', '')}."
    if domain == "hotel":
        nights = _count(book.get("stay", "1"), "night", "nights")
        return f"Book it for {people} for {nights} starting on {book.get('day', '')}."
    return f"Book {_count(book.get('people', '1'), 'ticket', 'tickets')}."


def _booking_fallback(goal: DomainGoal) -> str:
    words = []
    for slot, value in goal.book.items():
        if slot not in goal.fail_book or goal.fail_book[slot] == value:
            continue
        if slot == "stay":
            words.append(_count(value, "night", "nights"))
        elif slot == "people":
            words.append(_count(value, "person", "people"))
        else:
            words.append(value)
    return f"If the booking fails, try {_join(words)} instead."


def _requests(domain: str, reqt: list[str]) -> str:
    words = [_REQUEST_WORDS.get(slot, slot) for slot in reqt]
    whose = "the" if domain == "train" else "its"
    return f"Ask for {whose} {_join(words)}."


def domain_instructions(domain: str, goal: DomainGoal, first: bool) -> list[str]:
    """The sentences for one domain."""
    out = []
    if goal.fail_info:
        out.append(_looking_for(domain, goal.fail_info, first))
        out.append(_fallback(domain, goal))
    else:
        out.append(_looking_for(domain, goal.info, first))
    if goal.book:
        if goal.fail_book:
            out.append(_booking(domain, {**goal.book, **goal.fail_book}))
            out.append(_booking_fallback(goal))
        else:
            out.append(_booking(domain, goal.book))
    if goal.reqt:
        out.append(_requests(domain, goal.reqt))
    return out


def write_instructions(domains: list[str], goal: dict[str, DomainGoal]) -> list[str]:
    """All sentences of a scenario, domain by domain in order."""
    out: list[str] = []
    for i, domain in enumerate(domains):
        out.extend(domain_instructions(domain, goal[domain], first=i == 0))
    return out
