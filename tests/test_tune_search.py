"""The tuning search core on a planted cost model: it finds the planted best region within the
budget, honours TF Serving's rules for the space, and refuses budgets too short to search."""

from __future__ import annotations

import pytest

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tune.search import Plan, Stage, TrialResult, search
from pytest_tfserving.tune.space import Candidate, SearchSpace, pow2_ladder

SCREEN_COST, CONFIRM_COST = 20.0, 35.0


class Planted:
    """A server whose QPS at the p99 budget is known: best at max_batch_size 32, timeout 2 ms,
    one inter-op thread; padding ladders cost 10 %; batching off serves 300 req/s."""

    def __init__(self) -> None:
        self.calls: list[tuple[Candidate, str]] = []

    def __call__(self, cand: Candidate, stage: Stage) -> TrialResult:
        self.calls.append((cand, stage.name))
        cost = SCREEN_COST if stage.name == "screen" else CONFIRM_COST
        b = cand.batching
        if b is None:
            qps = 300.0
        else:
            qps = 1200.0 - 8 * abs(b.max_batch_size - 32) - 0.1 * abs(b.batch_timeout_micros - 2000)
            qps *= 0.9 if b.allowed_batch_sizes else 1.0
        qps *= 1.0 if cand.inter_op_threads == 1 else 0.85
        return TrialResult(qps=qps, p99_at_sla_ms=10.0, elapsed_s=cost)


def plan(budget: float) -> Plan:
    return Plan(budget_s=budget, est_screen_cost_s=SCREEN_COST, est_confirm_cost_s=CONFIRM_COST)


def test_finds_the_planted_best_region_within_budget() -> None:
    trial = Planted()
    space = SearchSpace(max_batch_size=(8, 16, 32, 64), num_batch_threads=(0,))
    out = search(space, trial, plan(600), cores=2)
    assert out.recommended is not None
    best = out.recommended.candidate
    assert best.batching is not None
    assert best.batching.max_batch_size == 32
    assert best.batching.batch_timeout_micros == 2000
    assert best.inter_op_threads == 1
    assert out.recommended.stage == "confirm"
    assert out.spent_s <= 600
    assert out.off is not None and out.off.result.qps == pytest.approx(300 * 0.85)
    # coordinate descent, not a grid: far fewer trials than the 4*5*2*3 = 120 combinations
    assert len(trial.calls) < 30


def test_budget_is_respected_and_leaders_are_confirmed() -> None:
    trial = Planted()
    out = search(SearchSpace(), trial, plan(200), cores=2)
    assert out.spent_s <= 200
    stages = [s for _, s in trial.calls]
    assert stages.count("confirm") >= 1
    assert "budget" in out.stop_reason


def test_current_config_is_confirmed_and_its_gap_measured() -> None:
    current = Candidate(BatchingParameters(max_batch_size=8, batch_timeout_micros=0), 0, 0)
    out = search(SearchSpace(num_batch_threads=(0,)), Planted(), plan(600), cores=2,
                 current=current)
    assert out.current is not None and out.current.stage == "confirm"
    expected = (1200 - 8 * 24 - 200) * 0.85
    assert out.current.result.qps == pytest.approx(expected)
    gap = out.gap()
    assert gap is not None and gap > 0.2


def test_a_budget_too_short_for_one_trial_is_an_error() -> None:
    with pytest.raises(ConfigError, match="too short for one trial.*at least 55 s"):
        search(SearchSpace(), Planted(), plan(30), cores=2)


def test_contradictory_space_is_refused_with_tf_serving_rule() -> None:
    space = SearchSpace(max_batch_size=(16, 32), allowed_batch_sizes=((4, 8, 24),))
    with pytest.raises(ConfigError, match="last entry 24 must equal max_batch_size"):
        search(space, Planted(), plan(600), cores=2)
    with pytest.raises(ConfigError, match="strictly increasing"):
        SearchSpace(allowed_batch_sizes=((8, 4, 32),)).validate()
    with pytest.raises(ConfigError, match="space is empty"):
        SearchSpace(include_off=False, max_batch_size=()).validate()
    with pytest.raises(ConfigError, match="max_execution_batch_size values \\[128\\]"):
        SearchSpace(max_execution_batch_size=(128,)).validate()


def test_disqualified_configs_are_never_recommended() -> None:
    def trial(cand: Candidate, stage: Stage) -> TrialResult:
        if cand.batching is not None:
            return TrialResult(qps=5000, elapsed_s=1,
                               disqualified="example 3 differs when batched")
        return TrialResult(qps=100, p99_at_sla_ms=5, elapsed_s=1)

    out = search(SearchSpace(), trial, Plan(budget_s=60, est_screen_cost_s=1,
                                            est_confirm_cost_s=1), cores=2)
    assert out.recommended is not None and out.recommended.candidate.batching is None
    assert any(t.result.disqualified for t in out.tried)


def test_ties_in_qps_go_to_the_lower_p99_at_the_sla_rate() -> None:
    def trial(cand: Candidate, stage: Stage) -> TrialResult:
        p99 = 4.0 if cand.batching and cand.batching.batch_timeout_micros == 1000 else 9.0
        return TrialResult(qps=1000, p99_at_sla_ms=p99, elapsed_s=1)

    out = search(SearchSpace(include_off=False), trial,
                 Plan(budget_s=100, est_screen_cost_s=1, est_confirm_cost_s=1), cores=2)
    assert out.recommended is not None and out.recommended.result.p99_at_sla_ms == 4.0


def test_neighbours_keep_allowed_sizes_valid() -> None:
    space = SearchSpace(max_batch_size=(16, 32))
    base = Candidate(BatchingParameters(max_batch_size=16, allowed_batch_sizes=(4, 8, 16)))
    for cand in space.neighbours(base, "max_batch_size"):
        assert cand.batching is not None
        assert cand.batching.allowed_batch_sizes == pow2_ladder(cand.batching.max_batch_size)
    ladders = {c.batching.allowed_batch_sizes for c in space.neighbours(base, "allowed_batch_sizes")
               if c.batching}
    assert ladders == {()}


class Noisy(Planted):
    """The planted server on a noisy machine: the config at max_batch_size 64 is worse than the
    shipped one (32), but its screening run and its first confirmation were lucky (twice its
    QPS); every later run shows the truth."""

    def __init__(self) -> None:
        super().__init__()
        self.lucky_confirms = 1

    def __call__(self, cand: Candidate, stage: Stage) -> TrialResult:
        result = super().__call__(cand, stage)
        b = cand.batching
        if b is None or b.max_batch_size != 64:
            return result
        if stage.name == "confirm":
            if not self.lucky_confirms:
                return result
            self.lucky_confirms -= 1
        return TrialResult(qps=result.qps * 2.0, p99_at_sla_ms=10.0, elapsed_s=result.elapsed_s)


def test_a_leader_that_won_one_lucky_run_does_not_replace_the_shipped_config() -> None:
    shipped = Candidate(BatchingParameters(max_batch_size=32, batch_timeout_micros=2000), 0, 1)
    space = SearchSpace(max_batch_size=(32, 64), batch_timeout_micros=(2000,),
                        num_batch_threads=(0,), inter_op_threads=(1,))
    trial = Noisy()
    out = search(space, trial, plan(900), cores=2, current=shipped)
    assert out.duel is not None and not out.duel.challenger_wins
    assert out.duel.ratios[0] > 1.0 and min(out.duel.ratios) <= 1.0
    assert out.recommended is out.current and out.gap() == 0.0
    assert "did not reliably beat the shipped config" in out.duel.verdict()


def test_a_leader_that_wins_every_pair_is_recommended_with_the_paired_gap() -> None:
    current = Candidate(BatchingParameters(max_batch_size=8, batch_timeout_micros=0), 0, 0)
    out = search(SearchSpace(num_batch_threads=(0,)), Planted(), plan(600), cores=2,
                 current=current)
    assert out.duel is not None and out.duel.challenger_wins
    assert len(out.duel.ratios) >= 2 and min(out.duel.ratios) > 1.0
    assert out.gap() == pytest.approx(1 - 1 / out.duel.median)
