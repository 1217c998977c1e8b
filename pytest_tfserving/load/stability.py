"""When is a measurement stable? perf_analyzer's rule, as a pure function.

Windows are measured one after another; the run is stable once the last ``count`` (3) consecutive
windows agree: for both the p99 latency and the achieved throughput, the largest of the three is at
most ``tolerance_pct`` % above the smallest. Partial windows (the run was stopped inside them) and
windows with no answer at all never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TOLERANCE_PCT = 10.0
DEFAULT_COUNT = 3


@dataclass(frozen=True)
class Verdict:
    stable: bool
    first: int  # index (into the sequence) of the first window of the stable run, or -1
    spread_pct: float  # the worst spread of the last ``count`` windows (p99 or qps), in %
    reason: str


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / min in %; infinite when the smallest is 0 and the largest is not."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return 0.0
    if lo <= 0:
        return float("inf")
    return (hi - lo) / lo * 100.0


def check(p99_ms: Sequence[float], qps: Sequence[float],
          tolerance_pct: float = DEFAULT_TOLERANCE_PCT, count: int = DEFAULT_COUNT,
          usable: Sequence[bool] | None = None) -> Verdict:
    """Is the tail of the series stable? ``usable[i]`` False excludes window i."""
    if len(p99_ms) != len(qps):
        raise ValueError(f"p99 and qps series differ in length ({len(p99_ms)} vs {len(qps)})")
    if tolerance_pct < 0:
        raise ValueError(f"tolerance_pct={tolerance_pct!r} must be >= 0")
    if count < 1:
        raise ValueError(f"count={count!r} must be >= 1")
    flags = list(usable) if usable is not None else [True] * len(p99_ms)
    indices = [i for i in range(len(p99_ms)) if flags[i]]
    if len(indices) < count:
        return Verdict(False, -1, float("inf"),
                       f"{len(indices)} usable window(s), {count} needed")
    tail = indices[-count:]
    if tail[-1] - tail[0] != count - 1:
        return Verdict(False, -1, float("inf"), "the last usable windows are not consecutive")
    latency = spread_pct([p99_ms[i] for i in tail])
    throughput = spread_pct([qps[i] for i in tail])
    worst = max(latency, throughput)
    if worst <= tolerance_pct:
        return Verdict(True, tail[0], worst,
                       f"last {count} windows agree within {worst:.1f}% (limit {tolerance_pct:g}%)")
    which = "p99" if latency >= throughput else "throughput"
    return Verdict(False, -1, worst,
                   f"{which} of the last {count} windows spread {worst:.1f}% "
                   f"(limit {tolerance_pct:g}%)")
