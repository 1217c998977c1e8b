"""The bundled launcher's lifecycle: start, stop idempotent, failures with log tails, no leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ModelLoadError, ServerStartError, ServerTimeoutError
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher

pytestmark = pytest.mark.xdist_group("bundled-e2e")


def server_pids(tag: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"pytest_tfserving.bundled_server.*{tag}"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def config(version_dir: Path, name: str | None = None) -> ServeConfig:
    return ServeConfig(model_name=name or f"m{uuid.uuid4().hex[:8]}",
                       version_dir=version_dir, version=1)


def test_start_predict_stop_is_idempotent_and_leaves_nothing(tf1_linear):
    cfg = config(tf1_linear / "1")
    with BundledLauncher(cfg) as launcher:
        endpoint = launcher.start(Deadline.after(60))
        assert endpoint.grpc_address.startswith("127.0.0.1:")
        from pytest_tfserving.client import TFServingClient

        with TFServingClient(endpoint.grpc_address, cfg.model_name) as client:
            out = client.predict({"x": np.ones((2, 4), np.float32)})
            assert out["y"].shape == (2, 2)
            assert client.status()[0][:2] == (1, "AVAILABLE")
        assert server_pids(cfg.model_name)
        launcher.stop()
        launcher.stop()
    assert not server_pids(cfg.model_name)


def test_load_failure_reports_end_state_with_log_tail(tmp_path, tf1_linear):
    broken = tmp_path / "1"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    launcher = BundledLauncher(config(broken))
    with pytest.raises(ModelLoadError) as info:
        launcher.start(Deadline.after(60))
    launcher.stop()
    assert "could not load model" in str(info.value)
    notes = "\n".join(info.value.__notes__)
    assert "BEGIN bundled server log" in notes and "END bundled server log" in notes
    assert not server_pids(launcher.config.model_name)


def test_deadline_too_short_is_a_timeout_naming_the_option(tf1_linear):
    launcher = BundledLauncher(config(tf1_linear / "1"))
    with pytest.raises(ServerTimeoutError, match="Raise --tfs-start-timeout"):
        launcher.start(Deadline.after(0.3))
    launcher.stop()
    assert not server_pids(launcher.config.model_name)


def test_server_killed_during_start_is_reported(tf1_linear):
    cfg = config(tf1_linear / "1")
    launcher = BundledLauncher(cfg)

    import threading

    def kill_soon() -> None:
        for _ in range(100):
            pids = server_pids(cfg.model_name)
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(ServerStartError, match="exited before the model was AVAILABLE "
                                               r"\(killed by signal SIGKILL\)"):
        launcher.start(Deadline.after(60))
    killer.join()
    launcher.stop()
    assert not server_pids(cfg.model_name)


def test_pytest_run_leaves_no_server_after_pass_or_failure(pytester, tf1_linear):
    name = f"leak{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(
        """
        def test_uses_server(tfs_server):
            assert tfs_server.grpc_address

        def test_fails(tfs_server):
            assert False, "planted failure"
        """
    )
    result = pytester.runpytest_subprocess(
        f"--tfs-model={tf1_linear}", f"--tfs-model-name={name}", "--tfs-backend=bundled",
        "--tfs-gates=none", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert not server_pids(name)


def test_failure_text_leaves_out_tensorflow_start_up_notices(tmp_path, tf1_linear):
    """oneDNN/CUDA/CPU-feature/absl lines are in the full log, never in the failure's tail."""
    broken = tmp_path / "1"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    # oneDNN on (the bundled server turns it off by default, as TF Serving's release build)
    launcher = BundledLauncher(config(broken), env={"TF_CPP_MIN_LOG_LEVEL": "0",
                                                    "TF_ENABLE_ONEDNN_OPTS": "1"})
    with pytest.raises(ModelLoadError) as info:
        launcher.start(Deadline.after(60))
    notes = "\n".join(info.value.__notes__)
    full = launcher.logs()
    for notice in ("oneDNN custom operations are on", "Could not find cuda drivers",
                   "All log messages before absl::InitializeLog() is called"):
        assert notice in full
        assert notice not in notes
    assert "Running gRPC ModelServer" in notes
    assert "BEGIN bundled server log" in notes
