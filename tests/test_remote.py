"""The remote backend gates an endpoint that is already running: nothing is launched."""

from __future__ import annotations

import json

import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.ports import free_port

pytestmark = pytest.mark.xdist_group("bundled-e2e")


@pytest.fixture
def running(ctr_direct):
    """A server someone else started (here: the bundled one), serving ctr_direct."""
    config = ServeConfig(model_name="ctr_direct", version_dir=ctr_direct / "1", version=1)
    launcher = BundledLauncher(config)
    try:
        yield launcher.start(Deadline.after(120))
    finally:
        launcher.cleanup()


def test_remote_target_is_gated_and_the_report_says_whose_figures(pytester, ctr_direct,
                                                                  running):
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=remote", "--tfs-gates=serving",
        f"--tfs-target={running.grpc_address}", f"--tfs-rest-target={running.rest_address}",
        f"--tfs-report={report}",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*backend remote ({running.grpc_address})*"])
    backend = json.loads(report.read_text())["backend"]
    assert backend["kind"] == "remote"
    assert backend["image_or_binary"] == running.grpc_address
    assert "load-based figures describe that deployment" in backend["note"]


def test_remote_without_target_says_which_option_to_pass(pytester, ctr_direct):
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=remote", "--tfs-gates=serving")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*--tfs-backend=remote needs the endpoint to gate: pass "
                                 "--tfs-target=HOST:PORT*"])


def test_unreachable_remote_times_out_naming_the_target(pytester, ctr_direct):
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=remote", "--tfs-gates=serving",
        f"--tfs-target={target}", "--tfs-start-timeout=3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*was not AVAILABLE after 3 s*Remote target {target}*"])
