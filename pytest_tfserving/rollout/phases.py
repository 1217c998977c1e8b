"""One load's requests split by time into the rollout's phases, with figures per phase.

``before``: sent before the candidate was placed; ``swap``: from then until the baseline was
seen unloaded (END) and the candidate's first answers were sent, at least the swap window
(``swap_end``); ``after``: the rest (the candidate alone, warm). A request belongs to the phase
of its intended send time, and its latency counts from that time (open loop).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.load.timeline import Timeline

PHASES = ("before", "swap", "after")
FIRST_ANSWERS = 3  # the candidate's first answers, shown apart: a cold version shows there


@dataclass(frozen=True)
class Request:
    """One request of the load: when it was meant to leave (monotonic s), how long it took
    (ms), its gRPC status name ("OK", "UNAVAILABLE", ...) and the version that answered."""

    t_s: float
    latency_ms: float
    code: str
    version: int | None


def percentile(sorted_ms: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_ms:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_ms)))
    return float(sorted_ms[min(rank, len(sorted_ms)) - 1])


@dataclass(frozen=True)
class PhaseStats:
    name: str
    start_s: float  # relative to the load's first request
    end_s: float
    requests: int
    ok: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    versions: dict[str, int]  # answering version -> answers ("unknown" when not reported)
    latencies_ms: tuple[float, ...] = field(default=(), repr=False)  # answered, ascending

    def over(self, limit_ms: float) -> int:
        """Answered requests slower than ``limit_ms``."""
        return len(self.latencies_ms) - bisect.bisect_right(self.latencies_ms, limit_ms)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "requests": self.requests, "ok": self.ok, "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "max_ms": round(self.max_ms, 3),
                "errors": dict(self.errors), "versions": dict(self.versions)}

    def line(self) -> str:
        versions = ", ".join(f"v{k} x{v}" for k, v in sorted(self.versions.items())) or "none"
        errors = ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())) or "0"
        return (f"{self.name}: {self.requests} requests, p50 {self.p50_ms:.2f} ms, p99 "
                f"{self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms, errors {errors}, answered by "
                f"{versions}")


def phase_stats(name: str, requests: Iterable[Request], start_s: float,
                end_s: float) -> PhaseStats:
    chosen = list(requests)
    ok = sorted(r.latency_ms for r in chosen if r.code == "OK")
    errors = Counter(r.code for r in chosen if r.code != "OK")
    versions = Counter("unknown" if r.version is None else str(r.version)
                       for r in chosen if r.code == "OK")
    return PhaseStats(name, start_s, end_s, len(chosen), len(ok), percentile(ok, 50),
                      percentile(ok, 99), ok[-1] if ok else 0.0, dict(errors), dict(versions),
                      tuple(ok))


def swap_end(requests: Sequence[Request], placed_at: float, swapped_at: float | None,
             candidate: int, min_window_s: float = 0.0) -> float | None:
    """Where the swap phase ends: the latest of when the baseline was seen unloaded, when the
    candidate's first answers (its cold start) were sent, and ``min_window_s`` after placing
    the candidate (what follows a swap right after it, an unload's work, belongs to it, and its
    p99 rests on enough requests); None when the swap never ended."""
    if swapped_at is None:
        return None
    end = max(swapped_at, placed_at + min_window_s)
    firsts = answered_by(requests, candidate, since=placed_at)
    if len(firsts) < FIRST_ANSWERS:
        return end
    return max(end, math.nextafter(firsts[FIRST_ANSWERS - 1].t_s, math.inf))


def split(requests: Sequence[Request], placed_at: float, end: float | None,
          origin: float) -> dict[str, PhaseStats]:
    """Phases by intended send time; ``end`` (``swap_end``) None: the swap never ended (no
    ``after``). Times are monotonic seconds; ``origin`` (the load's start) makes them relative."""
    stop = end if end is not None else float("inf")
    last = max((r.t_s for r in requests), default=origin)
    bounds = {"before": (float("-inf"), placed_at), "swap": (placed_at, stop),
              "after": (stop, float("inf"))}
    out: dict[str, PhaseStats] = {}
    for name in PHASES:
        lo, hi = bounds[name]
        if name == "after" and end is None:
            continue
        chosen = [r for r in requests if lo <= r.t_s < hi]
        out[name] = phase_stats(name, chosen, max(lo, origin) - origin, min(hi, last) - origin)
    return out


def from_timeline(timeline: Timeline, start_at: float) -> list[Request]:
    """The load's timeline as requests in monotonic seconds (``start_at``: the load's start)."""
    return [Request(start_at + float(t), float(ms), str(code), None if v < 0 else int(v))
            for t, ms, code, v in zip(timeline.intended_s, timeline.latency_ms, timeline.code,
                                      timeline.version, strict=True)]


def first_answers(requests: Sequence[Request], version: int,
                  count: int = FIRST_ANSWERS) -> list[float]:
    """Latencies (ms) of the first ``count`` answers by ``version``, in send order."""
    return [r.latency_ms for r in answered_by(requests, version)[:count]]


def answered_by(requests: Sequence[Request], version: int,
                since: float = float("-inf")) -> list[Request]:
    """The requests ``version`` answered (OK) that were sent at ``since`` or later, in send
    order."""
    return sorted((r for r in requests if r.code == "OK" and r.version == version
                   and r.t_s >= since), key=lambda r: r.t_s)
