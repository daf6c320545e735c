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
import pickletools
from collections import Counter
from typing import Any

from pydantic import BaseModel

# The real goal_model.pkl is 39 KB (protocol 2: dicts, tuples, floats, strings and
# collections.Counter); anything far bigger is not it.
MAX_PICKLE_BYTES = 4 * 2**20
# Bound on the size of what the pickle builds, counting shared references as often as they
# are reached (the real one: about 5,000): a few hundred bytes can otherwise describe a tuple
# nested 40 deep whose halves are the same object, 2**40 leaves to hash or walk.
MAX_PICKLE_NODES = 200_000

# Opcodes that push one plain value (counted as one node).
_SCALAR_OPS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "NONE", "NEWTRUE", "NEWFALSE",
    "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET",
})  # fmt: skip
_FRAMING_OPS = frozenset({"PROTO", "FRAME", "STOP"})


def _counter(*args: Any) -> Counter:
    """collections.Counter as a pickle may call it: from one dict (its own reduce) or nothing."""
    if not args:
        return Counter()
    if len(args) == 1 and isinstance(args[0], dict):
        return Counter(args[0])
    raise pickle.UnpicklingError("goal model: Counter built from something other than a dict")


def check_pickle(raw: bytes) -> None:
    """Reject, before unpickling, a pickle that is too big, uses anything but plain data and
    Counter, or builds more than MAX_PICKLE_NODES nodes (shared references counted each time).

    The opcodes are read without building anything (pickletools), keeping only a node count
    per stack entry and memo slot, so a huge memo index or a nested-sharing bomb costs nothing.
    """
    if len(raw) > MAX_PICKLE_BYTES:
        raise ValueError(f"goal_model.pkl is {len(raw)} bytes; ConvLab's is about 39 KB")
    stack: list[Any] = []  # node counts; MARK entries are None
    memo: dict[int, int] = {}
    marks: list[int] = []
    last_global = None
    try:
        for op, arg, _pos in pickletools.genops(raw):
            name = op.name
            if name in _FRAMING_OPS:
                continue
            if name in _SCALAR_OPS:
                stack.append(1)
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "STACK_GLOBAL":
                    stack[-2:] = []
                last_global = arg if name == "GLOBAL" else "collections Counter"
                if name == "GLOBAL" and arg != "collections Counter":
                    raise ValueError(f"goal model may not reference {arg}")
                stack.append(1)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                index = len(memo) if name == "MEMOIZE" else int(arg)
                if index > len(raw):  # an index no real pickle of this size could need
                    raise ValueError("goal model pickle: memo index out of range")
                memo[index] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                size = 1 + sum(stack[-n:])
                stack[-n:] = [size]
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
                start = marks.pop()
                size = 1 + sum(stack[start:])
                stack[start:] = [size]
            elif name in ("APPEND", "SETITEM"):
                n = 1 if name == "APPEND" else 2
                added = sum(stack[-n:])
                stack[-n:] = []
                stack[-1] += added
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                start = marks.pop()
                added = sum(stack[start:])
                stack[start:] = []
                stack[-1] += added
            elif name == "REDUCE":
                if last_global != "collections Counter":
                    raise ValueError("goal model pickle calls something other than Counter")
                args = stack.pop()
                stack[-1] = args
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                stack[marks.pop():] = []
            elif name == "DUP":
                stack.append(stack[-1])
            else:
                raise ValueError(f"goal model pickle uses {name}, which plain data does not need")
            if stack and stack[-1] > MAX_PICKLE_NODES:
                raise ValueError(f"goal model pickle builds more than {MAX_PICKLE_NODES} values")
    except (IndexError, KeyError) as exc:
        raise ValueError("goal model pickle is malformed") from exc


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "Counter":
            return _counter
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
    """Parse ConvLab's pickle with a restricted unpickler and convert it. The pickle is
    checked first (`check_pickle`): size, the only class it may name, how much it builds."""
    check_pickle(raw)
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
