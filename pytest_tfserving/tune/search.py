"""The search core: TF Serving's guidance first, then coordinate descent with short screening
runs, then full-length confirmation of the leaders, all within a time budget.

Independent of pytest and of servers: it calls ``trial(candidate, stage) -> TrialResult``; the
served trial (``tune.served``) measures a real server, tests plant a cost model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tune.duel import MIN_PAIRS, Duel, duel
from pytest_tfserving.tune.space import DIMENSIONS, Candidate, SearchSpace


@dataclass(frozen=True)
class Stage:
    """How long a trial measures: ``screen`` (short) or ``confirm`` (full length)."""

    name: str
    duration_s: float  # per max_qps step
    hint_qps: float = 0.0  # a rate the config is expected to hold (starts the rate search)


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured. ``qps``: the highest open-loop rate whose p99 stayed within the
    budget (0: none did); ``elapsed_s``: the time it took (server start included)."""

    qps: float
    p99_at_sla_ms: float | None = None
    mean_batch_size: float | None = None
    padding_share: float | None = None
    queue_delay_ms: float | None = None
    cpu_s_per_1k: float | None = None
    elapsed_s: float = 0.0
    disqualified: str = ""  # e.g. batching changed an answer (names the example)
    error: str = ""  # the server did not start, or the trial failed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not self.disqualified and not self.error and self.qps > 0

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None, n: int = 3) -> float | None:
            return None if v is None else round(v, n)

        return {"qps_at_p99": round(self.qps, 1), "p99_at_sla_ms": r(self.p99_at_sla_ms),
                "mean_batch_size": r(self.mean_batch_size, 2),
                "padding_share": r(self.padding_share), "queue_delay_ms": r(self.queue_delay_ms),
                "cpu_s_per_1k": r(self.cpu_s_per_1k), "elapsed_s": round(self.elapsed_s, 2),
                "disqualified": self.disqualified, "error": self.error, **self.details}


@dataclass(frozen=True)
class Tried:
    candidate: Candidate
    stage: str
    result: TrialResult

    def as_dict(self) -> dict[str, Any]:
        return {**self.candidate.as_dict(), "stage": self.stage, **self.result.as_dict()}


Trial = Callable[[Candidate, Stage], TrialResult]


@dataclass(frozen=True)
class Plan:
    """The search's knobs: stage lengths, the estimated cost of one trial of each (refined by
    what trials take), how many leaders are confirmed, and the QPS tie tolerance."""

    budget_s: float
    screen_s: float = 1.0
    confirm_s: float = 3.0
    est_screen_cost_s: float = 20.0
    est_confirm_cost_s: float = 35.0
    leaders: int = 2
    tie: float = 0.03  # QPS within 3 %: the lower p99 at the SLA rate wins
    max_passes: int = 2

    def check(self) -> Plan:
        minimum = self.est_screen_cost_s + self.est_confirm_cost_s
        if self.budget_s < minimum:
            raise ConfigError(
                f"tuning budget {self.budget_s:g} s is too short for one trial: a screening run "
                f"needs ~{self.est_screen_cost_s:g} s and its confirmation "
                f"~{self.est_confirm_cost_s:g} s (server start included); give a budget of at "
                f"least {minimum:g} s (--tfs-tune-budget)")
        if self.leaders < 1:
            raise ConfigError(f"leaders={self.leaders}: confirm at least 1 leader")
        return self


def better(a: TrialResult, b: TrialResult, tie: float) -> int:
    """-1 when ``a`` ranks above ``b``: higher QPS at the p99 budget; within ``tie``, the lower
    p99 at the SLA rate."""
    if a.usable != b.usable:
        return -1 if a.usable else 1
    top = max(a.qps, b.qps)
    if top and abs(a.qps - b.qps) > tie * top:
        return -1 if a.qps > b.qps else 1
    pa = a.p99_at_sla_ms if a.p99_at_sla_ms is not None else float("inf")
    pb = b.p99_at_sla_ms if b.p99_at_sla_ms is not None else float("inf")
    return -1 if pa < pb else (1 if pa > pb else 0)


def rank(tried: list[Tried], tie: float) -> list[Tried]:
    def cmp(x: Tried, y: Tried) -> int:
        return better(x.result, y.result, tie)

    return sorted(tried, key=functools.cmp_to_key(cmp))


@dataclass
class Outcome:
    """Everything the search did: every trial, the confirmed ranking and the verdict inputs."""

    plan: Plan
    tried: list[Tried] = field(default_factory=list)
    spent_s: float = 0.0
    stop_reason: str = ""
    recommended: Tried | None = None
    current: Tried | None = None
    off: Tried | None = None
    duel: Duel | None = None  # the leader against the shipped config, when they differ

    def gap(self) -> float | None:
        """How far the current config's QPS is below the recommended one's (0.25: 25 %)."""
        if self.recommended is None or self.current is None or not self.recommended.result.qps:
            return None
        if self.duel is not None:  # the paired figure, not one noisy run each
            return max(0.0, 1 - 1 / self.duel.median) if self.duel.challenger_wins else 0.0
        return max(0.0, 1 - self.current.result.qps / self.recommended.result.qps)


@dataclass
class _Search:
    space: SearchSpace
    trial: Trial
    plan: Plan
    progress: Callable[[str], None] | None
    out: Outcome = field(init=False)
    seen: dict[Candidate, Tried] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Outcome(self.plan)
        self._cost = {"screen": self.plan.est_screen_cost_s,
                      "confirm": self.plan.est_confirm_cost_s}

    def left(self) -> float:
        return self.plan.budget_s - self.out.spent_s

    def run(self, cand: Candidate, stage: Stage) -> Tried:
        result = self.trial(cand, stage)
        self.out.spent_s += result.elapsed_s
        # a trial that took longer than estimated makes the next estimates longer
        self._cost[stage.name] = max(self._cost[stage.name], result.elapsed_s)
        tried = Tried(cand, stage.name, result)
        self.out.tried.append(tried)
        if self.progress is not None:
            self.progress(f"tune {stage.name}: {cand.label()} -> {result.qps:.0f} req/s"
                          + (f" ({result.disqualified or result.error})"
                             if result.disqualified or result.error else ""))
        return tried

    def screen(self, cand: Candidate, reserve: float) -> Tried | None:
        if cand in self.seen:
            return self.seen[cand]
        if self.left() < self._cost["screen"] + reserve:
            self.out.stop_reason = self.out.stop_reason or (
                f"budget: {self.left():.0f} s left, kept for confirming the leaders")
            return None
        hint = max((t.result.qps for t in self.seen.values()), default=0.0)
        tried = self.run(cand, Stage("screen", self.plan.screen_s, hint / 2))
        self.seen[cand] = tried
        return tried

    def descend(self, start: list[Candidate], reserve: float) -> None:
        for cand in start:  # the guidance itself (off, batching as TF Serving advises) is
            self.screen(cand, 0.0)  # always screened while any budget is left
        for _ in range(self.plan.max_passes):
            improved = False
            for dim in DIMENSIONS:
                best = rank(list(self.seen.values()), self.plan.tie)[0]
                for cand in self.space.neighbours(best.candidate, dim):
                    tried = self.screen(cand, reserve)
                    if tried is None:
                        return
                    if better(tried.result, best.result, self.plan.tie) < 0:
                        best, improved = tried, True
            if not improved:
                self.out.stop_reason = "converged: a full pass changed no dimension"
                return

    def confirm(self, leaders: list[Candidate], must: set[Candidate]) -> list[Tried]:
        """Full-length runs of the leaders; those in ``must`` (the top leader, the shipped
        config) run even when the estimate says the budget is spent."""
        confirmed: list[Tried] = []
        for cand in leaders:
            if self.left() < self._cost["confirm"] and cand not in must:
                if "not every leader" not in self.out.stop_reason:
                    self.out.stop_reason += "; budget: not every leader could be confirmed"
                continue
            screened = self.seen.get(cand)
            hint = screened.result.qps if screened is not None else 0.0
            confirmed.append(self.run(cand, Stage("confirm", self.plan.confirm_s, hint)))
        return confirmed


def search(space: SearchSpace, trial: Trial, plan: Plan, *, cores: int,
           current: Candidate | None = None,
           progress: Callable[[str], None] | None = None) -> Outcome:
    """Find the candidate with the highest QPS at the p99 budget within ``plan.budget_s``.

    The current (shipped) config is confirmed at full length too, so the gap compares like
    with like. A budget too short for one screening plus one confirmation is a ConfigError.
    """
    space.validate()
    plan.check()
    s = _Search(space, trial, plan, progress)
    # the shipped config's confirmation, and the re-runs its duel with the leader needs
    slots = plan.leaders + (1 + 2 * (MIN_PAIRS - 1) if current is not None else 0)
    reserve = slots * plan.est_confirm_cost_s
    if plan.budget_s < plan.est_screen_cost_s + reserve:  # keep the must-confirm ones at least
        reserve = plan.est_confirm_cost_s * (2 if current is not None else 1)
    start = space.guidance(cores)
    s.descend(start, reserve)
    screened = [t for t in rank(list(s.seen.values()), plan.tie) if t.result.usable]
    leaders = [t.candidate for t in screened[:plan.leaders]]
    if current is not None and current not in leaders:  # right after the top leader
        leaders.insert(min(1, len(leaders)), current)
    must = set(leaders[:1]) | ({current} if current is not None else set())
    confirmed = s.confirm(leaders, must)
    usable = [t for t in rank(confirmed, plan.tie) if t.result.usable]
    out = s.out
    out.recommended = usable[0] if usable else None
    by_cand = {t.candidate: t for t in confirmed}
    if current is not None:
        out.current = by_cand.get(current) or s.seen.get(current)
        _settle(s, current)
    off = next((c for c in start if c.batching is None), None)
    if off is not None:
        out.off = by_cand.get(off) or s.seen.get(off)
    if not out.stop_reason:
        out.stop_reason = "searched every neighbour"
    return out


def _settle(s: _Search, current: Candidate) -> None:
    """A leader other than the shipped config is recommended only when it beats it in
    back-to-back pairs (``tune.duel``); otherwise the shipped config is."""
    out = s.out
    leader, shipped = out.recommended, out.current
    if leader is None or shipped is None or leader.candidate == current \
            or shipped.stage != "confirm" or not shipped.result.usable:
        return

    def rerun(t: Tried) -> Tried | None:
        if s.left() < s._cost["confirm"]:
            return None
        return s.run(t.candidate, Stage("confirm", s.plan.confirm_s, t.result.qps))

    out.duel = duel(leader, shipped, rerun, s.plan.tie)
    if not out.duel.challenger_wins:
        out.recommended = shipped
