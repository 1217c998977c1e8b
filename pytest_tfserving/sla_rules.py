"""The SLA's judging rules, shared by the SLA gate and the max_qps search: verdicts at a confidence.

As MLPerf LoadGen's early stopping does for its latency bound, a criterion is decided only when a
one-sided test says so at the chosen confidence ``c`` (default 0.95). Each "at most a share ``q`` of
requests may be bad" criterion is a binomial test on ``bad`` of ``n`` requests:

- PASS when P[X <= bad | n, q] <= 1 - c (the true share is below ``q`` at confidence ``c``),
- FAIL when P[X >= bad | n, q] <= 1 - c (the true share is above ``q`` at confidence ``c``),
- UNDECIDED otherwise, with the smallest n' at which the same observed share would decide.

The p-th percentile within ``T`` ms means at most ``1 - p/100`` of the answered requests over ``T``;
the error rate is errors over finished requests (a limit of 0 is judged on the count: any error
fails); open loop, the share answered is judged against ``ANSWERED_MIN_SHARE`` of the requests sent;
closed loop, the achieved req/s against the required one by a one-sided Student t bound over the
windows' throughputs. The load's stability rule (perf_analyzer's, ``load/stability.py``) decides
which windows count: a stable run is judged on the windows that agree with its last ones (an
earlier regime is not pooled in, and the message says so); an unstable run is judged twice, on
all its windows and on its last ``stability.DEFAULT_COUNT`` alone, and gets the worse verdict,
with a note saying so: an unstable run never passes silently. The overall verdict is FAIL when a
criterion fails, else INCONCLUSIVE when one is undecided (with the requests and seconds more that
would decide it at the measured shares and rate), else PASS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load import stability
from pytest_tfserving.load.stats import LatencyStats, WindowStats, count_over, new_histogram
from pytest_tfserving.sla_criteria import (
    ANSWERED_MIN_SHARE,
    DEFAULT_CONFIDENCE,
    Criterion,
    RateTest,
    ShareTest,
    check_confidence,
    percentile_test,
    share_test,
    throughput_test,
)

Overall = Literal["PASS", "FAIL", "INCONCLUSIVE"]

__all__ = ["ANSWERED_MIN_SHARE", "DEFAULT_CONFIDENCE", "RateTest", "ShareTest", "percentile_test",
           "share_test", "throughput_test", "check_confidence", "SlaLimits", "SlaJudgement",
           "CriterionResult", "judge", "judge_run", "MeasuredRun", "stop_when", "criteria",
           "judged_windows"]


# --- the HDR counts -----------------------------------------------------------------------------

def judged_windows(windows: Sequence[WindowStats]) -> list[WindowStats]:
    """The windows a verdict counts: the complete ones (all, when none is complete)."""
    return [w for w in windows if not w.partial] or list(windows)


# --- the SLA: every criterion, stability, the verdict -------------------------------------------

@dataclass(frozen=True)
class SlaLimits:
    """What the SLA asks of a run, and how sure a verdict must be."""

    latency_ms: float  # the percentile's target (--tfs-sla-p99-ms)
    percentile: float = 99.0
    max_error_rate: float = 0.001
    min_qps: float = 0.0  # closed loop: required achieved req/s (0: not judged)
    mode: str = "open"  # "open": answered share judged; "closed": min_qps judged
    confidence: float = DEFAULT_CONFIDENCE
    stability_pct: float = stability.DEFAULT_TOLERANCE_PCT  # 0: the stability rule is off

    def __post_init__(self) -> None:
        check_confidence(self.confidence)
        if not self.latency_ms > 0:
            raise ConfigError(f"latency target {self.latency_ms!r} ms must be > 0")
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"max error rate {self.max_error_rate!r} must be in [0, 1]")


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's verdict, its message line, and how much more measuring would decide it."""

    name: str  # "p99" (or "p90", ...), "errors", "answered", "throughput"
    verdict: Criterion
    line: str
    need_s: float | None  # seconds more at this rate (0: decided; None: no estimate)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlaJudgement:
    verdict: Overall
    criteria: tuple[CriterionResult, ...]
    confidence: float
    stable: bool
    stability_reason: str
    note: str  # what instability did to the verdict ("" when stable)
    need_requests: int | None  # INCONCLUSIVE: about this many more requests; else 0
    need_s: float | None
    requests: int = 0  # requests sent in the judged windows

    @property
    def decided(self) -> bool:
        return self.verdict != "INCONCLUSIVE"

    @property
    def failures(self) -> list[str]:
        return [c.line for c in self.criteria if c.verdict == "FAIL"]

    def need_text(self) -> str:
        if self.verdict != "INCONCLUSIVE":
            return ""
        if not self.requests:
            return "no request was measured"
        if self.need_requests is None or self.need_s is None:
            return ("measuring longer at these figures would not decide it (a measured share "
                    "sits at its limit)")
        return f"need about {self.need_requests} more requests (~{self.need_s:.2g} s at this rate)"

    def message(self) -> str:
        head = f"{self.verdict} at {self.confidence * 100:g} % confidence"
        parts = [head, *(c.line for c in self.criteria)]
        if self.note:
            parts.append(self.note)
        if self.need_text():
            parts.append(self.need_text())
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "confidence": self.confidence, "stable": self.stable,
                "stability": self.stability_reason, "note": self.note,
                "need_requests": self.need_requests,
                "need_s": None if self.need_s is None else round(self.need_s, 1),
                "requests": self.requests,
                "criteria": [{"name": c.name, "verdict": c.verdict, "line": c.line,
                              **c.figures} for c in self.criteria]}


def _pct(share: float) -> str:
    return f"{share * 100:.2f} %"


def _conf(limits: SlaLimits) -> str:
    return f"at {limits.confidence * 100:g} % confidence"


def _share_line(test: ShareTest, passed: str, failed: str, limits: SlaLimits,
                rate: float) -> tuple[str, float | None]:
    if test.verdict == "PASS":
        return f"{passed} {_conf(limits)}", 0.0
    if test.verdict == "FAIL":
        return f"{failed} {_conf(limits)}", 0.0
    if test.need_more is None:
        return f"not decided {_conf(limits)} (the share sits at the limit)", None
    seconds = test.need_more / rate if rate > 0 else None
    at = f" (~{seconds:.1f} s at {rate:.0f} req/s)" if seconds is not None else ""
    return f"not decided {_conf(limits)}: need about {test.need_more} more{at}", seconds


def _latency(windows: Sequence[WindowStats], limits: SlaLimits, span: float) -> CriterionResult:
    name = f"p{limits.percentile:g}"
    answered = sum(w.stats.count for w in windows)
    over = count_over(windows, limits.latency_ms)[0]
    test = percentile_test(answered, over, limits.percentile, limits.confidence)
    target = f"{limits.latency_ms:g} ms"
    tail, need = _share_line(test, f"true {name} <= {target}", f"true {name} > {target}",
                             limits, answered / span if span else 0.0)
    line = (f"{name}: {over} of {answered} requests over {target} "
            f"({_pct(test.share)}), {tail}")
    return CriterionResult(name, test.verdict, line, need,
                           {"over": over, "answered": answered, "p_within": test.p_within,
                            "p_over": test.p_over})


def _errors(windows: Sequence[WindowStats], limits: SlaLimits, span: float) -> CriterionResult:
    errors = sum(w.stats.error_count for w in windows)
    done = sum(w.stats.ok for w in windows) + errors
    test = share_test(done, errors, limits.max_error_rate, limits.confidence)
    limit = _pct(limits.max_error_rate)
    tail, need = _share_line(test, f"true error rate <= {limit}",
                             f"true error rate > {limit}", limits, done / span if span else 0.0)
    line = f"errors: {errors} of {done} requests failed ({_pct(test.share)}), {tail}"
    return CriterionResult("errors", test.verdict, line, need, {"errors": errors, "done": done})


def _answered(windows: Sequence[WindowStats], limits: SlaLimits, span: float) -> CriterionResult:
    sent = sum(w.stats.sent for w in windows)
    ok = sum(w.stats.ok for w in windows)
    test = share_test(sent, sent - ok, round(1.0 - ANSWERED_MIN_SHARE, 12), limits.confidence)
    need_pct = f"{ANSWERED_MIN_SHARE:.0%}"
    tail, need = _share_line(test, f"true share answered >= {need_pct}",
                             f"true share answered < {need_pct}", limits,
                             sent / span if span else 0.0)
    line = (f"answered: {ok} of {sent} requests sent ({_pct(1 - test.share) if sent else 'none'})"
            f", {tail}")
    return CriterionResult("answered", test.verdict, line, need, {"ok": ok, "sent": sent})


def _throughput(windows: Sequence[WindowStats], limits: SlaLimits) -> CriterionResult:
    timed = [w for w in windows if w.stats.span_s > 0]
    test = throughput_test([w.stats.qps for w in timed], limits.min_qps, limits.confidence)
    bound = (f"{test.confidence * 100:g} % bounds {test.lower_qps:.0f}-{test.upper_qps:.0f}"
             if test.windows >= 2 else "no bound from fewer than 2 windows")
    head = (f"throughput: {test.mean_qps:.0f} req/s mean over {test.windows} windows ({bound}), "
            f"{limits.min_qps:g} req/s required")
    window_s = sum(w.stats.span_s for w in timed) / len(timed) if timed else 0.0
    need: float | None = 0.0
    if test.verdict == "PASS":
        line = f"{head}: met {_conf(limits)}"
    elif test.verdict == "FAIL":
        line = f"{head}: not met {_conf(limits)}"
    elif test.need_more is None:
        need, line = None, f"{head}: not decided {_conf(limits)}"
    else:
        need = test.need_more * window_s if window_s else None
        line = f"{head}: not decided {_conf(limits)}: need about {test.need_more} more windows"
    return CriterionResult("throughput", test.verdict, line, need,
                           {"mean_qps": test.mean_qps, "lower_qps": test.lower_qps,
                            "upper_qps": test.upper_qps, "windows": test.windows})


def criteria(windows: Sequence[WindowStats], limits: SlaLimits) -> tuple[CriterionResult, ...]:
    """Every criterion of ``limits`` judged on ``windows`` pooled."""
    span = sum(w.stats.span_s for w in windows)
    out = [_latency(windows, limits, span), _errors(windows, limits, span)]
    if limits.mode == "open":
        out.append(_answered(windows, limits, span))
    elif limits.min_qps > 0:
        out.append(_throughput(windows, limits))
    return tuple(out)


def _overall(results: Sequence[CriterionResult]) -> Overall:
    verdicts = {c.verdict for c in results}
    return "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "UNDECIDED" in verdicts else "PASS"


def _stability(windows: Sequence[WindowStats], limits: SlaLimits) -> tuple[stability.Verdict, int]:
    """The stability rule's verdict, and where the stretch of windows that agree with the last
    ones begins (stable: the longest such stretch, so an earlier regime is not pooled in)."""
    if limits.stability_pct <= 0:
        return stability.Verdict(True, 0, 0.0, "stability rule off"), 0
    # open loop: the share answered (Poisson arrivals make the sent count itself vary)
    qps = [(w.stats.ok / w.stats.sent if w.stats.sent else 0.0) if limits.mode == "open"
           else w.stats.qps for w in windows]
    p99 = [w.stats.p99_ms for w in windows]
    usable = [w.stats.ok > 0 for w in windows]
    verdict = stability.check(p99, qps, limits.stability_pct, usable=usable)
    first = verdict.first
    while verdict.stable and first > 0 and usable[first - 1] and max(
            stability.spread_pct(p99[first - 1:]),
            stability.spread_pct(qps[first - 1:])) <= limits.stability_pct:
        first -= 1
    return verdict, max(first, 0)


_RANK = {"FAIL": 0, "INCONCLUSIVE": 1, "PASS": 2}


def judge(windows: Sequence[WindowStats], limits: SlaLimits) -> SlaJudgement:
    """The SLA verdict on a run's windows (partial windows are left out when complete ones
    exist). Stable: judged on the windows that agree with the last ones. Unstable: the worse of
    the verdicts on all windows and on the last ``stability.DEFAULT_COUNT`` alone."""
    used = judged_windows(windows)
    steady, first = _stability(used, limits)
    pooled = criteria(used[first:] if steady.stable else used, limits)
    verdict, shown, note = _overall(pooled), pooled, ""
    if steady.stable and first:
        note = (f"judged on the last {len(used) - first} windows, which agree; the first "
                f"{first} differ from them")
    if not steady.stable:
        tail = criteria(used[-stability.DEFAULT_COUNT:], limits)
        tail_verdict = _overall(tail)
        if _RANK[tail_verdict] < _RANK[verdict]:
            verdict, shown = tail_verdict, tail
        note = f"measurement unstable ({steady.reason})"
        if len(used) > stability.DEFAULT_COUNT:
            note += (f": judged on all {len(used)} windows ({_overall(pooled)}) and on the last "
                     f"{stability.DEFAULT_COUNT} alone ({tail_verdict}); the worse counts")
    span = sum(w.stats.span_s for w in used)
    sent_rate = sum(w.stats.sent for w in used) / span if span else 0.0
    needs = [c.need_s for c in shown if c.verdict == "UNDECIDED"]
    need_s: float | None = 0.0
    need_requests: int | None = 0
    if verdict == "INCONCLUSIVE":
        known = [n for n in needs if n is not None]
        need_s = max(known) if known and len(known) == len(needs) else None
        need_requests = (math.ceil(need_s * sent_rate) if need_s is not None and sent_rate
                         else None)
    return SlaJudgement(verdict, shown, limits.confidence, steady.stable, steady.reason, note,
                        need_requests, need_s, sum(w.stats.sent for w in used))


def stop_when(limits: SlaLimits) -> Callable[[Sequence[WindowStats]], bool]:
    """A stop rule for the load generator: True once the verdict on the windows so far is decided:
    a FAIL at once, a PASS only on a stable run (while the windows disagree, a PASS may be luck,
    so the load goes on to its maximum duration and the final verdict takes the worse)."""

    def decided(windows: Sequence[WindowStats]) -> bool:
        judgement = judge(windows, limits)
        return judgement.verdict == "FAIL" or (judgement.verdict == "PASS" and judgement.stable)

    return decided


class _Spec(Protocol):
    @property
    def mode(self) -> str: ...


class MeasuredRun(Protocol):
    """What ``judge_run`` reads of a ``LoadResult``."""

    @property
    def windows(self) -> Sequence[WindowStats]: ...

    @property
    def stats(self) -> LatencyStats: ...

    @property
    def spec(self) -> _Spec: ...


def judge_run(run: MeasuredRun, limits: SlaLimits) -> SlaJudgement:
    """``judge`` on a finished run's windows, in the run's loop mode (a run without windows is
    judged as one window of its stats)."""
    windows = list(run.windows) or [WindowStats(0, run.stats, new_histogram())]
    return judge(windows, replace(limits, mode=run.spec.mode))
