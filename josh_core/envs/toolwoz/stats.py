"""What a set of scenarios looks like (`josh toolwoz stats`), beside what the goal model expects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel

from josh_core.envs.toolwoz.goal_model import GoalModel
from josh_core.envs.toolwoz.types import DOMAINS, Scenario


class DomainStats(BaseModel):
    goals: int = 0  # scenarios with a goal in this domain
    book_share: float = 0.0  # of those, the share that books
    fail_info_share: float = 0.0  # share whose first constraints find nothing
    fail_book_share: float = 0.0  # of the booking goals, the share whose first booking fails
    name_share: float = 0.0  # share that asks for an entity by name
    info_inclusion: dict[str, float] = {}  # slot -> share of goals constraining it
    reqt_inclusion: dict[str, float] = {}  # slot -> share of goals requesting it


class SplitStats(BaseModel):
    split: str
    scenarios: int
    single_domain: int
    multi_domain: int
    combinations: dict[str, int]  # "restaurant > train" (in the user's order) -> count
    goals_per_scenario: dict[str, int]  # number of goal calls -> scenarios
    mean_goals: float
    fail_info_share: float  # of all domain goals
    fail_book_share: float  # of all booking goals
    domains: dict[str, DomainStats]


def combination_key(domains: Iterable[str]) -> str:
    return " > ".join(domains)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def compute_stats(scenarios: list[Scenario], split: str = "") -> SplitStats:
    combos = Counter(combination_key(s.domains) for s in scenarios)
    goals = Counter(len(s.goal_calls) for s in scenarios)
    domains: dict[str, DomainStats] = {}
    all_goals = all_fail_info = all_books = all_fail_books = 0
    for domain in DOMAINS:
        goals_here = [s.goal[domain] for s in scenarios if domain in s.goal]
        n = len(goals_here)
        books = [g for g in goals_here if g.book]
        info_counts = Counter(slot for g in goals_here for slot in g.info)
        reqt_counts = Counter(slot for g in goals_here for slot in g.reqt)
        fail_info = sum(1 for g in goals_here if g.fail_info)
        fail_book = sum(1 for g in books if g.fail_book)
        domains[domain] = DomainStats(
            goals=n,
            book_share=_share(len(books), n),
            fail_info_share=_share(fail_info, n),
            fail_book_share=_share(fail_book, len(books)),
            name_share=_share(info_counts.get("name", 0), n),
            info_inclusion={slot: _share(c, n) for slot, c in sorted(info_counts.items())},
            reqt_inclusion={slot: _share(c, n) for slot, c in sorted(reqt_counts.items())},
        )
        all_goals += n
        all_fail_info += fail_info
        all_books += len(books)
        all_fail_books += fail_book
    single = sum(1 for s in scenarios if len(s.domains) == 1)
    return SplitStats(
        split=split,
        scenarios=len(scenarios),
        single_domain=single,
        multi_domain=len(scenarios) - single,
        combinations=dict(combos.most_common()),
        goals_per_scenario={str(k): v for k, v in sorted(goals.items())},
        mean_goals=_share(sum(len(s.goal_calls) for s in scenarios), len(scenarios)),
        fail_info_share=_share(all_fail_info, all_goals),
        fail_book_share=_share(all_fail_books, all_books),
        domains=domains,
    )


class ExpectedStats(BaseModel):
    """The goal model's numbers for the same quantities (ToolWOZ domains only)."""

    combinations: dict[str, float]
    single_domain_share: float
    book_share: dict[str, float]
    name_share: dict[str, float]
    info_inclusion: dict[str, dict[str, float]]


def expected_stats(model: GoalModel) -> ExpectedStats:
    combos = model.combination_distribution(DOMAINS)
    return ExpectedStats(
        combinations={combination_key(c): p for c, p in sorted(combos.items(), key=lambda kv: -kv[1])},
        single_domain_share=sum(p for c, p in combos.items() if len(c) == 1),
        book_share={d: model.book_probability(d) for d in DOMAINS},
        name_share={d: model.slot_inclusion[d]["info"].get("name", 0.0) for d in DOMAINS},
        info_inclusion={d: dict(model.slot_inclusion[d]["info"]) for d in DOMAINS},
    )
