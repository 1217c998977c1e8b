"""The shipped config keeps its place unless a challenger beats it reliably.

One confirmation each is one noisy figure each: on a shared machine the same config measures
+-30 % from one minute to the next. So the top confirmed leader and the shipped (current) config
are run again and compared pair by pair (each pair measured back to back, so a noisy minute hits
both alike; who runs first alternates, so a second run's advantage cancels out). The leader is
recommended only when it won every pair and its median QPS ratio is above ``1 + tie``, over at
least ``MIN_PAIRS`` pairs; otherwise the shipped config stays the recommendation and the report
says why.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.tune.search import Tried

MIN_PAIRS = 2  # one pair is one coin toss on a noisy machine
MAX_PAIRS = 3


@dataclass(frozen=True)
class Duel:
    """The leader (challenger) against the shipped config (incumbent), pair by pair."""

    challenger: Tried
    incumbent: Tried
    ratios: tuple[float, ...]  # challenger QPS / incumbent QPS per pair
    tie: float
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0

    @property
    def challenger_wins(self) -> bool:
        return (len(self.ratios) >= MIN_PAIRS and min(self.ratios) > 1.0
                and self.median > 1.0 + self.tie)

    def verdict(self) -> str:
        pairs = ", ".join(f"{r:.2f}" for r in self.ratios)
        if self.challenger_wins:
            return (f"{self.challenger.candidate.label()} beat the shipped config in every one "
                    f"of {len(self.ratios)} back-to-back pairs (QPS ratios {pairs}; median "
                    f"{self.median:.2f})")
        why = self.note or (f"QPS ratios {pairs} over {len(self.ratios)} back-to-back pairs: "
                            f"not better in every pair by more than {self.tie:.0%}")
        return (f"{self.challenger.candidate.label()} did not reliably beat the shipped config "
                f"({why}); the shipped config stays the recommendation")

    def as_dict(self) -> dict[str, Any]:
        return {"challenger": self.challenger.candidate.label(),
                "incumbent": self.incumbent.candidate.label(),
                "ratios": [round(r, 3) for r in self.ratios], "median": round(self.median, 3),
                "challenger_wins": self.challenger_wins, "verdict": self.verdict()}


def _ratio(a: Tried, b: Tried) -> float:
    if not b.result.qps:
        return float("inf") if a.result.qps else 1.0
    return a.result.qps / b.result.qps


def duel(leader: Tried, current: Tried, rerun: Callable[[Tried], Tried | None],
         tie: float) -> Duel:
    """Pairs after the confirmations (the first pair): ``rerun`` runs a config again at full
    length, or returns None when the budget has no room for it."""
    ratios = [_ratio(leader, current)]
    note = ""
    while len(ratios) < MAX_PAIRS:
        # the confirmations ran the leader first; later pairs alternate who runs first, so a
        # second run's advantage (measured: ~10 % for the same config twice) cancels out
        first, second = (current, leader) if len(ratios) % 2 else (leader, current)
        again_first = rerun(first)
        again_second = rerun(second) if again_first is not None else None
        if again_first is None or again_second is None:
            note = (f"the budget allowed {len(ratios)} pair(s), {MIN_PAIRS} are needed to "
                    "recommend a change; raise --tfs-tune-budget") \
                if len(ratios) < MIN_PAIRS else ""
            break
        again_leader, again_current = ((again_second, again_first) if first is current
                                       else (again_first, again_second))
        ratios.append(_ratio(again_leader, again_current))
        if min(ratios) <= 1.0:  # lost a pair: it cannot win any more
            break
    return Duel(leader, current, tuple(ratios), tie, note)
