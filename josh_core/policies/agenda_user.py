"""AgendaUser: a rule-based, deterministic user simulator that needs no model (the default).

It pursues the scenario's domains in order. Per domain it states the search constraints a
few at a time (the fallback-first `fail_info` values when the goal has them), answers the
slot questions it detects in the agent's last message, switches to the real constraints
once told that nothing matches, gives the booking details when asked, when the agent offers
to book, or once the search is done (first the `fail_book` values, then the real ones after
a failed booking), asks for the requested slots once something was found, and moves on when
the domain is done. It hangs up (END_CONVERSATION) when every domain is done, or after
`max_stalls` turns in a row in which the agent gave it nothing new to react to.

Privileged access, on purpose: besides the visible conversation it reads the API calls made
on the path (`ctx.api_calls`: whether a search came back empty, whether a booking failed,
whether anything was found) and asks the environment which goals those calls completed
(`ctx.env.completed_goals`) to know when a domain is done. A human caller would learn this
from the agent's words; reading it directly keeps the simulator exact whatever the agent's
wording, which matters most for weak agents.

The simulator keeps no state between turns: the same object serves every leaf of a tree at
once. What it has already said is read back from its own earlier utterances, which it words
so that this is exact: every slot value is stated with a fixed phrase, after a noun naming the
domain ("a restaurant", "the place to stay", "an attraction", "the train"), and a phrase counts
for the domain whose noun precedes it most closely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from josh_core.policies.base import TurnContext, UserTurn
from josh_core.policies.prompts import END_CONVERSATION
from josh_core.types import ApiCallRecord, Message

NOUNS = {"restaurant": "restaurant", "hotel": "place to stay", "attraction": "attraction", "train": "train"}
# A noun marks a domain only after an article, as this simulator always words it; names such
# as "j restaurant" or "stazione restaurant and coffee bar" then do not count.
_NOUN_RE = re.compile(r"\b(?:a|an|the) (" + "|".join(re.escape(n) for n in NOUNS.values()) + r")\b")
_DOMAIN_BY_NOUN = {v: k for k, v in NOUNS.items()}

# Search slots in the order a caller would mention them.
SEARCH_ORDER = {
    "restaurant": ["name", "food", "pricerange", "area"],
    "hotel": ["name", "type", "pricerange", "stars", "area", "parking", "internet"],
    "attraction": ["name", "type", "area"],
    "train": ["departure", "destination", "day", "leaveAt", "arriveBy"],
}
BOOK_ORDER = {"restaurant": ["people", "day", "time"], "hotel": ["people", "day", "stay"], "train": ["people"]}

STALL_MARK = "As I said,"
REQT_MARK = "could you tell me"
GIVE_UP = f"I am sorry, this is not getting anywhere. Goodbye. {END_CONVERSATION}"
ALL_DONE = f"Thank you, that is all I need. Goodbye! {END_CONVERSATION}"

REQT_LABELS = {
    "phone": "phone number", "postcode": "postcode", "address": "address", "entrance fee": "entrance fee",
    "duration": "travel time", "price": "price", "trainID": "train ID", "leaveAt": "departure time",
    "arriveBy": "arrival time", "pricerange": "price range", "food": "type of food", "type": "type",
    "area": "area", "stars": "star rating", "parking": "parking", "internet": "wifi", "name": "name",
}

# Words in an agent's question that ask for a slot.
QUESTION_CUES: dict[str, tuple[str, ...]] = {
    "area": ("area", "part of town", "side of town", "location", "where in"),
    "pricerange": ("price", "budget", "expensive", "cheap"),
    "food": ("food", "cuisine"),
    "stars": ("star",),
    "parking": ("parking",),
    "internet": ("internet", "wifi", "wi-fi"),
    "type": ("type", "kind of", "sort of"),
    "name": ("name", "called", "particular", "specific"),
    "day": ("day", "date", "when"),
    "time": ("time", "when"),
    "people": ("people", "how many", "guests", "party", "persons", "tickets"),
    "stay": ("night", "how long", "stay"),  # "place to stay" is removed before matching
    "departure": ("depart", "leaving from", "where from", "from where", "starting from", "travel from",
                  "where are you leaving", "where will you be leaving"),
    "destination": ("destination", "where to", "going to", "heading", "travel to", "where are you going"),
    "leaveAt": ("leave", "departure time", "what time"),
    "arriveBy": ("arrive", "arrival"),
}
NO_MATCH_CUES = ("no match", "nothing match", "no result", "couldn't find", "could not find", "can't find",
                 "cannot find", "didn't find", "did not find", "unable to find", "there are no", "there is no",
                 "no restaurant", "no hotel", "no train", "no attraction", "none ", "not available",
                 "no availability", "unavailable")
BOOK_FAIL_CUES = ("unable to book", "could not book", "couldn't book", "can't book", "cannot book",
                  "booking failed", "booking was unsuccessful", "unsuccessful", "fully booked", "not available",
                  "no availability", "unavailable", "failed")
BOOK_OFFER_CUES = ("book", "reserve", "reservation")


def phrase(domain: str, slot: str, value: str, booking: bool = False) -> str:
    """The fixed wording of one constraint (what the agent hears, and what is read back)."""
    v = value
    if booking:
        return {
            ("restaurant", "people"): f"for {v} people", ("restaurant", "day"): f"on {v}",
            ("restaurant", "time"): f"at {v}", ("hotel", "people"): f"for {v} people",
            ("hotel", "day"): f"starting on {v}", ("hotel", "stay"): f"for {v} nights",
            ("train", "people"): f"for {v} people",
        }.get((domain, slot), f"with {slot} {v}")
    if slot == "name":
        return f"called {v}"
    if slot == "area":
        return f"in the {v} of town"
    if slot == "pricerange":
        return f"in the {v} price range"
    if slot == "food":
        return f"serving {v} food"
    if slot == "type":
        return f"that is a {v}"
    if slot == "stars":
        return f"with a star rating of {v}"
    if slot in ("parking", "internet"):
        what = "free parking" if slot == "parking" else "free wifi"
        return f"with {what}" if v == "yes" else f"with no {what}"
    return {
        "departure": f"leaving from {v}", "destination": f"going to {v}", "day": f"on {v}",
        "leaveAt": f"departing after {v}", "arriveBy": f"arriving by {v}",
    }.get(slot, f"with {slot} {v}")


def join_phrases(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def said_by_domain(user_texts: list[str]) -> dict[str, list[str]]:
    """Each earlier user utterance cut into pieces, each piece filed under the domain whose
    noun starts it (text before any noun is dropped)."""
    out: dict[str, list[str]] = {d: [] for d in NOUNS}
    for text in user_texts:
        lowered = text.lower()
        marks = list(_NOUN_RE.finditer(lowered))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(lowered)
            out[_DOMAIN_BY_NOUN[m.group(1)]].append(lowered[m.start():end])
    return out


def _said(pieces: list[str], text: str) -> bool:
    text = text.lower()
    return any(text in p for p in pieces)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!])\s+", text) if s]


@dataclass
class DomainState:
    """What the user knows about one domain on this path (derived afresh every turn)."""

    domain: str
    search: dict[str, str]  # the constraints in force (fallback-first or real)
    book: dict[str, str]  # booking details in force
    needs_booking: bool
    search_fell_back: bool
    book_fell_back: bool
    fallback_search: dict[str, str] = field(default_factory=dict)  # real values that differ
    fallback_book: dict[str, str] = field(default_factory=dict)
    found: bool = False  # some search in this domain returned an entity
    last_search_empty: bool = False
    last_book_failed: bool = False
    reqt: list[str] = field(default_factory=list)
    goals_done: bool = False
    reqt_asked: bool = False


class AgendaUser:
    name = "agenda"

    def __init__(self, chunk: int = 3, max_stalls: int = 3, max_turns: int = 30):
        self.chunk = chunk  # constraints stated per turn
        self.max_stalls = max_stalls  # agent turns in a row without anything new
        self.max_turns = max_turns

    async def reply(self, ctx: TurnContext) -> UserTurn:
        return self.respond(ctx.scenario, ctx.history, ctx.api_calls, ctx.env)

    # ---- the whole policy, as a pure function of the path --------------------------------
    def respond(self, scenario: Any, history: list[Message], api_calls: list[ApiCallRecord],
                env: Any = None) -> UserTurn:
        user_texts = [m.content for m in history if m.role == "user"]
        agent_texts = [m.content for m in history if m.role == "assistant"]
        last_agent = agent_texts[-1] if agent_texts else ""
        pieces = said_by_domain(user_texts)
        completed = self._completed_goal_domains(scenario, api_calls, env)
        states = [self._state(scenario, d, pieces[d], api_calls, completed) for d in scenario.domains]

        if not user_texts:
            first = states[0]
            return UserTurn(text="Hi! " + self._introduce(first, pieces[first.domain]))
        if len(user_texts) >= self.max_turns:
            return UserTurn(text=GIVE_UP, ended=True)

        current = next((s for s in states if not self._domain_done(s)), None)
        if current is None:
            return UserTurn(text=ALL_DONE, ended=True)
        said = pieces[current.domain]
        if not said:  # the previous domain is done: bring up the next one
            return UserTurn(text="Thank you. " + self._introduce(current, said).replace("I am", "Now I am also", 1))
        parts, new = self._react(current, said, last_agent)
        if new:
            return UserTurn(text=" ".join(parts))
        # Nothing new to say: a stall. Hang up after too many in a row.
        stalls = 0
        for text in reversed(user_texts):
            if not text.startswith(STALL_MARK):
                break
            stalls += 1
        if stalls >= self.max_stalls:
            return UserTurn(text=GIVE_UP, ended=True)
        return UserTurn(text=f"{STALL_MARK} " + (" ".join(parts) if parts else self._restate(current)))

    # ---- reading the path ----------------------------------------------------------------
    @staticmethod
    def _completed_goal_domains(scenario: Any, api_calls: list[ApiCallRecord], env: Any) -> dict[str, bool]:
        """domain -> whether every goal call of that domain is completed on this path."""
        ids = scenario.goal_call_ids()
        done_ids = set(env.completed_goals(api_calls)) if env is not None else set()
        out: dict[str, bool] = {}
        for gid, call in zip(ids, scenario.goal_calls):
            out[call.domain] = out.get(call.domain, True) and gid in done_ids
        return out

    def _state(self, scenario: Any, domain: str, said: list[str], api_calls: list[ApiCallRecord],
               completed: dict[str, bool]) -> DomainState:
        goal = scenario.goal[domain]
        first_search = {**goal.info, **goal.fail_info}
        fallback_search = {k: v for k, v in goal.info.items() if first_search.get(k) != v}
        search_fell_back = bool(fallback_search) and any(
            _said(said, phrase(domain, k, v)) for k, v in fallback_search.items())
        first_book = {**goal.book, **goal.fail_book}
        fallback_book = {k: v for k, v in goal.book.items() if first_book.get(k) != v}
        book_fell_back = bool(fallback_book) and any(
            _said(said, phrase(domain, k, v, booking=True)) for k, v in fallback_book.items())
        state = DomainState(
            domain=domain,
            search=dict(goal.info) if (search_fell_back or not fallback_search) else first_search,
            book=dict(goal.book) if (book_fell_back or not fallback_book) else first_book,
            needs_booking=bool(goal.book),
            search_fell_back=search_fell_back,
            book_fell_back=book_fell_back,
            fallback_search=fallback_search,
            fallback_book=fallback_book,
            reqt=list(goal.reqt),
            goals_done=completed.get(domain, False),
            reqt_asked=_said(said, REQT_MARK),
        )
        for record in api_calls:
            call = record.call
            if call is None or not record.result.ok or not call.name.endswith("_" + domain):
                continue
            if call.name.startswith("search_") and record.result.content:
                state.found = True
        last = api_calls[-1] if api_calls else None
        if last is not None and last.call is not None and last.result.ok and last.call.name.endswith("_" + domain):
            if last.call.name.startswith("search_"):
                state.last_search_empty = last.result.content == []
            elif last.call.name.startswith("book_"):
                content = last.result.content
                state.last_book_failed = isinstance(content, dict) and not content.get("success")
        return state

    @staticmethod
    def _domain_done(state: DomainState) -> bool:
        return state.goals_done and (state.reqt_asked or not state.reqt)

    # ---- deciding ------------------------------------------------------------------------
    def _react(self, s: DomainState, said: list[str], agent_text: str) -> tuple[list[str], bool]:
        """The sentences of this turn, most urgent first, and whether they say anything new."""
        noun = NOUNS[s.domain]
        text = agent_text.lower()
        parts: list[str] = []

        # 1. Nothing matched: fall back to the real constraints (once).
        first_only_said = any(_said(said, phrase(s.domain, k, v)) for k, v in s.search.items()
                              if k in s.fallback_search)
        if s.fallback_search and not s.search_fell_back and first_only_said and (
                s.last_search_empty or _has_cue(text, NO_MATCH_CUES)):
            wanted = [phrase(s.domain, k, v) for k, v in _ordered(s.domain, s.fallback_search)]
            return [f"In that case, I would like a {noun} {join_phrases(wanted)} instead."], True

        # 2. The booking failed: fall back to the real booking details (once).
        first_book_said = any(_said(said, phrase(s.domain, k, v, booking=True)) for k, v in s.book.items()
                              if k in s.fallback_book)
        if s.fallback_book and not s.book_fell_back and first_book_said and (
                s.last_book_failed or _has_cue(text, BOOK_FAIL_CUES)):
            wanted = [phrase(s.domain, k, v, booking=True) for k, v in _ordered(s.domain, s.fallback_book, True)]
            return [f"Then please try to book the {noun} {join_phrases(wanted)} instead."], True

        # 3. Answer the slots the agent asked about.
        asked = self._asked_slots(s, agent_text)
        answered: list[str] = []
        for slot in asked:
            if slot in s.search:
                answered.append(phrase(s.domain, slot, s.search[slot]))
            elif s.needs_booking and slot in s.book:
                answered.append(phrase(s.domain, slot, s.book[slot], booking=True))
        new_answers = [p for p in answered if not _said(said, p)]
        if answered:
            parts.append(f"I want the {noun} {join_phrases(answered)}.")
        elif asked and not s.goals_done:
            labels = [REQT_LABELS.get(a, a) for a in asked if a in SEARCH_ORDER.get(s.domain, [])]
            if labels and not _said(said, "is fine"):
                parts.append(f"For the {noun}, any {join_phrases(labels).replace(' and ', ' or ')} is fine.")
                new_answers.append(parts[-1])

        unstated_search = [(k, v) for k, v in _ordered(s.domain, s.search) if not _said(said, phrase(s.domain, k, v))]
        book_phrases = [phrase(s.domain, k, v, booking=True) for k, v in _ordered(s.domain, s.book, True)]
        unstated_book = [p for p in book_phrases if not _said(said, p)]
        # Asked for any booking detail, or offered to book: the user gives them all at once.
        offered = s.needs_booking and "?" in text and (
            _has_cue(text, BOOK_OFFER_CUES) or any(a in s.book for a in asked))

        # 4. Booking details when the agent offers to book or the search is done.
        if s.needs_booking and not s.goals_done and unstated_book and (offered or (s.found and not unstated_search)):
            # The booking sentence carries every booking detail: drop answers it repeats.
            parts = [p for p in parts if not any(b in p for b in book_phrases)]
            parts.append(f"Please book the {noun} {join_phrases(book_phrases)}.")
            return parts, True
        if new_answers:
            return parts, True
        # 5. More of the search constraints, a few at a time.
        if unstated_search:
            chunk = [phrase(s.domain, k, v) for k, v in unstated_search[: self.chunk]]
            parts.append(f"Also, I want the {noun} {join_phrases(chunk)}.")
            return parts, True
        # 6. Ask for the requested details once something was found.
        if s.found and s.reqt and not s.reqt_asked:
            labels = [REQT_LABELS.get(r, r) for r in s.reqt]
            parts.append(f"For the {noun}, {REQT_MARK} the {join_phrases(labels)}?")
            return parts, True
        # Nothing new: only answers to questions asked again.
        return [], False

    def _asked_slots(self, s: DomainState, agent_text: str) -> list[str]:
        # The domain nouns themselves ("place to stay") must not read as slot cues.
        questions = [_NOUN_RE.sub(" ", q.lower()) for q in _sentences(agent_text) if "?" in q]
        if not questions:
            return []
        slots = list(SEARCH_ORDER.get(s.domain, []))
        if s.needs_booking:
            slots += [b for b in BOOK_ORDER.get(s.domain, []) if b not in slots]
        asked = []
        for slot in slots:
            cues = QUESTION_CUES.get(slot, ())
            if any(_has_cue(q, cues) for q in questions):
                asked.append(slot)
        # "when" and "what time" are ambiguous: keep only slots this domain uses.
        return [a for a in asked if a in s.search or a in s.book or a in ("area", "pricerange", "food", "type")]

    def _introduce(self, s: DomainState, said: list[str]) -> str:
        items = _ordered(s.domain, s.search)[: self.chunk]
        wanted = [phrase(s.domain, k, v) for k, v in items]
        noun = NOUNS[s.domain]
        article = "an" if noun[0] in "aeiou" else "a"
        return f"I am looking for {article} {noun} {join_phrases(wanted)}.".replace(f"{noun} .", f"{noun}.")

    def _restate(self, s: DomainState) -> str:
        noun = NOUNS[s.domain]
        wanted = [phrase(s.domain, k, v) for k, v in _ordered(s.domain, s.search)]
        if s.needs_booking and s.found:
            booking = [phrase(s.domain, k, v, booking=True) for k, v in _ordered(s.domain, s.book, True)]
            return f"please book the {noun} {join_phrases(booking)}."
        article = "an" if noun[0] in "aeiou" else "a"
        return f"I am looking for {article} {noun} {join_phrases(wanted)}."


def _ordered(domain: str, values: dict[str, str], booking: bool = False) -> list[tuple[str, str]]:
    order = (BOOK_ORDER if booking else SEARCH_ORDER).get(domain, [])
    known = [(k, values[k]) for k in order if k in values]
    return known + [(k, v) for k, v in values.items() if k not in order]


def _has_cue(text: str, cues: tuple[str, ...]) -> bool:
    return any(c in text for c in cues)
