"""The tune gate: its verdict on a planted outcome (pure), and one real run through pytest with
the marker on ctr_direct (bundled server, tiny budget): table, JSON details, batching file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.gates.tune import verdict
from pytest_tfserving.tune.runner import TuneSettings
from pytest_tfserving.tune.search import Outcome, Plan, TrialResult, Tried
from pytest_tfserving.tune.space import Candidate

BEST = Candidate(BatchingParameters(max_batch_size=32, batch_timeout_micros=2000))
SHIPPED = Candidate(BatchingParameters(max_batch_size=8))


def outcome(best_qps: float, current_qps: float, disqualified: str = "") -> Outcome:
    out = Outcome(Plan(budget_s=100))
    out.recommended = Tried(BEST, "confirm", TrialResult(best_qps, 5.0))
    out.current = Tried(SHIPPED, "confirm", TrialResult(current_qps, 6.0,
                                                        disqualified=disqualified))
    out.tried = [out.recommended, out.current]
    return out


def test_shipped_config_within_the_gap_passes() -> None:
    assert verdict(outcome(1000, 850), TuneSettings(max_gap=0.2)) == []


def test_shipped_config_far_below_the_best_fails_with_the_gap() -> None:
    failures = verdict(outcome(1000, 500), TuneSettings(max_gap=0.2))
    assert failures and "serves 50% less than the best found (max gap 20%)" in failures[0]


def test_no_config_meeting_the_sla_fails() -> None:
    out = Outcome(Plan(budget_s=100))
    failures = verdict(out, TuneSettings(p99_ms=3))
    assert failures and "no config tried holds p99 <= 3 ms" in failures[0]


def test_a_disqualified_shipped_config_fails() -> None:
    failures = verdict(outcome(1000, 990, "example 2 differs"), TuneSettings())
    assert any("disqualified: example 2 differs" in f for f in failures)


USER_TEST = '''
import pytest

@pytest.mark.tfs_tune(budget_s=150, max_gap=0.9, p99_ms=50, sla_qps=50, screen_s=0.5,
                      confirm_s=1.0, est_screen_cost_s=25, est_confirm_cost_s=30, leaders=1,
                      invariance_examples=4, out=OUT)
def test_tuned():
    pass

@pytest.mark.tfs_tune(budget_s=5)
def test_budget_too_short():
    pass
'''


def test_gate_through_pytest_writes_the_recommended_file(pytester: pytest.Pytester,
                                                        ctr_direct: Path) -> None:
    out = pytester.path / "recommended.txt"
    pytester.makepyfile(test_user=USER_TEST.replace("OUT", repr(str(out))))
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=bundled", "--tfs-gates=none",
        f"--tfs-report={report}", "-p", "no:cacheprovider", "test_user.py")
    text = result.stdout.str()
    assert "too short for one trial" in text, text[-3000:]
    gates = [g for g in json.loads(report.read_text())["gates"] if g["name"] == "tune"]
    tuned = next(g for g in gates if g["passed"] or "configs" in g["details"])
    info = tuned["details"]
    assert {"configs", "recommended", "current", "off"} <= set(info), info.keys()
    assert info["configs"] and info["recommended"] is not None, text[-3000:]
    if info["recommended"]["batching"] is not None:
        assert read_batching_file(out).max_batch_size >= 32  # warmup records hold 32
    assert "qps@p99" in "\n".join(info["table"])


def test_tune_joins_the_default_suite_only_when_asked(pytester: pytest.Pytester,
                                                      ctr_direct: Path) -> None:
    base = [f"--tfs-model={ctr_direct}", "--collect-only", "-q", "-p", "no:cacheprovider"]
    plain = pytester.runpytest_subprocess(*base).stdout.str()
    assert "test_gate[sla]" in plain and "test_gate[tune]" not in plain
    asked = pytester.runpytest_subprocess(*base, "--tfs-tune").stdout.str()
    assert "test_gate[tune]" in asked
    named = pytester.runpytest_subprocess(*base, "--tfs-gates=tune").stdout.str()
    assert "test_gate[tune]" in named and "test_gate[sla]" not in named


def test_a_backend_that_cannot_serve_any_candidate_says_so() -> None:
    out = Outcome(Plan(budget_s=100))
    out.tried = [Tried(BEST, "screen", TrialResult(0.0, error="server did not start: boom"))]
    failures = verdict(out, TuneSettings())
    assert failures == ["no candidate could be served (the backend could not start or restart "
                        "a server): server did not start: boom"]
