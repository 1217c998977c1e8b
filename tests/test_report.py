"""The report reads GateResults: the terminal table and the JSON document."""

import json

from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.report import build_report, gate_table, header_line, write_json

RESULTS = [
    GateResult("no_string_ops", False, {"string_ops": 0}, {"string_ops": 7, "op_types": "AsString"},
               "7 string ops"),
    GateResult("int8_delta", False, skipped=True, message="no eval data configured: pass "
               "--tfs-eval-data=FILE.npz or override the tfs_eval_data fixture"),
    GateResult("sla", True, {"p99_ms": 25.0, "min_qps": 300}, {"p99_ms": 12.3456, "qps": 299.7},
               target="tests/test_x.py::test_peak"),
]


def test_table_has_every_gate_verdict_and_wraps_long_cells():
    lines = gate_table(RESULTS, width=110)
    assert lines[0].split() == ["gate", "verdict", "threshold", "measured"]
    text = "\n".join(lines)
    assert "no_string_ops" in text and "FAIL" in text and "string_ops=7" in text
    assert "sla [test_peak]" in text and "p99_ms=12.35" in text
    assert "SKIP" in text and "--tfs-eval-data=FILE.npz" in text  # the skip reason, wrapped
    assert all(len(line) <= 110 for line in lines)


def test_narrow_terminal_gets_one_block_per_gate():
    lines = gate_table(RESULTS, width=72)
    assert lines[0] == "FAIL  no_string_ops"
    assert lines[1] == "    threshold: string_ops=0"
    assert lines[2] == "    measured:  string_ops=7 op_types=AsString"
    assert "PASS  sla [test_peak]" in lines
    assert all(len(line) <= 72 for line in lines)


def test_header_names_backend_and_copes_with_unreadable_model():
    backend = {"kind": "docker", "image_or_binary": "tensorflow/serving:2.19.0@sha256:abc",
               "reason": "--tfs-backend=docker"}
    assert header_line(backend, {"name": "ctr", "version": 3}) == (
        "model ctr v3; backend docker (tensorflow/serving:2.19.0@sha256:abc); "
        "--tfs-backend=docker")
    assert "models/x (unreadable)" in header_line(backend, {"path": "models/x", "error": "bad"})


def test_json_has_the_contract_keys(tmp_path):
    report = build_report(RESULTS, {"name": "ctr"}, {"kind": "bundled", "image_or_binary": "x"},
                          {"backend": "auto"})
    path = tmp_path / "out" / "report.json"
    write_json(path, report)
    data = json.loads(path.read_text())
    assert data["schema"] == 1
    assert data["backend"] == {"kind": "bundled", "image_or_binary": "x"}
    assert data["passed"] is False
    assert [g["name"] for g in data["gates"]] == ["no_string_ops", "int8_delta", "sla"]
    for gate in data["gates"]:
        assert {"name", "passed", "threshold", "measured", "message"} <= set(gate)
    assert data["gates"][2]["target"] == "tests/test_x.py::test_peak"
