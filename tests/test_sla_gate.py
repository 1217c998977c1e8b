"""The SLA gate end to end on the bundled server (pytester subprocesses), and its pure verdict
helpers. Short windows keep the runs small; thresholds are loose where the machine's noise would
otherwise decide the outcome."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_tfserving.load.result import LoadResult
from pytest_tfserving.load.server_metrics import ServerEvidence
from pytest_tfserving.load.spec import LoadSpec
from pytest_tfserving.load.stats import LatencyStats, new_histogram
from pytest_tfserving.sla_rules import SlaLimits
from pytest_tfserving.sla_verdict import decide, evidence_failures, regression_failures

QUICK = ["--tfs-backend=bundled", "--tfs-sla-duration=1.5", "--tfs-sla-warmup=0.5",
         "--tfs-sla-stability-pct=0", "--tfs-sla-min-qps=100", "--tfs-sla-p99-ms=2000",
         # enough to decide on a few hundred requests: a verdict, not a latency claim
         "--tfs-sla-confidence=0.5", "--tfs-sla-max-error-rate=0.05",
         "-p", "no:cacheprovider"]

USER_TESTS = '''
import pytest

@pytest.mark.tfs_sla(batching={"max_batch_size": 32, "batch_timeout_micros": 20000},
                     min_qps=150)
def test_patient_batches():
    pass

@pytest.mark.tfs_sla(concurrency=4, min_qps=20)
def test_closed_loop():
    pass

@pytest.mark.tfs_sla(p99_ms="fast")
def test_nonsense_value():
    pass

@pytest.mark.tfs_sla(p99=20)
def test_unknown_argument():
    pass

@pytest.mark.tfs_sla(p99_ms=0.001)
def test_impossible_target():
    pass

def test_custom_assertions(tfs_load):
    result = tfs_load(rate=120, duration=1.5, stability_pct=0, warmup=0.3)
    result.assert_error_rate_below(0.01)
    assert result.qps > 100
    assert result.percentile(99.9) >= result.p99_ms >= result.p50_ms > 0
    assert result.batch_sizes, result.summary()
    with pytest.raises(AssertionError, match=r"p99 .* ms > limit 0.001 ms"):
        result.assert_p99_below(0.001)
'''


def _gates(report: Path) -> list[dict]:
    return [g for g in json.loads(report.read_text())["gates"] if g["name"] == "sla"]


@pytest.mark.xdist_group("bundled-e2e")
@pytest.mark.slow
def test_default_gate_markers_overrides_bad_arguments_and_tfs_load(
        pytester: pytest.Pytester, ctr_direct: Path) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-gates=sla", f"--tfs-report={report}", "-rA",
        *QUICK, timeout=540)
    result.assert_outcomes(passed=4, failed=3)
    result.stdout.fnmatch_lines([
        "*tfs load [[]open loop, 100 req/s poisson[]] window 1/*: sent *",  # progress line
        "*gate sla FAILED: Invalid value 'fast' for argument p99_ms= of marker tfs_sla on "
        "test_user.py::test_nonsense_value: must be a number*(option --tfs-sla-p99-ms)*",
        "*gate sla FAILED: Unknown argument(s) p99 in marker tfs_sla on "
        "test_user.py::test_unknown_argument; this gate takes: arrival, baseline, *",
        "*gate sla FAILED: p99: * requests over 0.001 ms*, true p99 > 0.001 ms at 50 % "
        "confidence*",
    ])
    gates = {g.get("target", "default"): g for g in _gates(report)}
    default = gates["default"]
    assert default["passed"], default["message"]
    assert default["measured"]["qps"] >= 90
    # batching evidence from the server's own metrics
    assert default["measured"]["mean_batch_size"] >= 1.0
    assert default["measured"]["batch_sizes"]
    assert "batching max_batch_size 32, batch_timeout_micros 1000" in default["message"]
    assert "Client vs server: server p99" in default["message"]
    # the marker's batching got its own server: a 20 ms batch timeout makes requests queue longer
    patient = gates["test_user.py::test_patient_batches"]
    assert patient["passed"], patient["message"]
    assert patient["details"]["server_label"] == (
        "sla batching max_batch_size 32, batch_timeout_micros 20000")
    assert patient["details"]["batching"]["batch_timeout_micros"] == 20000
    assert patient["measured"]["server_queue_delay_mean_ms"] >= 3.0
    assert (patient["measured"]["server_queue_delay_mean_ms"]
            > default["measured"]["server_queue_delay_mean_ms"])
    closed = gates["test_user.py::test_closed_loop"]
    assert closed["passed"], closed["message"]
    assert closed["threshold"]["concurrency"] == 4
    assert closed["message"].startswith("closed loop, concurrency 4")
    assert closed["details"]["spec"]["mode"] == "closed"
    impossible = gates["test_user.py::test_impossible_target"]
    assert not impossible["passed"]
    assert impossible["threshold"]["p99_ms"] == 0.001


@pytest.mark.xdist_group("bundled-e2e")
@pytest.mark.slow
def test_baseline_runs_the_same_load_side_by_side_with_plots(
        pytester: pytest.Pytester, ctr_direct: Path, ctr_strings: Path) -> None:
    report = pytester.path / "report.json"
    plots = pytester.path / "plots"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", f"--tfs-baseline-model={ctr_strings}", "--tfs-gates=sla",
        f"--tfs-report={report}", f"--tfs-plot={plots}", "--tfs-sla-max-p99-regression-pct=1000",
        "--tfs-sla-max-qps-regression-pct=50", *QUICK, timeout=540)
    result.assert_outcomes(passed=1)
    (gate,) = _gates(report)
    assert gate["passed"], gate["message"]
    assert "candidate p99" in gate["message"] and "baseline p99" in gate["message"]
    table = {row["metric"]: row for row in gate["details"]["table"]}
    assert set(table) >= {"p99_ms", "qps", "mean_batch_size"}
    assert table["p99_ms"]["baseline"] == gate["measured"]["baseline_p99_ms"]
    assert gate["details"]["baseline"]["requests"].startswith("synthesized")  # no warmup file
    assert gate["threshold"]["max_p99_regression_pct"] == 1000
    for path in gate["details"]["plots"]:
        assert Path(path).is_file() and Path(path).read_bytes()[:4] == b"\x89PNG"
    assert len(gate["details"]["plots"]) == 2


# --- the verdict, pure -------------------------------------------------------------------------

def _result(p99_us: int, ok: int, errors: dict[str, int] | None = None, rate: float = 100.0,
            behind: bool = False) -> LoadResult:
    hist = new_histogram()
    for _ in range(ok):
        hist.record_value(p99_us)
    errors = errors or {}
    stats = LatencyStats(hist, 1.0, ok + sum(errors.values()), ok, errors)
    return LoadResult(LoadSpec(rate=rate), "t", stats, [], True, "ok", behind,
                      "it sent the p99 request 9 ms late" if behind else "",
                      ServerEvidence(False), {"UNAVAILABLE": "connection refused"})


def test_every_request_failing_is_one_clear_failure() -> None:
    failures = evidence_failures(_result(0, 0, {"UNAVAILABLE": 300}))
    assert failures == ["every request failed (UNAVAILABLE x300; UNAVAILABLE: connection "
                        "refused)"]


def test_each_limit_is_judged_at_confidence() -> None:
    decision = decide(_result(30_000, 80, {"DEADLINE_EXCEEDED": 20}),
                      SlaLimits(20, max_error_rate=0.01))
    text = "; ".join(decision.failures)
    assert decision.verdict == "FAIL"
    assert "p99: 80 of 80 requests over 20 ms (100.00 %), true p99 > 20 ms at 95 % " in text
    assert "errors: 20 of 100 requests failed (20.00 %), true error rate > 1.00 %" in text
    assert "answered: 80 of 100 requests sent (80.00 %)" in text
    # 100 fast requests cannot show a p99 within target at 95 %: undecided, not PASS
    few = decide(_result(1000, 100), SlaLimits(20, max_error_rate=0.01))
    assert few.verdict == "INCONCLUSIVE" and few.failures == []
    assert few.judgement is not None and "need about 199 more requests" in \
        few.judgement.need_text()
    assert decide(_result(1000, 5000, rate=5000), SlaLimits(20, max_error_rate=0.01)).verdict \
        == "PASS"
    # a late generator only inflates latency: a failure says how much may be the client's
    late = decide(_result(30_000, 5000, rate=5000, behind=True), SlaLimits(20, max_error_rate=0.01))
    assert late.failures[-1] == "(the generator itself was late: it sent the p99 request 9 ms " \
        "late)"
    short = _result(1000, 100, behind=True)
    short.missed = 900
    assert evidence_failures(short)[0].startswith(
        "the load generator could not offer 100 req/s, so the server was not tested at that rate")


def test_baseline_regressions_in_percent() -> None:
    candidate, baseline = _result(12_000, 90), _result(10_000, 100)
    failures = regression_failures(candidate, baseline, p99_regr=10, qps_regr=5)
    assert re.match(r"p99 12\.0\d ms is 20\.0% above the baseline's 10\.0\d ms \(limit \+10%\)",
                    failures[0])
    assert failures[1].startswith("throughput 90 req/s is 10.0% below the baseline's 100")
    assert regression_failures(candidate, baseline, p99_regr=25, qps_regr=15) == []


def test_nothing_measured_never_passes() -> None:
    failures = evidence_failures(_result(0, 0))
    assert len(failures) == 1 and failures[0].startswith("no request was measured")
