"""The rollout's verdict: every reason it fails, and what it could not decide.

Fails (each reason with its figures and the fix): a candidate that breaks requests built for the
baseline's signature; any failed request during the swap; a candidate that does not load (the
baseline must keep serving, as on TF Serving); a swap not finished within the deadline; a swap
p99 above ``max_p99_ratio`` x the steady p99 at the required confidence (binomial test on the
swap's requests over that limit, as the SLA gate judges its p99); a memory peak above
``--tfs-memory``. Undecided (INCONCLUSIVE, with what more it needs): a steady phase too short
for a p99, a swap with too few requests to tell its p99 from the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_tfserving.launchers.backend_settings import memory_bytes
from pytest_tfserving.sla_criteria import percentile_test

if TYPE_CHECKING:
    from pytest_tfserving.rollout.compat import Break
    from pytest_tfserving.rollout.phases import PhaseStats
    from pytest_tfserving.rollout.run import Outcome

MIN_P99_REQUESTS = 100  # answered requests for a nearest-rank p99 that is not just the maximum


@dataclass(frozen=True)
class Limits:
    """What the rollout is judged against."""

    max_p99_ratio: float
    deadline_s: float
    confidence: float
    rate: float
    memory: str | None  # --tfs-memory, docker-style (512m, 2g)


@dataclass(frozen=True)
class RolloutVerdict:
    failures: list[str]
    undecided: list[str]  # why the p99 criterion could not be decided, and what it needs

    @property
    def inconclusive(self) -> bool:
        return not self.failures and bool(self.undecided)


def judge(outcome: Outcome, breaks: list[Break], limits: Limits) -> RolloutVerdict:
    failures = _compatibility(breaks) + _swap_failures(outcome, limits)
    failures += _error_failures(outcome, breaks) + _memory_failures(outcome, limits)
    p99_failures, undecided = _p99(outcome, limits)
    return RolloutVerdict(failures + p99_failures, undecided)


def _compatibility(breaks: list[Break]) -> list[str]:
    if not breaks:
        return []
    return ["the candidate breaks clients built for the baseline's signature: "
            + "; ".join(b.describe() for b in breaks)
            + ". Keep the serving signature (or release it under a new model name and migrate "
              "clients first)"]


def _swap_failures(outcome: Outcome, limits: Limits) -> list[str]:
    times, new = outcome.times, outcome.base.candidate_version
    failures: list[str] = []
    if times.error:
        failures.append(f"the swap could not be run: {times.error}")
    if times.candidate_failed:
        kept = outcome.baseline_after_failure
        old = outcome.base.baseline_version
        state = (f"the baseline kept serving (version {old} {kept.get('baseline_state')}, "
                 f"{kept.get('answers_after_placing')} answer(s) after placing the candidate), "
                 "as TF Serving keeps it" if kept.get("serving") else
                 f"and the baseline stopped serving too ({kept})")
        failures.append(f"the candidate (version {new}) failed to load: "
                        f"{times.candidate_failed}; {state}. Fix the candidate's export")
    elif times.timed_out:
        seen = ", ".join(f"v{v} {s}" for _, v, s in times.transitions[-4:]) or "no status"
        failures.append(f"the swap did not finish within {limits.deadline_s:g} s (last seen: "
                        f"{seen}). Raise --tfs-rollout-deadline if the model is this slow to "
                        "load, or look at the server log")
    if times.baseline_lost:
        failures.append(f"{times.baseline_lost}: requests had no version to answer them")
    if outcome.load.aborted:
        failures.append(f"the load stopped early: {outcome.load.aborted}")
    return failures


def _error_failures(outcome: Outcome, breaks: list[Break]) -> list[str]:
    phases = outcome.phases
    failures: list[str] = []
    swap, after, before = phases.get("swap"), phases.get("after"), phases.get("before")
    if before is not None and before.ok == 0:
        failures.append("the baseline answered no request in the steady phase, so nothing "
                        "was measured; see the server log")
    if swap is not None and swap.error_count:
        failures.append(f"{swap.error_count} of {swap.requests} request(s) failed during the "
                        f"swap ({_codes(swap)})")
    if after is not None and after.error_count:
        why = " built for the baseline's signature" if breaks else ""
        failures.append(f"the candidate rejected {after.error_count} of {after.requests} "
                        f"request(s){why} after the swap ({_codes(after)})")
    return failures


def _codes(stats: PhaseStats) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(stats.errors.items()))


def _memory_failures(outcome: Outcome, limits: Limits) -> list[str]:
    if not limits.memory:
        return []
    peak = outcome.memory.get("both_loaded_peak_mib") or outcome.memory.get("peak_mib")
    limit_mib = memory_bytes(limits.memory) / (1 << 20)
    if peak is None or peak <= limit_mib:
        return []
    return [f"server memory peaked at {peak:.0f} MiB while both versions were loaded, above "
            f"--tfs-memory={limits.memory} ({limit_mib:.0f} MiB): production would OOM during "
            "the swap"]


def _p99(outcome: Outcome, limits: Limits) -> tuple[list[str], list[str]]:
    """(failures, undecided) of "swap p99 <= max_p99_ratio x steady p99"."""
    before, swap = outcome.phases.get("before"), outcome.phases.get("swap")
    if before is None or swap is None or not swap.ok:
        return [], []
    if before.ok < MIN_P99_REQUESTS:
        seconds = math.ceil(MIN_P99_REQUESTS / limits.rate)
        return [], [f"the steady phase answered {before.ok} request(s), fewer than the "
                    f"{MIN_P99_REQUESTS} a p99 needs: raise --tfs-rollout-steady to at least "
                    f"{seconds} s at {limits.rate:g} req/s"]
    limit_ms = limits.max_p99_ratio * before.p99_ms
    test = percentile_test(swap.ok, swap.over(limit_ms), 99, limits.confidence)
    figures = (f"swap p99 {swap.p99_ms:.2f} ms vs {limits.max_p99_ratio:g} x the steady p99 "
               f"{before.p99_ms:.2f} ms = {limit_ms:.2f} ms ({test.bad} of {test.trials} swap "
               f"answers slower)")
    if test.verdict == "FAIL":
        return [f"{figures}: above the limit at {limits.confidence:.0%} confidence; warm the "
                "candidate up (assets.extra/tf_serving_warmup_requests) or give the server "
                "headroom for loading next to serving"], []
    if test.verdict == "PASS":
        return [], []
    if test.need_more is None:
        return [], [f"{figures}: exactly at the limit, more requests cannot decide it"]
    rate = limits.rate * (test.trials + test.need_more) / max(1, test.trials)
    return [], [f"{figures}: not decided at {limits.confidence:.0%} confidence with "
                f"{test.trials} swap answers; about {test.need_more} more are needed: run the "
                f"rollout at --tfs-rollout-rate={math.ceil(rate)}, or widen "
                "--tfs-rollout-window, or lower --tfs-sla-confidence"]
