"""The binary backend: ``tensorflow_model_server`` from PATH or --tfs-binary, as a process.

The binary here is a shim that execs the bundled server (a real TF-Serving-compatible server that
takes the same flags), exactly as the test image's tensorflow_model_server does."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("bundled-e2e")


@pytest.fixture
def shim_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "tfs-bin"
    bin_dir.mkdir()
    shim = bin_dir / "tensorflow_model_server"
    # Writes its environment's TFS_SHIM_MARK where the test can see --tfs-env arrived.
    shim.write_text(
        "#!/bin/sh\n"
        'if [ -n "$TFS_SHIM_MARK" ]; then echo "$TFS_SHIM_MARK" > "$TFS_SHIM_MARK_FILE"; fi\n'
        f'exec {sys.executable} -m pytest_tfserving.bundled_server "$@"\n'
    )
    shim.chmod(0o755)
    return bin_dir


def test_binary_from_path_serves_the_gate_and_the_report_names_it(pytester, ctr_direct,
                                                                   shim_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(shim_dir) + os.pathsep + os.environ["PATH"])
    mark_file = pytester.path / "mark.txt"
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=binary", "--tfs-gates=serving",
        f"--tfs-report={report}", "--tfs-env=TFS_SHIM_MARK=from-tfs-env",
        f"--tfs-env=TFS_SHIM_MARK_FILE={mark_file}",
    )
    result.assert_outcomes(passed=1)
    shim = str(shim_dir / "tensorflow_model_server")
    result.stdout.fnmatch_lines([f"*backend binary ({shim})*"])
    backend = json.loads(report.read_text())["backend"]
    assert backend["kind"] == "binary" and backend["image_or_binary"] == shim
    assert mark_file.read_text().strip() == "from-tfs-env"


def test_tfs_binary_option_takes_precedence_over_path(pytester, ctr_direct, shim_dir):
    report = pytester.path / "report.json"
    shim = shim_dir / "tensorflow_model_server"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=binary", "--tfs-gates=serving",
        f"--tfs-binary={shim}", f"--tfs-report={report}",
    )
    result.assert_outcomes(passed=1)
    assert json.loads(report.read_text())["backend"]["image_or_binary"] == str(shim)


def test_binary_missing_from_path_fails_with_the_fix(pytester, ctr_direct, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=binary", "--tfs-gates=serving")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*tensorflow_model_server is not on PATH*--tfs-binary=PATH*"])


def test_binary_that_exits_silently_says_it_wrote_nothing(pytester, ctr_direct):
    """--tfs-binary=/bin/false: no "see the log below" with nothing below; the command line
    and the exit code instead."""
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=binary", "--tfs-gates=serving",
        "--tfs-binary=/bin/false")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*The tensorflow_model_server exited before the model was AVAILABLE (exit code 1) and "
        "wrote no output. Command: /bin/false --port=* Fix: run that command by hand*"])
    assert "See the log below" not in result.stdout.str()
    assert "BEGIN tensorflow_model_server log" not in result.stdout.str()
