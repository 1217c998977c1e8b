"""One SLA criterion at a confidence: a binomial test on a share of bad requests, a t bound on
throughput over windows; pure counts in, PASS / FAIL / UNDECIDED out (see ``sla_rules``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_tfserving import binomial
from pytest_tfserving.errors import ConfigError

ANSWERED_MIN_SHARE = 0.95  # open loop: the server must answer this share of the requests sent
DEFAULT_CONFIDENCE = 0.95
NEVER = 10**9  # more requests than this to decide is "cannot decide at this share"

Criterion = Literal["PASS", "FAIL", "UNDECIDED"]



def check_confidence(confidence: float) -> float:
    if not 0.5 <= confidence < 1.0:
        raise ConfigError(f"confidence {confidence!r} is out of range; give a probability in "
                          "[0.5, 1), e.g. 0.95")
    return confidence


# --- one criterion: a share of bad requests -----------------------------------------------------

@dataclass(frozen=True)
class ShareTest:
    """``bad`` of ``trials`` requests against a largest allowed share ``limit``."""

    verdict: Criterion
    trials: int
    bad: int
    limit: float
    confidence: float
    p_within: float  # P[X <= bad | trials, limit]: small means the true share is below the limit
    p_over: float  # P[X >= bad | trials, limit]: small means the true share is above it
    need_more: int | None  # more trials the same share needs to decide (0: decided; None: never)

    @property
    def share(self) -> float:
        return self.bad / self.trials if self.trials else 0.0


def _decides(trials: int, bad: int, limit: float, confidence: float) -> Criterion:
    alpha = 1.0 - confidence
    if binomial.at_least(bad, trials, limit) <= alpha:
        return "FAIL"
    if binomial.at_most(bad, trials, limit) <= alpha:
        return "PASS"
    return "UNDECIDED"


def _trials_to_decide(trials: int, bad: int, limit: float, confidence: float) -> int | None:
    """The smallest n' > trials at which round(share * n') bad requests decide (None: beyond
    ``NEVER``). The search doubles then bisects; the rounding makes the answer approximate."""
    share = bad / trials if trials else 0.0
    if share == limit:
        return None

    def decided(n: int) -> bool:
        return _decides(n, round(share * n), limit, confidence) != "UNDECIDED"

    lo, hi = trials, max(1, 2 * trials)
    while not decided(hi):
        if hi > NEVER:
            return None
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi


def share_test(trials: int, bad: int, limit: float,
               confidence: float = DEFAULT_CONFIDENCE) -> ShareTest:
    """Is the true share of bad requests within ``limit``? (limit 0: no bad one allowed, judged
    on the count; limit >= 1: anything passes.)"""
    check_confidence(confidence)
    if trials < 0 or not 0 <= bad <= max(trials, 0):
        raise ValueError(f"share_test(trials={trials!r}, bad={bad!r}): need 0 <= bad <= trials")
    if not limit >= 0:
        raise ValueError(f"share_test(limit={limit!r}): the limit must be a share >= 0")
    p_within = binomial.at_most(bad, trials, min(limit, 1.0))
    p_over = binomial.at_least(bad, trials, min(limit, 1.0))
    if limit >= 1.0 or (limit == 0.0 and trials):
        verdict: Criterion = "PASS" if limit >= 1.0 or bad == 0 else "FAIL"
        return ShareTest(verdict, trials, bad, limit, confidence, p_within, p_over, 0)
    verdict = _decides(trials, bad, limit, confidence) if trials else "UNDECIDED"
    need = 0
    if verdict == "UNDECIDED":
        to_decide = _trials_to_decide(trials, bad, limit, confidence)
        need = to_decide - trials if to_decide is not None else -1
    return ShareTest(verdict, trials, bad, limit, confidence, p_within, p_over,
                     None if need < 0 else need)


def percentile_test(answered: int, over: int, percentile: float,
                    confidence: float = DEFAULT_CONFIDENCE) -> ShareTest:
    """Is the true ``percentile`` (e.g. 99) within the target, given ``over`` of ``answered``
    requests slower than it?"""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile!r} is out of range; use a value in (0, 100]")
    return share_test(answered, over, round(1.0 - percentile / 100.0, 12), confidence)


# --- closed loop: achieved throughput over windows ----------------------------------------------

@dataclass(frozen=True)
class RateTest:
    """Achieved req/s per window against the required req/s (one-sided t bounds)."""

    verdict: Criterion
    windows: int
    mean_qps: float
    lower_qps: float  # the one-sided lower bound at ``confidence`` (mean with < 2 windows)
    upper_qps: float
    required_qps: float
    confidence: float
    need_more: int | None  # more windows the same mean and spread need (0: decided)


def _half_width(sd: float, m: int, confidence: float) -> float:
    return binomial.student_t_quantile(confidence, m - 1) * sd / math.sqrt(m)


def throughput_test(window_qps: Sequence[float], required_qps: float,
                    confidence: float = DEFAULT_CONFIDENCE) -> RateTest:
    """PASS when the lower bound of the mean window throughput is >= ``required_qps``, FAIL when
    the upper bound is below it; with fewer than 2 windows nothing is decided."""
    check_confidence(confidence)
    m = len(window_qps)
    mean = sum(window_qps) / m if m else 0.0
    if m < 2:
        return RateTest("UNDECIDED", m, mean, mean, mean, required_qps, confidence, 2 - m)
    sd = math.sqrt(sum((x - mean) ** 2 for x in window_qps) / (m - 1))
    half = _half_width(sd, m, confidence)
    verdict: Criterion = ("PASS" if mean - half >= required_qps else
                          "FAIL" if mean + half < required_qps else "UNDECIDED")
    need: int | None = 0
    if verdict == "UNDECIDED":
        gap = abs(mean - required_qps)
        need = None
        for more in range(1, 10_000):
            if gap > 0 and _half_width(sd, m + more, confidence) < gap:
                need = more
                break
    return RateTest(verdict, m, mean, mean - half, mean + half, required_qps, confidence, need)
