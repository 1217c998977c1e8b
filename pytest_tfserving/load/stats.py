"""Latency statistics from HDR histograms (microseconds): percentiles, rates, errors, p99 CI.

Pure: no gRPC, no TensorFlow. ``WindowStats`` is one measurement window of the run (merged over
worker processes); ``LatencyStats`` is any merged histogram with its counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

HIST_MIN_US, HIST_MAX_US, HIST_DIGITS = 1, 600_000_000, 3
Z_95 = 1.959963984540054
REPORTED_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.add(HdrHistogram.decode(encoded))
    return hist


def merge(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    out = new_histogram()
    for hist in histograms:
        if hist.get_total_count():
            out.add(hist)
    return out


def percentile_ms(hist: HdrHistogram, percentile: float) -> float:
    """The latency at ``percentile`` (0-100] in ms; 0.0 for an empty histogram."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile!r} is out of range; use a value in (0, 100]")
    if hist.get_total_count() == 0:
        return 0.0
    return float(hist.get_value_at_percentile(percentile)) / 1000.0


def percentile_ci_ms(hist: HdrHistogram, percentile: float,
                     z: float = Z_95) -> tuple[float, float]:
    """A distribution-free confidence interval for a percentile (order-statistic ranks).

    With n samples the rank of the p-quantile is binomial(n, p): its interval is
    ``n p +- z sqrt(n p (1 - p))``; the latencies at those ranks bound the percentile. Few samples
    give a wide interval (the upper rank falls past the last sample: the max).
    """
    n = hist.get_total_count()
    if n == 0:
        return 0.0, 0.0
    p = percentile / 100.0
    half = z * math.sqrt(n * p * (1 - p))
    lo_rank = max(1.0, n * p - half)
    hi_rank = min(float(n), n * p + half + 1)
    lo = float(hist.get_value_at_percentile(100.0 * lo_rank / n)) / 1000.0
    hi = float(hist.get_value_at_percentile(100.0 * hi_rank / n)) / 1000.0
    return lo, hi


@dataclass
class LatencyStats:
    """Successful requests' latency plus what happened to every request in the same span."""

    hist: HdrHistogram
    span_s: float  # measured time (sum of the windows' spans)
    sent: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)  # gRPC code name -> count

    @classmethod
    def empty(cls) -> LatencyStats:
        return cls(new_histogram(), 0.0, 0, 0, {})

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        done = self.ok + self.error_count
        return self.error_count / done if done else 0.0

    @property
    def qps(self) -> float:
        """Achieved throughput: successful answers per second of measured time."""
        return self.ok / self.span_s if self.span_s > 0 else 0.0

    @property
    def offered_qps(self) -> float:
        return self.sent / self.span_s if self.span_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        return percentile_ms(self.hist, p)

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def p999_ms(self) -> float:
        return self.percentile(99.9)

    @property
    def max_ms(self) -> float:
        return float(self.hist.get_max_value()) / 1000.0 if self.count else 0.0

    @property
    def mean_ms(self) -> float:
        return float(self.hist.get_mean_value()) / 1000.0 if self.count else 0.0

    def p99_ci_ms(self) -> tuple[float, float]:
        return percentile_ci_ms(self.hist, 99.0)

    def merged_with(self, other: LatencyStats) -> LatencyStats:
        errors = dict(self.errors)
        for code, n in other.errors.items():
            errors[code] = errors.get(code, 0) + n
        return LatencyStats(merge([self.hist, other.hist]), self.span_s + other.span_s,
                            self.sent + other.sent, self.ok + other.ok, errors)

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.p99_ci_ms()
        return {
            "p50_ms": round(self.p50_ms, 3), "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3), "p99_9_ms": round(self.p999_ms, 3),
            "max_ms": round(self.max_ms, 3), "mean_ms": round(self.mean_ms, 3),
            "p99_ci95_ms": [round(lo, 3), round(hi, 3)],
            "qps": round(self.qps, 1), "offered_qps": round(self.offered_qps, 1),
            "requests": self.sent, "ok": self.ok, "errors": dict(self.errors),
            "error_rate": round(self.error_rate, 6), "span_s": round(self.span_s, 3),
        }


@dataclass
class WindowStats:
    """One measurement window, merged over the worker processes."""

    index: int
    stats: LatencyStats
    lag: HdrHistogram  # how late the generator sent requests (open loop)
    partial: bool = False
    service: HdrHistogram | None = None  # latency from the actual send, successful requests

    @property
    def lag_p99_ms(self) -> float:
        return percentile_ms(self.lag, 99) if self.lag.get_total_count() else 0.0

    def summary(self) -> dict[str, Any]:
        return {"window": self.index, "p99_ms": round(self.stats.p99_ms, 3),
                "qps": round(self.stats.qps, 1), "errors": self.stats.error_count,
                "send_lag_p99_ms": round(self.lag_p99_ms, 3), "partial": self.partial}


def hist_count_over(hist: HdrHistogram, ms: float) -> int:
    """Recorded latencies above ``ms`` (a value counts when its whole HDR bucket, 0.1 % wide,
    lies above: one recorded within 0.1 % of ``ms`` does not count)."""
    limit_us = math.floor(ms * 1000.0)
    if limit_us < 0:
        return int(hist.get_total_count())
    if limit_us >= HIST_MAX_US:
        return 0
    first_over = hist.get_counts_array_index(limit_us) + 1  # indexes grow with the value
    return int(sum(hist.counts[first_over:hist.counts_len]))


def count_over(windows: Iterable[WindowStats], ms: float) -> tuple[int, int]:
    """(OK requests slower than ``ms``, OK requests) over ``windows``: the counts a confidence
    rule on "at most x % of requests over the target" needs. Failed requests are in neither
    (they have no latency); read ``window.stats.errors`` for them."""
    over = total = 0
    for window in windows:
        over += hist_count_over(window.stats.hist, ms)
        total += window.stats.count
    return over, total


def combine(windows: Iterable[WindowStats]) -> LatencyStats:
    out = LatencyStats.empty()
    for window in windows:
        out = out.merged_with(window.stats)
    return out
