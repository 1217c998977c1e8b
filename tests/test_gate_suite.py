"""The default gate suite end to end: real bundled server, gate table, JSON report, failures."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.xdist_group("bundled-e2e")


def test_gate_suite_serves_ctr_direct_and_reports(pytester, ctr_direct):
    pytester.makepyfile(
        """
        import numpy as np

        def test_team_check(tfs_client, tfs_model, tfs_server):
            assert tfs_server.backend == "bundled"
            out = tfs_client.predict({
                "user_id": np.array([1], np.int64), "ad_id": np.array([2], np.int64),
                "category_id": np.array([3], np.int64), "dense": np.zeros((1, 8), np.float32)})
            assert out["probability"].shape == (1, 1)
            assert tfs_model.version == 1
        """
    )
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=bundled", "--tfs-gates=serving",
        f"--tfs-report={report}", "-v", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*tfs-gates::test_gate?serving? PASSED*",
        "*TF Serving release gate*",
        "model ctr_direct v1; backend bundled (*pytest_tfserving.bundled_server)*",
        "gate*verdict*threshold*measured*",
        "serving*PASS*rtol=0.0001*signatures_answered=1*",
        "release gate PASSED",
    ])
    data = json.loads(report.read_text())
    assert data["schema"] == 1
    assert data["backend"]["kind"] == "bundled"
    assert "pytest_tfserving.bundled_server" in data["backend"]["image_or_binary"]
    assert data["model"]["name"] == "ctr_direct"
    assert data["model"]["signatures"]["serving_default"]["inputs"]["dense"]["shape"] == [-1, 8]
    (gate,) = data["gates"]
    assert gate["name"] == "serving" and gate["passed"] is True
    assert set(gate) >= {"name", "passed", "threshold", "measured", "message"}
    assert gate["measured"]["signatures_answered"] == 1
    # playbook batching is on: the warmup records' examples answer alike alone, coalesced by
    # the batcher and in one request
    invariance = gate["details"]["invariance"]["serving_default"]
    assert invariance["ok"] is True and invariance["examples"] >= 4, invariance
    assert "answers unchanged under batching for 1 signature(s)" in gate["message"]


def test_model_that_fails_to_load_fails_gate_with_log(pytester, ctr_direct):
    broken = pytester.path / "broken"
    shutil.copytree(ctr_direct / "1", broken / "1")
    for f in (broken / "1" / "variables").iterdir():
        f.write_bytes(b"not a checkpoint")
    result = pytester.runpytest_subprocess(
        f"--tfs-model={broken}", "--tfs-backend=bundled", "--tfs-gates=serving",
        "--tfs-start-timeout=60", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*gate serving FAILED: TF Serving could not load model 'broken' version 1*",
        "*BEGIN bundled server log*",
        "*END bundled server log*",
        "release gate FAILED",
    ])


def test_every_signature_of_digits_including_classify_and_regress(pytester, digits):
    result = pytester.runpytest_subprocess(
        f"--tfs-model={digits}", "--tfs-backend=bundled", "--tfs-gates=serving", "-v",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["serving*PASS*signatures_answered=3*"])


def test_tf_example_signature_is_served_with_requests_built_from_parse_spec(pytester,
                                                                            ctr_strings):
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_strings}", "--tfs-backend=bundled", "--tfs-gates=serving",
        f"--tfs-report={report}", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    gate = json.loads(report.read_text())["gates"][0]
    assert (gate["details"]["per_signature"]["serving_default"]["request"]
            == "tf.Example built from the graph's parse spec")


def test_marker_runs_gate_on_user_test_with_overrides(pytester, ctr_direct):
    pytester.makepyfile(
        """
        import pytest

        # no rtol; atol 1e-6: the bundled server runs TF Serving's Eigen kernels, the in-process
        # reference oneDNN's (ctr_direct: ~3e-8 apart)
        @pytest.mark.tfs_serving(rtol=0.0, atol=1e-6, batch_size=2)
        def test_exact_match():
            pass

        @pytest.mark.tfs_serving(tolerance=3)
        def test_nonsense_argument():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=bundled", "--tfs-gates=none", "-p",
        "no:cacheprovider",
    )
    result.stdout.fnmatch_lines([
        "*Unknown argument(s) tolerance in marker tfs_serving on *test_nonsense_argument*"
        "this gate takes: atol, batch_size, rtol, signatures*",
    ])
    result.assert_outcomes(passed=1, failed=1)


def test_under_xdist_the_controller_reports_every_workers_gates(pytester, ctr_strings):
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_strings}", "--tfs-gates=no_string_ops,direct_tensor_inputs,warmup",
        f"--tfs-report={report}", "-n", "2", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*TF Serving release gate*", "no_string_ops*FAIL*",
                                 "release gate FAILED"])
    data = json.loads(report.read_text())
    assert sorted(g["name"] for g in data["gates"]) == [
        "direct_tensor_inputs", "no_string_ops", "warmup"]
    assert data["passed"] is False
