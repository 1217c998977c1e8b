"""An SLA run's verdict: the evidence checks no statistics can overrule (nothing measured, every
request failed, the rate not offered, the server gone), the confidence judgement of
``sla_rules``, stability, and the regression against a baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_tfserving.sla_rules import SlaJudgement, SlaLimits, judge_run

if TYPE_CHECKING:
    from pytest_tfserving.load.result import LoadResult


@dataclass(frozen=True)
class SlaDecision:
    """Failures (empty and not inconclusive: PASS), the judgement behind them."""

    failures: list[str] = field(default_factory=list)
    judgement: SlaJudgement | None = None

    @property
    def inconclusive(self) -> bool:
        return not self.failures and self.judgement is not None and \
            self.judgement.verdict == "INCONCLUSIVE"

    @property
    def verdict(self) -> str:
        if self.failures:
            return "FAIL"
        return "INCONCLUSIVE" if self.inconclusive else "PASS"


def evidence_failures(r: LoadResult) -> list[str]:
    """What makes a run unusable as evidence, whatever its statistics say."""
    if r.aborted:
        return [f"the load stopped {r.aborted_at_s or 0:.1f} s in: {r.aborted}"]
    if not r.requests:
        return ["no request was measured (nothing was sent or answered in the measurement "
                f"windows): {r.generator_note or 'see the load log above'}; a gate cannot pass "
                "on no evidence"]
    if r.stats.ok == 0:
        codes = ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items()))
        first = "; ".join(f"{k}: {v}" for k, v in r.error_details.items())
        return [f"every request failed ({codes}; {first})"]
    if r.rate_not_offered:
        return [f"the load generator could not offer {r.spec.rate:g} req/s, so the server was "
                f"not tested at that rate: {r.generator_note}"]
    return []


def decide(r: LoadResult, limits: SlaLimits, require_stable: bool = False) -> SlaDecision:
    """The run's decision: evidence first, then the confidence judgement (a FAIL at confidence
    fails; undecided is INCONCLUSIVE), then stability when it is required."""
    failures = evidence_failures(r)
    if failures:
        return SlaDecision(failures)
    judgement = judge_run(r, limits)
    failures = list(judgement.failures)
    if failures and r.generator_behind:
        # Latency counts from the intended send time: a late generator only makes it worse.
        failures.append(f"(the generator itself was late: {r.generator_note})")
    if require_stable and not r.stable:
        failures.append(f"the measurement never became stable ({r.stability_reason})")
    return SlaDecision(failures, judgement)


def change_pct(new: float, old: float) -> float:
    return (new - old) / old * 100.0 if old > 0 else 0.0


def regression_failures(r: LoadResult, base: LoadResult, p99_regr: float,
                        qps_regr: float) -> list[str]:
    """The candidate against the baseline measured with the same load in the same session."""
    failures = []
    p99_change = change_pct(r.p99_ms, base.p99_ms)
    if p99_change > p99_regr:
        failures.append(f"p99 {r.p99_ms:.2f} ms is {p99_change:.1f}% above the baseline's "
                        f"{base.p99_ms:.2f} ms (limit +{p99_regr:g}%)")
    qps_change = change_pct(r.qps, base.qps)
    if -qps_change > qps_regr:
        failures.append(f"throughput {r.qps:.0f} req/s is {-qps_change:.1f}% below the "
                        f"baseline's {base.qps:.0f} req/s (limit -{qps_regr:g}%)")
    return failures
