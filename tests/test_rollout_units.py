"""The rollout's pure parts: phases by send time, where the swap ends, the p99 verdict at
confidence, the memory sampler and the base dir it serves."""

from __future__ import annotations

import os

import pytest

from pytest_tfserving.launchers.backend_settings import memory_bytes
from pytest_tfserving.rollout import phases as ph
from pytest_tfserving.rollout.base_dir import stage_baseline
from pytest_tfserving.rollout.memory import MemorySampler, process_tree_rss
from pytest_tfserving.rollout.verdict import MIN_P99_REQUESTS, Limits
from pytest_tfserving.rollout.verdict import judge as judge_rollout
from pytest_tfserving.staging import OWNER_FILE


def requests(start: float, n: int, step: float, ms: float, version: int,
             code: str = "OK") -> list[ph.Request]:
    return [ph.Request(start + i * step, ms, code, version if code == "OK" else None)
            for i in range(n)]


def test_the_candidates_first_answers_belong_to_the_swap_even_when_sent_after_the_unload():
    load = (requests(0.0, 100, 0.01, 2.0, 1) + requests(1.0, 10, 0.01, 2.0, 1)
            + requests(1.1, 3, 0.01, 300.0, 2) + requests(1.13, 50, 0.01, 2.0, 2))
    end = ph.swap_end(load, placed_at=1.0, swapped_at=1.05, candidate=2)
    assert end is not None and 1.12 < end < 1.13
    phases = ph.split(load, 1.0, end, 0.0)
    assert phases["before"].requests == 100 and phases["before"].versions == {"1": 100}
    assert phases["swap"].versions == {"1": 10, "2": 3}
    assert phases["swap"].max_ms == 300.0 and phases["swap"].over(250.0) == 3
    assert phases["after"].requests == 50 and phases["after"].max_ms == 2.0


def test_a_swap_that_never_ended_has_no_after_phase():
    load = requests(0.0, 10, 0.1, 1.0, 1)
    assert ph.swap_end(load, 0.5, None, 2) is None
    assert list(ph.split(load, 0.5, None, 0.0)) == ["before", "swap"]


class _Outcome:
    """The parts of a rollout's outcome the verdict reads."""

    def __init__(self, phases: dict[str, ph.PhaseStats]) -> None:
        from pytest_tfserving.rollout.base_dir import RolloutBase
        from pytest_tfserving.rollout.swap import SwapTimes

        self.phases = phases
        self.times = SwapTimes(placed_at=1.0, candidate_available_at=1.5, baseline_end_at=1.6)
        self.base = RolloutBase(root=os.devnull, model_name="m", baseline_version=1)
        self.baseline_after_failure: dict[str, object] = {}
        self.memory: dict[str, object] = {}

        class _Load:
            aborted = ""

        self.load = _Load()


def _judge(before: list[ph.Request], swap: list[ph.Request], confidence: float = 0.95):
    outcome = _Outcome({"before": ph.phase_stats("before", before, 0, 1),
                        "swap": ph.phase_stats("swap", swap, 1, 2)})
    limits = Limits(max_p99_ratio=3.0, deadline_s=60.0, confidence=confidence, rate=100.0,
                    memory=None)
    return judge_rollout(outcome, [], limits)


def test_swap_p99_far_above_the_limit_fails_with_its_figures():
    verdict = _judge(requests(0, 200, 0.01, 2.0, 1),
                     requests(1, 150, 0.01, 2.0, 1) + requests(2.5, 50, 0.01, 400.0, 2))
    assert not verdict.inconclusive
    assert "swap p99 400.00 ms vs 3 x the steady p99 2.00 ms = 6.00 ms (50 of 200" in \
        verdict.failures[0]


def test_a_swap_too_short_to_judge_its_p99_is_inconclusive_and_says_what_it_needs():
    verdict = _judge(requests(0, 200, 0.01, 2.0, 1), requests(1, 60, 0.01, 2.0, 1))
    assert verdict.inconclusive and not verdict.failures
    assert "not decided at 95% confidence with 60 swap answers" in verdict.undecided[0]
    assert "--tfs-rollout-rate=" in verdict.undecided[0]
    assert not _judge(requests(0, 200, 0.01, 2.0, 1), requests(1, 100, 0.01, 2.0, 1),
                      confidence=0.5).inconclusive


def test_a_steady_phase_too_short_for_a_p99_is_inconclusive():
    verdict = _judge(requests(0, MIN_P99_REQUESTS - 1, 0.01, 2.0, 1),
                     requests(1, 300, 0.01, 2.0, 1))
    assert verdict.inconclusive
    assert "raise --tfs-rollout-steady to at least 1 s" in verdict.undecided[0]


def test_failed_requests_during_the_swap_fail_the_rollout():
    verdict = _judge(requests(0, 200, 0.01, 2.0, 1),
                     requests(1, 300, 0.01, 2.0, 1) + requests(1.5, 2, 0.01, 1.0, 2,
                                                                code="UNAVAILABLE"))
    assert verdict.failures == ["2 of 302 request(s) failed during the swap (UNAVAILABLE x2)"]


def test_memory_sampler_reads_this_process_tree_and_sizes_parse_as_docker_does():
    sampler = MemorySampler(lambda: process_tree_rss(os.getpid()), "self", interval_s=0.01)
    sampler.start()
    try:
        import time

        time.sleep(0.1)
    finally:
        sampler.stop()
    peak = sampler.peak()
    assert peak is not None and peak > 10 * (1 << 20)
    assert memory_bytes("512m") == 512 << 20 and memory_bytes("2g") == 2 << 30
    assert memory_bytes("1048576") == 1 << 20 and memory_bytes("1.5G") == 3 << 29


def test_the_base_dir_is_a_copy_the_next_run_can_sweep(ctr_direct):
    base = stage_baseline("ctr_direct", ctr_direct / "1", 1)
    try:
        assert (base.baseline_dir() / "saved_model.pb").is_file()
        assert (base.root / OWNER_FILE).is_file()
        placed = base.place_candidate(ctr_direct / "1")
        assert placed.name == "2" and (placed / "saved_model.pb").is_file()
        with pytest.raises(Exception, match="can be placed once per rollout"):
            base.place_candidate(ctr_direct / "1")
    finally:
        base.cleanup()
    assert not base.root.exists()


def test_the_swap_phase_lasts_at_least_the_swap_window():
    load = requests(0.0, 100, 0.01, 2.0, 1) + requests(1.0, 300, 0.01, 2.0, 2)
    assert ph.swap_end(load, placed_at=1.0, swapped_at=1.2, candidate=2) == pytest.approx(1.2)
    assert ph.swap_end(load, 1.0, 1.2, 2, min_window_s=2.0) == 3.0
    assert ph.split(load, 1.0, 3.0, 0.0)["swap"].requests == 200


def test_warmup_evidence_is_matched_to_its_version_in_the_log_and_the_metrics():
    from pytest_tfserving.bundled_server.metrics import Metrics
    from pytest_tfserving.rollout.evidence import warmup_evidence
    from pytest_tfserving.warmup_contract import finished_line

    metrics = Metrics()
    metrics.record_warmup("/m/ctr/00000002", "OK", 5000.0, 10)  # the version dir, zero-padded
    log = finished_line("/m/ctr/00000002/assets.extra/tf_serving_warmup_requests", 10, 5000)
    found = warmup_evidence(log, metrics.render(), 2)
    assert found == {"log": {"records": 10, "ms": 5.0, "path": "/m/ctr/00000002/assets.extra/"
                                                              "tf_serving_warmup_requests"},
                     "metrics": {"records": 10, "latency_ms": 5.0}, "replayed_records": 10}
    assert warmup_evidence(log, metrics.render(), 1) == {"replayed_records": 0}
