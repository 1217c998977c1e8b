"""The release verdict is PASS only when every selected gate ran and passed: a gate that never
ran, crashed or was interrupted fails it, in the table and in the JSON; each gate's verdict and
figures reach JUnit XML as properties."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                           "no:xdist", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def gates(report: Path) -> dict[str, dict]:
    return {g["name"]: g for g in json.loads(report.read_text())["gates"]}


def test_a_gate_that_never_ran_fails_the_release(tmp_path: Path, ctr_strings: Path) -> None:
    report = tmp_path / "report.json"
    proc = run(tmp_path, f"--tfs-model={ctr_strings}", "--tfs-gates=no_string_ops,serving",
               "--tfs-backend=bundled", f"--tfs-report={report}", "-x")
    assert proc.returncode == 1
    found = gates(report)
    assert found["no_string_ops"]["verdict"] == "FAIL"
    assert found["serving"]["verdict"] == "FAIL" and found["serving"]["passed"] is False
    assert "never ran" in found["serving"]["message"]
    assert json.loads(report.read_text())["passed"] is False
    assert "release gate FAILED" in proc.stdout


def test_a_crashing_gate_fails_the_release(tmp_path: Path, ctr_direct: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef tfs_requests():\n"
        "    raise RuntimeError('the request source broke')\n")
    report = tmp_path / "report.json"
    proc = run(tmp_path, f"--tfs-model={ctr_direct}", "--tfs-gates=sla", "--tfs-backend=bundled",
               f"--tfs-report={report}")
    assert proc.returncode == 1
    sla = gates(report)["sla"]
    assert sla["verdict"] == "FAIL"
    assert "crashed with RuntimeError: the request source broke" in sla["message"]
    assert "release gate FAILED" in proc.stdout


# pytest with Ctrl-C raising KeyboardInterrupt even when SIGINT came down ignored (a CI started
# in the background with `nohup ... &` hands it so, and Python keeps an ignored SIGINT ignored)
CTRL_C_RAISES = ("import runpy, signal, sys; signal.signal(signal.SIGINT, "
                 "signal.default_int_handler); sys.argv[0] = 'pytest'; "
                 "runpy.run_module('pytest', run_name='__main__')")


def test_an_interrupted_gate_fails_the_release(tmp_path: Path, ctr_direct: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_RAISES, "-p", "no:cacheprovider", "-p", "no:xdist",
         f"--tfs-model={ctr_direct}", "--tfs-gates=sla", "--tfs-backend=bundled",
         "--tfs-sla-duration=60", "--tfs-sla-min-qps=50", f"--tfs-report={report}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "window 1/" in line or not line:
            break
    assert any("window 1/" in line for line in lines), "".join(lines)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode != 0
    assert "release gate PASSED" not in out
    sla = gates(report)["sla"]
    assert sla["verdict"] == "FAIL" and "interrupted" in sla["message"]


def test_junit_xml_carries_verdict_thresholds_and_figures(tmp_path: Path,
                                                          ctr_strings: Path) -> None:
    junit = tmp_path / "junit.xml"
    proc = run(tmp_path, f"--tfs-model={ctr_strings}", "--tfs-gates=no_string_ops",
               f"--junitxml={junit}")
    assert proc.returncode == 1
    case = ET.parse(junit).getroot().find(".//testcase")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["tfs_gate"] == "no_string_ops"
    assert props["tfs_verdict"] == "FAIL"
    assert props["tfs_threshold_string_ops"] == "0"
    assert int(props["tfs_measured_string_ops"] or 0) > 0


@pytest.mark.parametrize("policy,rc", [("fail", 1), ("warn", 0)])
def test_inconclusive_sla_follows_the_policy(tmp_path: Path, ctr_direct: Path, policy: str,
                                             rc: int) -> None:
    # 20 req/s for 1 s cannot show a p99 at 99.9 % confidence: INCONCLUSIVE, never PASS
    report = tmp_path / "report.json"
    proc = run(tmp_path, f"--tfs-model={ctr_direct}", "--tfs-gates=sla", "--tfs-backend=bundled",
               "--tfs-sla-min-qps=20", "--tfs-sla-duration=1", "--tfs-sla-max-duration=1",
               "--tfs-sla-warmup=0.5", "--tfs-sla-confidence=0.999", "--tfs-sla-p99-ms=1000",
               f"--tfs-inconclusive={policy}", f"--tfs-report={report}")
    sla = gates(report)["sla"]
    assert sla["verdict"] == "INCONCLUSIVE", sla["message"]
    assert "need about" in sla["message"] and "more requests" in sla["message"]
    assert proc.returncode == rc, proc.stdout[-2000:]
    assert sla["passed"] is (policy == "warn")
