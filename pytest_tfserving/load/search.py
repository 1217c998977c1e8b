"""``max_qps``: the highest open-loop rate whose p99 stays within a target (binary search).

Each trial is a short open-loop run at a fixed rate, judged by the SLA gate's rules
(``sla_rules.judge``): a rate passes when, at the chosen confidence, the true p99 is within target,
the error rate within its limit and the server answered at least ``ANSWERED_MIN_SHARE`` of the
requests sent, and the generator sent at least 95 % of its schedule. A trial the rules cannot
decide (too few requests) counts as failing, and its line says so. The search doubles
the rate from ``lo`` until a rate fails (or ``hi``), then bisects until the interval is within
``precision`` (relative).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load.result import LoadResult
from pytest_tfserving.sla_rules import DEFAULT_CONFIDENCE, SlaLimits, check_confidence, judge_run


@dataclass(frozen=True)
class Trial:
    rate: float
    passed: bool
    p99_ms: float
    qps: float
    error_rate: float
    reason: str
    verdict: str = ""  # the SLA rules' PASS / FAIL / INCONCLUSIVE (INCONCLUSIVE counts as failing)

    def as_dict(self) -> dict[str, Any]:
        return {"rate": round(self.rate, 1), "passed": self.passed,
                "p99_ms": round(self.p99_ms, 3), "qps": round(self.qps, 1),
                "error_rate": round(self.error_rate, 6), "reason": self.reason,
                "verdict": self.verdict}


@dataclass
class MaxQps:
    p99_ms: float  # the target
    rate: float  # highest passing rate found (0 when even ``lo`` failed)
    trials: list[Trial] = field(default_factory=list)
    results: list[LoadResult] = field(default_factory=list)  # for latency-vs-throughput plots
    confidence: float = DEFAULT_CONFIDENCE

    def headroom(self, needed_qps: float) -> float:
        """rate / needed: 1.5 means 50 % more than needed can be served within the target."""
        return self.rate / needed_qps if needed_qps > 0 else float("inf")

    def summary(self, needed_qps: float | None = None) -> str:
        text = (f"max open-loop rate with p99 <= {self.p99_ms:g} ms: {self.rate:.0f} req/s "
                f"({len(self.trials)} trials)")
        if needed_qps:
            text += f"; headroom {self.headroom(needed_qps):.2f}x over {needed_qps:g} req/s"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"p99_target_ms": self.p99_ms, "max_qps": round(self.rate, 1),
                "trials": [t.as_dict() for t in self.trials], "confidence": self.confidence}


def judge(result: LoadResult, p99_ms: float, max_error_rate: float,
          confidence: float = DEFAULT_CONFIDENCE) -> Trial:
    """One trial by the SLA gate's rules; undecided counts as failing (the line says so)."""
    rate = result.spec.rate
    reasons = []
    # A late generator only inflates the measured latency, so it cannot make a rate pass
    # wrongly; a rate it could not offer at all was not tested.
    if result.rate_not_offered:
        reasons.append(f"generator sent only {result.sent_share:.0%} of the schedule")
    verdict = judge_run(result, SlaLimits(latency_ms=p99_ms, max_error_rate=max_error_rate,
                                          confidence=confidence,
                                          stability_pct=result.spec.stability_pct))
    reasons += verdict.failures
    # Proving a 0.1 % error rate takes ~3000 clean requests, more than a short trial at a low
    # rate sends: for the search, errors fail a rate only when they are over the limit at
    # confidence; the latency and the answered share must be decided.
    undecided = [c.name for c in verdict.criteria if c.verdict == "UNDECIDED"
                 and c.name != "errors"]
    if undecided and not verdict.failures:
        reasons.append(f"undecided at {confidence * 100:g} % confidence ({', '.join(undecided)}"
                       f"), counts as failing: {verdict.need_text()}")
    return Trial(rate, not reasons, result.p99_ms, result.qps, result.error_rate,
                 "; ".join(reasons) or "ok", verdict.verdict)


def max_qps(run: Callable[[float], LoadResult], p99_ms: float, lo: float = 50.0,
            hi: float = 20_000.0, precision: float = 0.05, max_error_rate: float = 0.001,
            max_trials: int = 14, confidence: float = DEFAULT_CONFIDENCE) -> MaxQps:
    """Binary search on the offered rate; ``run(rate)`` performs one trial."""
    if not p99_ms > 0:
        raise ConfigError(f"max_qps(p99_ms={p99_ms!r}): the p99 target must be > 0 ms")
    if not 0 < lo < hi:
        raise ConfigError(f"max_qps(lo={lo!r}, hi={hi!r}): need 0 < lo < hi (req/s)")
    if not 0 < precision < 1:
        raise ConfigError(f"max_qps(precision={precision!r}): give a fraction in (0, 1)")
    check_confidence(confidence)
    out = MaxQps(p99_ms, 0.0, confidence=confidence)

    def attempt(rate: float) -> bool:
        result = run(rate)
        trial = judge(result, p99_ms, max_error_rate, confidence)
        out.trials.append(trial)
        out.results.append(result)
        return trial.passed

    good, bad = 0.0, hi
    rate = lo
    while len(out.trials) < max_trials:  # grow until a rate fails
        if attempt(rate):
            good = rate
            if rate >= hi:
                break
            rate = min(hi, rate * 2)
        else:
            bad = rate
            break
    while good and bad < hi + 1 and len(out.trials) < max_trials and \
            (bad - good) / good > precision:
        mid = (good + bad) / 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    out.rate = good
    return out
