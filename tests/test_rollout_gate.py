"""The rollout gate end to end on the bundled server: the baseline served as version N, the
candidate placed as N+1 under an open-loop load, the server's own poll swapping them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("bundled-e2e")

# Short phases at a light rate; the p99 criterion judged leniently (a loaded 2-core machine
# stalls now and then): these tests check what is measured and said, not this machine's speed.
QUICK = ["--tfs-backend=bundled", "--tfs-gates=rollout", "--tfs-rollout-rate=200",
         "--tfs-rollout-steady=2", "--tfs-sla-confidence=0.5",
         "--tfs-rollout-max-p99-ratio=200"]


def rollout(pytester: pytest.Pytester, candidate: Path, baseline: Path,
            *extra: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={candidate}", f"--tfs-baseline-model={baseline}", *QUICK,
        f"--tfs-report={report}", *extra)
    gate = next(g for g in json.loads(report.read_text())["gates"] if g["name"] == "rollout")
    return result, gate


def copy_model(source: Path, target: Path, warmup: bool = True) -> Path:
    shutil.copytree(source, target)
    if not warmup:
        shutil.rmtree(target / "1" / "assets.extra")
    return target


def unloadable(source: Path, target: Path) -> Path:
    """A copy whose warmup file is not TFRecord: TF Serving fails the version's load."""
    broken = copy_model(source, target)
    (broken / "1" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"\x00" * 64)
    return broken


def test_compatible_candidate_passes_with_figures_per_phase(pytester, ctr_direct):
    plots = pytester.path / "plots"
    result, gate = rollout(pytester, ctr_direct, ctr_direct, f"--tfs-plot={plots}")
    assert gate["verdict"] == "PASS", gate["message"]
    result.assert_outcomes(passed=1)
    phases = gate["details"]["phases"]
    assert list(phases) == ["before", "swap", "after"]
    assert all(phases[name]["errors"] == {} for name in phases)
    assert phases["before"]["versions"] == {"1": phases["before"]["ok"]}
    assert phases["after"]["versions"] == {"2": phases["after"]["ok"]} and phases["after"]["ok"]
    measured = gate["measured"]
    assert measured["swap_errors"] == 0 and measured["to_available_s"] > 0
    assert measured["candidate_replayed_records"] == 10  # ctr_direct's warmup file
    assert "same directory" in gate["message"]
    assert gate["details"]["memory"]["both_loaded_peak_mib"] > 0
    assert gate["details"]["plots"] == [str(plots / "rollout-timeline.png")]
    assert (plots / "rollout-timeline.png").stat().st_size > 10_000


def test_candidate_with_other_inputs_fails_naming_them(pytester, ctr_direct, ctr_strings):
    result, gate = rollout(pytester, ctr_strings, ctr_direct)
    result.assert_outcomes(failed=1)
    assert gate["verdict"] == "FAIL"
    for name in ("ad_id", "user_id", "dense", "category_id"):
        assert f"input '{name}' removed or renamed" in gate["message"]
    assert "input 'examples' added" in gate["message"]
    assert gate["measured"]["after_errors"] == gate["measured"]["after_requests"] > 0


def test_candidate_without_warmup_shows_its_cold_first_answers_in_the_swap(
        pytester, ctr_direct, tmp_path):
    cold = copy_model(ctr_direct, tmp_path / "ctr_direct", warmup=False)
    _, gate = rollout(pytester, cold, ctr_direct)
    measured, phases = gate["measured"], gate["details"]["phases"]
    assert measured["candidate_replayed_records"] == 0
    first = measured["candidate_first_ms"]
    assert len(first) == 3
    assert phases["swap"]["versions"].get("2", 0) >= 3  # the first answers count in the swap
    assert max(first) > phases["after"]["p50_ms"]


def test_candidate_that_fails_to_load_leaves_the_baseline_serving(pytester, ctr_direct, tmp_path):
    broken = unloadable(ctr_direct, tmp_path / "ctr_direct")
    result, gate = rollout(pytester, broken, ctr_direct)
    result.assert_outcomes(failed=1)
    assert "the candidate (version 2) failed to load" in gate["message"]
    assert "the baseline kept serving (version 1 AVAILABLE" in gate["message"]
    assert gate["details"]["baseline_after_failure"]["answers_after_placing"] > 0


def test_baseline_that_never_loads_says_nothing_was_rolled_out(pytester, ctr_direct, tmp_path):
    broken = unloadable(ctr_direct, tmp_path / "ctr_direct")
    result, gate = rollout(pytester, ctr_direct, broken)
    result.assert_outcomes(failed=1)
    assert "never served, so nothing was rolled out" in gate["message"]


def test_remote_backend_is_refused_with_the_reason(pytester, ctr_direct, running):
    result, gate = rollout(pytester, ctr_direct, ctr_direct, "--tfs-backend=remote",
                           f"--tfs-target={running.grpc_address}")
    result.assert_outcomes(failed=1)
    assert "refused on the remote backend" in gate["message"]
    assert "--tfs-backend=bundled, binary or docker" in gate["message"]


def test_the_gate_joins_the_default_suite_only_with_a_baseline(pytester, ctr_direct):
    listed = pytester.runpytest_subprocess(f"--tfs-model={ctr_direct}", "--collect-only", "-q",
                                           f"--tfs-baseline-model={ctr_direct}")
    assert "test_gate[rollout]" in listed.stdout.str()
    alone = pytester.runpytest_subprocess(f"--tfs-model={ctr_direct}", "--collect-only", "-q")
    assert "test_gate[rollout]" not in alone.stdout.str()
