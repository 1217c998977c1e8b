"""No orphans: a server dies with the pytest process that started it, even one killed with
SIGKILL, and the next run removes the staging dirs that dead runs left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from server_helpers import process_running, wait_until

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ModelLoadError
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.staging import OWNER_FILE, make_staging_dir, sweep_dead

pytestmark = pytest.mark.xdist_group("bundled-e2e")

HOLD_TEST = '''
import json, os, time
from pathlib import Path

def test_hold(tfs_server):
    extra = tfs_server.endpoint.extra
    Path(os.environ["TFS_HOLD_OUT"]).write_text(
        json.dumps({"pid": extra["pid"], "workdir": str(Path(extra["log"]).parent)}))
    time.sleep(600)
'''

USE_TEST = '''
def test_use(tfs_server):
    assert tfs_server.death() is None
'''


def shim(tmp_path: Path) -> Path:
    """A tensorflow_model_server that execs the bundled server (same flags)."""
    path = tmp_path / "bin" / "tensorflow_model_server"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m pytest_tfserving.bundled_server "$@"\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("backend", ["bundled", "binary"])
def test_sigkilled_pytest_takes_its_server_along_and_the_next_run_sweeps_its_dir(
        pytester, ctr_direct, tmp_path, backend):
    pytester.makepyfile(test_hold=HOLD_TEST, test_use=USE_TEST)
    out = tmp_path / "hold.json"
    args = [f"--tfs-model={ctr_direct}", f"--tfs-model-name=o{uuid.uuid4().hex[:8]}",
            f"--tfs-backend={backend}", "--tfs-gates=none", "-p", "no:cacheprovider"]
    if backend == "binary":
        args.append(f"--tfs-binary={shim(tmp_path)}")
    killed = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "test_hold.py"], cwd=pytester.path,
        env={**os.environ, "TFS_HOLD_OUT": str(out)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: out.exists() or killed.poll() is not None, timeout=180, step=0.2)
        assert out.exists(), "the held run never had a server up"
        held = json.loads(out.read_text())
        server, workdir = int(held["pid"]), Path(held["workdir"])
        assert process_running(server) and (workdir / OWNER_FILE).is_file()
        killed.send_signal(signal.SIGKILL)  # pytest only: its server is in another session
        killed.wait(timeout=30)
        gone_after = wait_until(lambda: not process_running(server), timeout=5, step=0.05)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(timeout=30)
    print(f"{backend} server gone {gone_after:.2f} s after pytest was SIGKILLed")
    assert workdir.is_dir(), "SIGKILL left the staging dir behind"

    result = pytester.runpytest_subprocess(*args, "test_use.py")
    result.assert_outcomes(passed=1)
    assert not workdir.exists(), "the next run removes the dead run's staging dir"


def test_sweep_removes_only_dirs_whose_owner_is_gone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive, foreign, unowned = (tmp_path / name for name in (
        "tfs-bundled-dead", "tfs-binary-alive", "other-dead", "tfs-load-unowned"))
    for path in (dead, alive, foreign, unowned):
        path.mkdir()
    (dead / OWNER_FILE).write_text(f"{child.pid}\n")
    (foreign / OWNER_FILE).write_text(f"{child.pid}\n")
    (alive / OWNER_FILE).write_text(f"{os.getpid()}\n")
    assert sweep_dead(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and foreign.is_dir() and unowned.is_dir()


def test_a_reused_pid_does_not_keep_a_dir(tmp_path):
    made = make_staging_dir("tfs-bundled-")
    try:
        pid = (made / OWNER_FILE).read_text().split()[0]
        assert pid == str(os.getpid()) and Path(tempfile.gettempdir()) == made.parent
        stale = tmp_path / "tfs-docker-stale"
        stale.mkdir()
        (stale / OWNER_FILE).write_text(f"{os.getpid()} 1\n")  # our pid, another start time
        assert sweep_dead(tmp_path) == [stale]
    finally:
        made.joinpath(OWNER_FILE).unlink()
        made.rmdir()


def test_failed_start_removes_its_staging_dir_and_keeps_the_log(tmp_path):
    broken = tmp_path / "1"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    launcher = BundledLauncher(ServeConfig(model_name=f"f{uuid.uuid4().hex[:8]}",
                                           version_dir=broken, version=1))
    started = time.monotonic()
    with pytest.raises(ModelLoadError):
        launcher.start(Deadline.after(120))
    assert time.monotonic() - started < 120
    assert launcher.endpoint is not None
    workdir = Path(launcher.endpoint.extra["log"]).parent
    assert not workdir.exists() and launcher.workdir is None
    assert "Running gRPC ModelServer" in launcher.logs(), "the log outlives the staging dir"
    death = launcher.death()
    assert death is not None and death.how == "stopped by pytest-tfserving"
