"""The no_string_ops and direct_tensor_inputs gates end to end (pytester subprocesses, no
server): default suite verdicts, JSON report keys, markers, allowlists, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

GATES = "--tfs-gates=no_string_ops,direct_tensor_inputs"
FINDING_KEYS = {"op_type", "node", "function", "signature", "dtype", "reason"}


def _gates(report: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    data = json.loads(report.read_text())
    assert data["schema"] == 1
    return {g["name"]: g for g in data["gates"]}


def test_ctr_strings_fails_both_gates_with_node_level_findings(
        pytester: pytest.Pytester, ctr_strings: Path) -> None:
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(f"--tfs-model={ctr_strings}", GATES,
                                           f"--tfs-report={report}", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*gate no_string_ops FAILED: 7 string op(s) on the serving path of serving_default "
        "(AsString, ParseExampleV2, StringToHashBucketFast)*",
        "*ParseExampleV2 node 'ParseExample/ParseExampleV2' in __inference_serve_* "
        "[[]signature serving_default[]]: DT_STRING - input*'serialized'*",
        "*Remedy (playbook)*tf.math.floormod*",
        "*gate direct_tensor_inputs FAILED: signature 'serving_default' input 'examples' "
        "(serving_default_examples:0) is DT_STRING (serialized tf.Example, parsed on the serving "
        "path by ParseExampleV2*",
        "*TensorProto*",
    ])
    result.stdout.fnmatch_lines(["no_string_ops*FAIL*string_ops=0*string_ops=7*",
                                 "direct_tensor_inputs*FAIL*string_inputs=0*string_inputs=1*",
                                 "release gate FAILED"])
    gates = _gates(report)
    ops = gates["no_string_ops"]
    assert ops["passed"] is False
    assert ops["threshold"] == {"string_ops": 0, "max_string_time_share": 0.05}
    findings = ops["details"]["findings"]
    assert all(FINDING_KEYS <= set(f) for f in findings)
    assert {f["op_type"] for f in findings} == {"ParseExampleV2", "AsString",
                                                "StringToHashBucketFast"}
    assert {f["signature"] for f in findings} == {"serving_default"}
    assert {f["dtype"] for f in findings} == {"DT_STRING"}
    timing = ops["details"]["time_share"]["serving_default"]
    assert timing["measured"] is True and timing["share"] > 0
    assert ops["measured"]["string_time_share"] == timing["share"]
    direct = gates["direct_tensor_inputs"]
    assert direct["passed"] is False
    (item,) = direct["details"]["findings"]
    assert (item["signature"], item["input"], item["dtype"]) == ("serving_default", "examples",
                                                                 "DT_STRING")


def test_ctr_direct_passes_both_gates_without_a_server(
        pytester: pytest.Pytester, ctr_direct: Path) -> None:
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(f"--tfs-model={ctr_direct}", GATES,
                                           f"--tfs-report={report}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["no_string_ops*PASS*", "direct_tensor_inputs*PASS*",
                                 "release gate PASSED"])
    data = json.loads(report.read_text())
    assert data["backend"]["kind"] is None  # no server was started
    gates = _gates(report)
    assert gates["no_string_ops"]["measured"]["string_ops"] == 0
    assert gates["no_string_ops"]["measured"]["string_time_share"] == 0.0
    assert gates["no_string_ops"]["details"]["findings"] == []
    assert gates["direct_tensor_inputs"]["measured"]["string_inputs"] == 0


def test_markers_allowlists_reasons_and_warnings(pytester: pytest.Pytester,
                                                 ctr_strings: Path) -> None:
    pytester.makeini(
        """
        [pytest]
        tfs_string_op_allow =
            ParseExampleV2=legacy Java clients send tf.Example until Q3
            RegexReplace=stale entry
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tfs_no_string_ops(
            allow={"AsString": "ids arrive as text",
                   "glob:StringToHashBucketFast*": "hash kept for embedding rows"},
            string_time="off")
        @pytest.mark.tfs_direct_inputs(allow=["serving_default/examples=legacy Java clients"])
        def test_allowed():
            pass

        @pytest.mark.tfs_no_string_ops(string_time="off")
        def test_only_ini_allowlist():
            pass

        @pytest.mark.tfs_no_string_ops(allow=["AsString"])
        def test_entry_without_reason():
            pass

        @pytest.mark.tfs_no_string_ops(signatures=["nope"])
        def test_unknown_signature():
            pass
        """
    )
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(f"--tfs-model={ctr_strings}", "--tfs-gates=none",
                                           f"--tfs-report={report}", "-p", "no:cacheprovider",
                                           "-W", "default")
    # a marker's gate fails its test (reported as a failure, or as an error at teardown)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3, outcomes
    result.stdout.fnmatch_lines([
        "*test_only_ini_allowlist*",
        "gate no_string_ops FAILED: 6 string op(s)*(AsString, StringToHashBucketFast)*",
        "*allowlisted: ParseExampleV2 'ParseExample/ParseExampleV2' (legacy Java clients send "
        "tf.Example until Q3)*",
    ])
    result.stdout.fnmatch_lines([
        "*AllowlistWarning: no_string_ops: allowlist entry 'RegexReplace=stale entry' (from ini "
        "tfs_string_op_allow*) matched no reachable string op*"])
    result.stdout.fnmatch_lines([
        "*Invalid value [[]'AsString'[]] for argument allow= of marker tfs_no_string_ops*allowlist "
        "entry 'AsString' needs PATTERN=REASON*"])
    result.stdout.fnmatch_lines(["*Signature 'nope' does not exist in*; it has: "
                                 "serving_default*"])
    gates = [g for g in json.loads(report.read_text())["gates"]
             if g.get("target", "").endswith("test_allowed")]
    by_name = {g["name"]: g for g in gates}
    assert by_name["no_string_ops"]["passed"] is True
    reasons = {a["op_type"]: a["allow_reason"]
               for a in by_name["no_string_ops"]["details"]["allowed"]}
    assert reasons == {"ParseExampleV2": "legacy Java clients send tf.Example until Q3",
                       "AsString": "ids arrive as text",
                       "StringToHashBucketFast": "hash kept for embedding rows"}
    assert by_name["direct_tensor_inputs"]["passed"] is True
    assert by_name["direct_tensor_inputs"]["details"]["allowed"][0]["allow_reason"] == (
        "legacy Java clients")


def test_corrupt_saved_model_fails_both_gates_clearly(pytester: pytest.Pytester,
                                                     ctr_direct: Path) -> None:
    broken = pytester.path / "broken"
    shutil.copytree(ctr_direct / "1", broken / "1")
    (broken / "1" / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a SavedModel")
    result = pytester.runpytest_subprocess(f"--tfs-model={broken}", GATES,
                                           "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines([
        "*gate no_string_ops FAILED: *saved_model.pb is corrupt or not a SavedModel protobuf*"
        "Re-export the model*",
        "*gate direct_tensor_inputs FAILED: *saved_model.pb is corrupt*",
    ])
    result.stdout.fnmatch_lines(["FAILED tfs-gates::test_gate?no_string_ops?*",
                                 "FAILED tfs-gates::test_gate?direct_tensor_inputs?*"])
