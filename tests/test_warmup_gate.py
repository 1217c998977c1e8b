"""The warmup gate end to end on the bundled server, and the server-side replay it relies on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.model import inspect_model
from pytest_tfserving.tfrecord import count_records
from pytest_tfserving.warmup_contract import parse_replay_lines
from pytest_tfserving.warmup_make import make_warmup_file

pytestmark = [pytest.mark.xdist_group("bundled-e2e"), pytest.mark.slow]


def test_warmup_gate_passes_on_ctr_direct_with_numbers(pytester: pytest.Pytester,
                                                       ctr_direct: Path) -> None:
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=bundled", "--tfs-gates=warmup",
        "--tfs-warmup-max-cold-ratio=1000", f"--tfs-report={report}", "-v",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*tfs-gates::test_gate?warmup? PASSED*", "warmup*PASS*",
                                 "release gate PASSED"])
    (gate,) = json.loads(report.read_text())["gates"]
    assert gate["name"] == "warmup" and gate["passed"] is True
    measured = gate["measured"]
    assert measured["records"] == measured["replayed_records"] == 10
    assert measured["first_ms"] > 0 and measured["p50_ms"] > 0
    assert measured["cold_ratio"] == pytest.approx(measured["first_ms"] / measured["p50_ms"],
                                                   rel=0.01)
    assert gate["details"]["replay"]["path"].endswith(
        "ctr_direct/1/assets.extra/tf_serving_warmup_requests")
    assert gate["details"]["cold_start"]["serving_default"]["steady_requests"] == 50
    assert "first request" in gate["message"] and "steady p50" in gate["message"]


def test_warmup_gate_fails_on_ctr_strings_with_the_fix(pytester: pytest.Pytester,
                                                       ctr_strings: Path) -> None:
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_strings}", "--tfs-backend=bundled", "--tfs-gates=warmup",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "gate warmup FAILED: warmup file invalid: no warmup file at "
        f"{ctr_strings}/1/assets.extra/tf_serving_warmup_requests*Make one: "
        f"`python -m pytest_tfserving warmup make --model {ctr_strings}/1 --synthetic 10`*",
        "warmup*FAIL*",
        "release gate FAILED",
    ])
    result.stdout.fnmatch_lines(["model ctr_strings v1; backend not started*"])  # no server


def test_marker_arguments_are_checked(pytester: pytest.Pytester, ctr_direct: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tfs_warmup(max_cold_ratio="fast")
        def test_bad_value():
            pass

        @pytest.mark.tfs_warmup(max_ratio=3)
        def test_unknown_argument():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=bundled", "--tfs-gates=none",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*Invalid value 'fast' for argument max_cold_ratio= of marker tfs_warmup on "
        "test_marker_arguments_are_checked.py::test_bad_value: must be a number*"
        "(option --tfs-warmup-max-cold-ratio)*",
        "*Unknown argument(s) max_ratio in marker tfs_warmup on *test_unknown_argument; this "
        "gate takes: compare_without_warmup, max_cold_ratio, signatures, steady_requests*",
    ], consecutive=False)


def test_generated_file_is_replayed_and_counted_once_per_record(tmp_path: Path,
                                                                ctr_strings: Path) -> None:
    """A file made by make_warmup_file is replayed by the bundled server at load; with 3
    iterations per record the log still counts records, as TF Serving's line does."""
    base = tmp_path / "ctr_strings"
    shutil.copytree(ctr_strings, base)
    model = inspect_model(base)
    written = make_warmup_file(model, synthetic=4, batch_sizes=(1, 3))
    assert written == count_records(model.warmup_file) == 4
    config = ServeConfig(model.name, model.version_dir, model.version, warmup_iterations=3)
    with BundledLauncher(config) as launcher:
        launcher.start(Deadline.after(120))
        log = launcher.logs()
    [line] = parse_replay_lines(log)
    assert line.records == 4
    assert line.path.endswith("ctr_strings/1/assets.extra/tf_serving_warmup_requests")
    assert line.micros > 0


def test_server_without_warmup_replay_fails_the_replay_check(ctr_direct: Path) -> None:
    """A server started with --enable_model_warmup=false prints no replay line: the gate's
    log check says the file was not replayed and how to fix it."""
    from pytest_tfserving.gates.cold_start import check_replay
    from pytest_tfserving.session import RunningServer

    model = inspect_model(ctr_direct)
    config = ServeConfig(model.name, model.version_dir, model.version, enable_warmup=False)
    with BundledLauncher(config) as launcher:
        endpoint = launcher.start(Deadline.after(120))
        outcome = check_replay(RunningServer(launcher, endpoint, config), records=10)
    assert outcome["measured"] == {"replayed_records": 0}
    [failure] = outcome["failures"]
    assert "no 'Finished reading warmup data' line" in failure
    assert "--enable_model_warmup=true" in failure


def test_signatures_without_warmup_records_are_reported(pytester: pytest.Pytester,
                                                        digits: Path) -> None:
    base = pytester.path / "digits"
    shutil.copytree(digits, base)
    npz = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "digits_eval.npz"
    make_warmup_file(inspect_model(base), from_npz=npz, records=2,
                     signatures=["serving_default"])
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={base}", "--tfs-backend=bundled", "--tfs-gates=warmup",
        "--tfs-warmup-max-cold-ratio=1000", "--tfs-warmup-steady-requests=5",
        f"--tfs-report={report}", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    (gate,) = json.loads(report.read_text())["gates"]
    assert gate["measured"]["unwarmed_signatures"] == ["classify", "regress"]
    assert gate["measured"]["replayed_records"] == 2
    assert set(gate["details"]["cold_start"]) == {"classify", "regress", "serving_default"}
    assert "no warmup record for signature(s) classify, regress" in gate["message"]
