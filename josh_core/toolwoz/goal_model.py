"""ConvLab's MultiWOZ goal model: read once from its pickle (safely), kept as JSON.

`goal_model.pkl` is a 4-tuple built by ConvLab's `GoalGenerator._build_goal_model` from the
MultiWOZ corpus:
0. slot inclusion: domain -> {info, reqt, book} -> slot -> P(slot in a goal of that domain)
1. slot values: domain -> {info, book} -> slot -> {value: probability}
2. domain combinations: ordered tuple of domains -> probability
3. booking share: domain -> (dialogues that book in that domain) / (all dialogues)

Element 3 is not a booking-failure rate: it equals P(domain in the combination) ×
P(book | domain) (restaurant 0.2549 vs 0.4434 × 0.5672, hotel 0.2577 vs 0.4021 × 0.6410,
train 0.1998 vs 0.3925 × 0.5092), and the builder computes `book_cnt[domain] / len(dialogs)`.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from typing import Any

from pydantic import BaseModel

# Data types only: nothing in here can run code while unpickling.
_ALLOWED_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes"}
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "Counter":
            return Counter
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"goal model may not reference {module}.{name}")


class GoalModel(BaseModel):
    """The goal statistics in JSON-friendly form (tuples of domains become lists)."""

    slot_inclusion: dict[str, dict[str, dict[str, float]]]
    slot_values: dict[str, dict[str, dict[str, dict[str, float]]]]
    domain_combinations: list[tuple[list[str], float]]
    booking_share: dict[str, float]

    def combination_distribution(self, domains: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Combinations using only `domains` (others dropped, empty dropped), renormalised."""
        kept = {
            tuple(combo): p
            for combo, p in self.domain_combinations
            if combo and all(d in domains for d in combo)
        }
        total = sum(kept.values())
        return {combo: p / total for combo, p in kept.items()}

    def book_probability(self, domain: str) -> float:
        """P(the goal books | the domain is in the goal) = inclusion of its booking slots."""
        book = self.slot_inclusion.get(domain, {}).get("book", {})
        return max(book.values(), default=0.0)

    def values(self, domain: str, intent: str, slot: str) -> dict[str, float]:
        return self.slot_values[domain][intent][slot]


def goal_model_from_pickle(raw: bytes) -> GoalModel:
    """Parse ConvLab's pickle with a restricted unpickler and convert it."""
    loaded = _RestrictedUnpickler(io.BytesIO(raw)).load()
    if not (isinstance(loaded, tuple) and len(loaded) >= 4):
        raise ValueError("goal_model.pkl is not ConvLab's 4-tuple goal model")
    inclusion, values, combinations, booking = loaded[:4]

    slot_values: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for domain, intents in values.items():
        for intent, slots in intents.items():
            for slot, dist in slots.items():
                if isinstance(dist, dict):  # reqt entries are bare probabilities, not values
                    slot_values.setdefault(domain, {}).setdefault(intent, {})[slot] = {
                        str(v): float(p) for v, p in dist.items()
                    }
    return GoalModel(
        slot_inclusion={
            domain: {
                intent: {slot: float(p) for slot, p in slots.items()}
                for intent, slots in intents.items()
            }
            for domain, intents in inclusion.items()
        },
        slot_values=slot_values,
        domain_combinations=[
            (list(combo), float(p))
            for combo, p in sorted(combinations.items(), key=lambda item: -item[1])
        ],
        booking_share={domain: float(p) for domain, p in booking.items()},
    )
