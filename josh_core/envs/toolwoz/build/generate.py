"""toolwoz-synth: ToolWOZ-shaped scenarios drawn from MultiWOZ's goal statistics.

Per scenario (its own RNG, seeded by the generator seed and the scenario id):
1. Domains: an ordered combination from the goal model, restricted to restaurant, hotel,
   attraction and train (combinations with taxi, police or hospital dropped, renormalised).
2. Info per domain. Restaurant/hotel/attraction: with P(name) the user knows the name and
   asks for it alone; otherwise each other slot is included independently, with inclusion
   probabilities calibrated so the marginals over all goals match the statistics, and each
   value is drawn from its value distribution. If those constraints match no entity, they
   become `fail_info` and one slot value is redrawn until something matches (ConvLab's
   procedure, so the fail_info share comes out of the statistics). Train: a route to or from
   cambridge, a day, and either leaveAt or arriveBy (drawn again until a train fits).
3. Book with P(book | domain) from the statistics, values from their distributions;
   `fail_book` (one value that fails first: time or day, stay or day) with
   FAIL_BOOK_PROBABILITY, which the statistics do not carry.
4. The booking entity is a DB row the final info selects (trains: the first one leaving
   after leaveAt, or the last one arriving before arriveBy), so the goal is achievable and
   serving (Algorithm 2) gives exactly that entity to a search with the goal parameters.
5. Requested slots from their inclusion probabilities, minus info slots and slots the entity
   has no value for. A domain goal has a booking or at least one request.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Mapping

from josh_core.envs.toolwoz.build.instructions import write_instructions
from josh_core.envs.toolwoz.db import Database, entity_id_field
from josh_core.envs.toolwoz.env import ToolWOZEnv
from josh_core.envs.toolwoz.goal_model import GoalModel
from josh_core.envs.toolwoz.normalize import normalize_params, parse_time
from josh_core.envs.toolwoz.types import DOMAINS, DomainGoal, GoalCall, Scenario

GENERATOR_VERSION = 1
DEFAULT_SEED = 7849  # the number of ToolWOZ scenarios; any fixed value would do
SPLIT_SIZES = {"train": 6251, "val": 793, "test": 805}
# Share of bookings whose first attempt fails. The goal model has no such rate (its fourth
# element is the share of dialogues that book at all), so this is our choice.
FAIL_BOOK_PROBABILITY = {"restaurant": 0.25, "hotel": 0.25}
_FAIL_BOOK_SLOTS = {"restaurant": ("time", "day"), "hotel": ("stay", "day")}
BOOK_SLOTS = {"restaurant": ("time", "day", "people"), "hotel": ("stay", "day", "people"), "train": ("people",)}
_TRAIN_ROUTE = ("departure", "destination", "day")
_HUB = "cambridge"
_EMPTY_VALUES = {"", "?", "none", "unknown", "none."}
_MAX_TRIES = 200


def scenario_id(split: str, index: int) -> str:
    return f"synth-{split}-{index:04d}"


def booking_reference(scenario: str, domain: str, entity: str) -> str:
    """A stable 8-character reference number for a successful booking."""
    digest = hashlib.sha256(f"{scenario}|{domain}|{entity}".encode()).hexdigest()
    return digest[:8].upper()


class _Dist:
    """A categorical distribution sampled with precomputed cumulative weights."""

    def __init__(self, weights: Mapping):
        self.keys = list(weights)
        total = 0.0
        self.cum = []
        for key in self.keys:
            total += float(weights[key])
            self.cum.append(total)

    def sample(self, rng: random.Random):
        return rng.choices(self.keys, cum_weights=self.cum)[0]

    def without(self, key) -> _Dist:
        weights = dict(zip(self.keys, [b - a for a, b in zip([0.0, *self.cum], self.cum)]))
        weights.pop(key, None)
        return _Dist(weights)


def calibrate_inclusion(targets: Mapping[str, float]) -> dict[str, float]:
    """Independent inclusion probabilities q whose marginals, conditioned on at least one
    slot being included, equal `targets` (fixed point of q_s = t_s · P(non-empty))."""
    q = {slot: min(t, 0.999) for slot, t in targets.items()}
    for _ in range(200):
        empty = 1.0
        for p in q.values():
            empty *= 1.0 - p
        q = {slot: min(targets[slot] * (1.0 - empty), 0.999) for slot in targets}
    return q


class SynthGenerator:
    """Deterministic scenario generator over one database and goal model."""

    def __init__(self, db: Database, model: GoalModel, seed: int = DEFAULT_SEED):
        self.db = db
        self.model = model
        self.seed = seed
        self.combinations = _Dist(model.combination_distribution(DOMAINS))
        self.value_dists: dict[tuple[str, str, str], _Dist] = {
            (domain, intent, slot): _Dist(dist)
            for domain in DOMAINS
            for intent, slots in model.slot_values.get(domain, {}).items()
            for slot, dist in slots.items()
        }
        self.name_probability: dict[str, float] = {}
        self.info_inclusion: dict[str, dict[str, float]] = {}
        for domain in ("restaurant", "hotel", "attraction"):
            inclusion = model.slot_inclusion[domain]["info"]
            p_name = inclusion.get("name", 0.0)
            self.name_probability[domain] = p_name
            # Marginals among goals that do not give a name, then calibrated for the
            # "at least one constraint" condition.
            others = {s: min(p / (1.0 - p_name), 1.0) for s, p in inclusion.items() if s != "name"}
            self.info_inclusion[domain] = calibrate_inclusion(others)
        train_info = model.slot_inclusion["train"]["info"]
        self.leave_at_probability = train_info["leaveAt"] / (train_info["leaveAt"] + train_info["arriveBy"])
        to_hub = model.slot_values["train"]["info"]["destination"].get(_HUB, 0.5)
        from_hub = model.slot_values["train"]["info"]["departure"].get(_HUB, 0.5)
        self.to_hub_probability = to_hub / (to_hub + from_hub)
        self._from_stations = self.value_dists[("train", "info", "departure")].without(_HUB)
        self._to_stations = self.value_dists[("train", "info", "destination")].without(_HUB)

    # ------------------------------------------------------------------ scenarios
    def split(self, split: str, count: int, progress: Callable[[int], None] | None = None) -> list[Scenario]:
        out = []
        for i in range(count):
            out.append(self.scenario(scenario_id(split, i)))
            if progress is not None and (i + 1) % 250 == 0:
                progress(i + 1)
        return out

    def scenario(self, sid: str) -> Scenario:
        rng = random.Random(f"{self.seed}:{sid}")
        domains = list(self.combinations.sample(rng))
        goals: dict[str, DomainGoal] = {}
        calls: list[GoalCall] = []
        for domain in domains:
            goal, entity_row, books = self._domain_goal(rng, domain)
            goals[domain] = goal
            calls.append(GoalCall(name=f"search_{domain}", parameters=dict(goal.info)))
            if books:
                id_field = entity_id_field(domain)
                entity = self.db.entity_id(domain, entity_row)
                calls.append(
                    GoalCall(
                        name=f"book_{domain}",
                        parameters={**goal.book, id_field: entity},
                        returns={id_field: entity, "reference": booking_reference(sid, domain, entity)},
                        unique_id=entity,
                    )
                )
        scenario = Scenario(
            id=sid,
            source="toolwoz-synth",
            domains=domains,
            goal=goals,
            instructions=write_instructions(domains, goals),
            goal_calls=calls,
        )
        fill_search_returns(scenario, self.db)
        return scenario

    # ------------------------------------------------------------------ one domain
    def _domain_goal(self, rng: random.Random, domain: str) -> tuple[DomainGoal, int, bool]:
        """The goal, the row of its entity (booked, or served to the goal search), and
        whether it books."""
        for _ in range(_MAX_TRIES):
            if domain == "train":
                found = self._train_info(rng)
            else:
                found = self._place_info(rng, domain)
            if found is None:
                continue
            info, fail_info, rows = found
            book, fail_book = self._book(rng, domain)
            if domain == "train":
                entity_row = self._train_choice(info, rows)
            elif book:
                entity_row = rng.choice(rows)
            else:
                entity_row = rows[0]  # what serving gives a search with exactly the goal
            reqt = self._reqt(rng, domain, {**fail_info, **info}, entity_row, needed=not book)
            if not book and not reqt:
                continue
            goal = DomainGoal(info=info, fail_info=fail_info, book=book, fail_book=fail_book, reqt=reqt)
            return goal, entity_row, bool(book)
        raise RuntimeError(f"could not draw an achievable {domain} goal")

    def _sample(self, rng: random.Random, domain: str, intent: str, slot: str) -> str:
        return self.value_dists[(domain, intent, slot)].sample(rng)

    def _place_info(self, rng: random.Random, domain: str):
        if rng.random() < self.name_probability[domain]:
            info = {"name": self._sample(rng, domain, "info", "name")}
            rows = self.db.query(domain, normalize_params(info))
            return (info, {}, rows) if rows else None
        slots = [s for s, q in self.info_inclusion[domain].items() if rng.random() < q]
        if not slots:
            return None
        info = {slot: self._sample(rng, domain, "info", slot) for slot in slots}
        rows = self.db.query(domain, normalize_params(info))
        if rows:
            return info, {}, rows
        for _ in range(100):  # the first constraints find nothing: redraw one value
            slot = rng.choice(slots)
            value = self._sample(rng, domain, "info", slot)
            if value == info[slot]:
                continue
            adjusted = {**info, slot: value}
            rows = self.db.query(domain, normalize_params(adjusted))
            if rows:
                return adjusted, info, rows
        return None

    def _train_info(self, rng: random.Random):
        if rng.random() < self.to_hub_probability:
            route = {"departure": self._from_stations.sample(rng), "destination": _HUB}
        else:
            route = {"departure": _HUB, "destination": self._to_stations.sample(rng)}
        route["day"] = self._sample(rng, "train", "info", "day")
        bound = "leaveAt" if rng.random() < self.leave_at_probability else "arriveBy"
        for _ in range(20):
            info = {**route, bound: self._sample(rng, "train", "info", bound)}
            rows = self.db.query("train", normalize_params(info))
            if rows:
                return info, {}, rows
        return None

    def _train_choice(self, info: dict[str, str], rows: tuple[int, ...]) -> int:
        """The train a traveller would pick: first to leave, or last to arrive. The train
        table repeats a few trainIDs; one repeated among `rows` would be ambiguous to book."""
        if "leaveAt" in info:
            ranked = sorted(rows, key=lambda i: parse_time(self.db.row("train", i)["leaveAt"]) or 0)
        else:
            ranked = sorted(rows, key=lambda i: -(parse_time(self.db.row("train", i)["arriveBy"]) or 0))
        ids = Counter(self.db.norm_id("train", i) for i in rows)
        return next((i for i in ranked if ids[self.db.norm_id("train", i)] == 1), ranked[0])

    def _book(self, rng: random.Random, domain: str) -> tuple[dict[str, str], dict[str, str]]:
        if domain not in BOOK_SLOTS or rng.random() >= self.model.book_probability(domain):
            return {}, {}
        book = {slot: self._sample(rng, domain, "book", slot) for slot in BOOK_SLOTS[domain]}
        fail_book: dict[str, str] = {}
        if rng.random() < FAIL_BOOK_PROBABILITY.get(domain, 0.0):
            slot = rng.choice(_FAIL_BOOK_SLOTS[domain])
            dist = self.value_dists[(domain, "book", slot)].without(book[slot])
            fail_book[slot] = dist.sample(rng)
        return book, fail_book

    def _reqt(self, rng: random.Random, domain: str, info: dict[str, str], entity_row: int, needed: bool) -> list[str]:
        row = self.db.row(domain, entity_row)
        candidates = {
            slot: p
            for slot, p in self.model.slot_inclusion[domain].get("reqt", {}).items()
            if slot not in info and str(row.get(slot, "")).strip().lower() not in _EMPTY_VALUES
        }
        for _ in range(50 if needed else 1):
            reqt = [slot for slot, p in candidates.items() if rng.random() < p]
            if reqt or not needed:
                return reqt
        return []


def fill_search_returns(scenario: Scenario, db: Database) -> None:
    """Set each search goal's returns to what serving gives the goal call itself."""
    env = ToolWOZEnv(scenario, db=db)
    for call in scenario.goal_calls:
        if call.intent == "search":
            record = env.execute_call(call.name, call.parameters)
            call.returns = record.result.content if record.result.ok else []


def generate_splits(
    db: Database,
    model: GoalModel,
    seed: int = DEFAULT_SEED,
    sizes: Mapping[str, int] = SPLIT_SIZES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, list[Scenario]]:
    """All toolwoz-synth splits (official-test is the first 450 of test)."""
    generator = SynthGenerator(db, model, seed)
    out = {}
    for split, count in sizes.items():
        report = (lambda done, s=split, n=count: progress(f"generating {s}", done, n)) if progress else None
        out[split] = generator.split(split, count, report)
        if progress:
            progress(f"generating {split}", count, count)
    return out
