"""``death()`` of a started server: None while it runs, then how it ended (signal or exit code,
or a remote target that stopped answering), when, and its last log lines; ``abort_reason``."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from server_helpers import wait_until

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.launchers.death import abort_reason
from pytest_tfserving.launchers.remote import RemoteLauncher
from pytest_tfserving.session import RunningServer

pytestmark = pytest.mark.xdist_group("bundled-e2e")


def config(ctr_direct: Path) -> ServeConfig:
    return ServeConfig(model_name=f"d{uuid.uuid4().hex[:8]}", version_dir=ctr_direct / "1",
                       version=1)


@pytest.mark.parametrize(("sig", "how"), [(signal.SIGKILL, "killed by signal SIGKILL"),
                                          (signal.SIGTERM, "exit code 0")])
def test_killed_server_reports_how_and_when_it_ended(ctr_direct, sig, how):
    """SIGKILL ends the server at once; SIGTERM is TF Serving's clean shutdown (exit code 0)."""
    launcher = BundledLauncher(config(ctr_direct))
    try:
        endpoint = launcher.start(Deadline.after(120))
        running = RunningServer(launcher, endpoint, launcher.config)
        abort = abort_reason(running)
        assert running.death() is None and abort() is None
        before_wall, before = time.time(), time.monotonic()
        os.kill(endpoint.extra["pid"], sig)
        wait_until(lambda: running.death() is not None, timeout=30, step=0.25)
        death = running.death()
        assert death is not None
        assert death.how == how
        if sig == signal.SIGKILL:
            assert (death.signal, death.exit_code) == ("SIGKILL", None)
        else:
            assert (death.signal, death.exit_code) == (None, 0)
        assert death.monotonic >= before and death.wall_time >= before_wall - 1
        assert any("Running gRPC ModelServer" in line for line in death.log_tail)
        assert 0 < len(death.log_tail) <= 20
        sentence = death.describe()
        assert sentence.startswith(f"The bundled server (pid {endpoint.extra['pid']}) stopped "
                                   "running at ")
        assert f"({how})" in sentence
        assert abort() == sentence
        assert running.death() is death, "kept once seen"
    finally:
        launcher.cleanup()


def test_a_stopped_server_says_it_was_stopped(ctr_direct):
    launcher = BundledLauncher(config(ctr_direct))
    assert launcher.death() is None, "nothing started yet"
    launcher.start(Deadline.after(120))
    launcher.cleanup()
    death = launcher.death()
    assert death is not None and death.how == "stopped by pytest-tfserving"
    assert "Running gRPC ModelServer" in launcher.logs(), "the log outlives the staging dir"


def test_remote_target_that_stops_answering_is_dead_after_a_second(ctr_direct):
    local = BundledLauncher(config(ctr_direct))
    try:
        endpoint = local.start(Deadline.after(120))
        remote = RemoteLauncher(local.config, BackendSettings(target=endpoint.grpc_address))
        remote.start(Deadline.after(30))
        abort = abort_reason(remote)
        for _ in range(4):  # answering: alive on every poll
            assert abort() is None
            time.sleep(0.25)
        os.kill(endpoint.extra["pid"], signal.SIGKILL)
        killed = time.monotonic()
        took = wait_until(lambda: remote.death() is not None, timeout=15, step=0.25)
        death = remote.death()
        assert death is not None and death.how.startswith("stopped answering: UNAVAILABLE")
        assert took >= 1.0 and death.monotonic - killed >= 1.0
        assert death.describe().startswith(
            f"The remote target {endpoint.grpc_address} stopped running at ")
        remote.cleanup()
    finally:
        local.cleanup()
