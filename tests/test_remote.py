"""The remote backend gates an endpoint that is already running: nothing is launched."""

from __future__ import annotations

import fnmatch
import json
import time

import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.remote import RemoteLauncher, TargetUnreachableError
from pytest_tfserving.ports import free_port

pytestmark = pytest.mark.xdist_group("bundled-e2e")


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


def test_unreachable_remote_fails_fast_naming_the_target_and_the_fix(pytester, ctr_direct):
    """Nothing listens at the target: a few seconds' connection probe, not the start timeout;
    the gate and the test after it fail with the same message."""
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    pytester.makepyfile("def test_uses_server(tfs_server):\n    pass\n")
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", "--tfs-backend=remote", "--tfs-gates=serving",
        f"--tfs-target={target}", "--tfs-start-timeout=120")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=1, errors=1)
    expected = (f"*Nothing answers gRPC at the remote target {target} (from --tfs-target): no "
                "connection within 5 s. Fix: check the host and the gRPC port*")
    assert len(fnmatch.filter(result.outlines, expected)) >= 2, result.stdout.str()
    assert "was not AVAILABLE" not in result.stdout.str()
    assert elapsed < 110, "the run must not wait out --tfs-start-timeout=120"


def test_unreachable_failure_is_cached_for_every_later_config(ctr_direct):
    """A second server config (another gate's) fails at once with the same message."""
    settings = BackendSettings(target=f"127.0.0.1:{free_port()}")
    first = RemoteLauncher(ServeConfig(model_name="m", version_dir=ctr_direct / "1", version=1),
                           settings)
    second = RemoteLauncher(ServeConfig(model_name="m", version_dir=ctr_direct / "1", version=1,
                                        label="other gate"), settings)
    started = time.monotonic()
    with pytest.raises(TargetUnreachableError) as one:
        first.start(Deadline.after(120))
    probed = time.monotonic() - started
    with pytest.raises(TargetUnreachableError) as two:
        second.start(Deadline.after(120))
    cached = time.monotonic() - started - probed
    assert str(one.value) == str(two.value)
    assert settings.target in str(one.value) and "Fix:" in str(one.value)
    assert probed < 10 and cached < 1, (probed, cached)
