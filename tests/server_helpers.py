"""Start/stop the bundled server as a real subprocess on free loopback ports (tests only).

Minimal on purpose: the launcher proper is pytest_tfserving/launchers/bundled.py. Every server runs
in its own process group, and ``stop()`` kills the group, so nothing outlives a test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, model_base_path: Path | None, *flags: str, model_name: str = "m",
                 rest: bool = True, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.model_name = model_name
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / (
            f"tfs_server_{self.port}.log")
        model = ([] if model_base_path is None  # flags name --model_config_file
                 else [f"--model_name={model_name}", f"--model_base_path={model_base_path}"])
        if not any(f.startswith("--max_num_load_retries") for f in flags):
            flags = (*flags, "--max_num_load_retries=0")  # a failed load ends at once
        args = [sys.executable, "-m", "pytest_tfserving.bundled_server", f"--port={self.port}",
                f"--rest_api_port={self.rest_port}", *model, "--bind_address=127.0.0.1", *flags]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env, cwd=ROOT)
        self._channel: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def channel(self) -> Any:
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def stub(self) -> Any:
        """A PredictionService stub on this server's channel."""
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel())

    def status(self) -> Any:
        """The first ModelVersionStatus, or None while gRPC does not answer."""
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = self.model_name
        try:
            resp = model_service_pb2_grpc.ModelServiceStub(self.channel()).GetModelStatus(
                req, timeout=2)
        except grpc.RpcError:
            return None
        return resp.model_version_status[0]

    def statuses(self, model_name: str | None = None) -> dict[int, tuple[str, str]]:
        """{version: (state name, error message)} of every version GetModelStatus reports
        ({} while the model is unknown or gRPC does not answer)."""
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        names = get_model_status_pb2.ModelVersionStatus.State
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = model_name or self.model_name
        try:
            resp = model_service_pb2_grpc.ModelServiceStub(self.channel()).GetModelStatus(
                req, timeout=2)
        except grpc.RpcError:
            return {}
        return {s.version: (names.Name(s.state), s.status.error_message)
                for s in resp.model_version_status}

    def wait_for(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        """Poll ``check()`` until it returns something truthy; fail with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not {what} after {timeout}s:\n{self.log()[-4000:]}")

    def wait_state(self, state: str, timeout: float = 60.0) -> Any:
        """Poll until the state is ``state`` (or END); fail with the log tail otherwise."""
        from tensorflow_serving.apis import get_model_status_pb2

        names = get_model_status_pb2.ModelVersionStatus.State
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            st = self.status()
            if st is not None and names.Name(st.state) in (state, "END"):
                return st
            time.sleep(0.1)
        raise AssertionError(f"server not {state} after {timeout}s:\n{self.log()[-3000:]}")

    def wait_available(self, timeout: float = 60.0) -> Any:
        st = self.wait_state("AVAILABLE", timeout)
        if st.state != 30:
            raise AssertionError(f"model failed to load: {st.status.error_message}\n{self.log()}")
        return st

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the server and wait; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def predict_request(model_name: str, inputs: dict[str, Any], signature: str = "",
                    output_filter: tuple[str, ...] = ()) -> Any:
    from tensorflow_serving.apis import predict_pb2

    from pytest_tfserving.tensors import from_numpy

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    if signature:
        req.model_spec.signature_name = signature
    for key, value in inputs.items():
        from_numpy(value, proto=req.inputs[key])
    req.output_filter.extend(output_filter)
    return req


def ctr_inputs(n: int, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(0, 10_000, n).astype(np.int64),
        "ad_id": rng.integers(0, 10_000, n).astype(np.int64),
        "category_id": rng.integers(0, 100, n).astype(np.int64),
        "dense": rng.random((n, 8), dtype=np.float32),
    }


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{labels_text: value}`` for the samples of one metric in a Prometheus page."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            out[head[len(name):]] = float(value)
    return out


def write_warmup(path: Path, requests: list[Any]) -> None:
    """A TFRecord of PredictionLog(predict_log) records (tf.io writer)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for req in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(req)
            w.write(log.SerializeToString())


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(check: Any, timeout: float, step: float = 0.1) -> float:
    """Poll ``check()`` until true; the seconds it took, or AssertionError at ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(step)
    return time.monotonic() - start


def save_batch_centring_model(base: Path) -> Path:
    """A SavedModel (version 1 under ``base``) whose output ``y = x - mean(x over the batch)``:
    right for one example alone, wrong once a batcher coalesces it with others."""
    import tensorflow as tf

    class Centre(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x - tf.reduce_mean(x)}

    module = Centre()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


class OpenLoop:
    """Sends one request every ``1 / rate`` s from a thread, whether or not answers came back
    (open loop), and records each answer: (sent at s, latency ms, answering version, error).

    The collector is off while it sends: a full collection in this process (TF imported) would
    read as server latency.
    """

    def __init__(self, srv: ServerProcess, request: Any, rate: float) -> None:
        import threading

        self._stub, self._request, self._period = srv.stub(), request, 1.0 / rate
        self.answers: list[tuple[float, float, int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._gc_was_enabled = False
        self._t0 = 0.0
        self.sent = 0

    def _done(self, sent: float, future: Any) -> None:
        latency = (time.monotonic() - sent) * 1e3
        try:
            version, error = future.result().model_spec.version.value, ""
        except Exception as exc:  # noqa: BLE001 - a failed answer is recorded, not raised
            version, error = 0, f"{exc.code().name}: {exc.details()}"
        with self._lock:
            self.answers.append((sent - self._t0, latency, version, error))

    def _send(self) -> None:
        i = 0
        while not self._stop.is_set():
            due = self._t0 + i * self._period
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            future = self._stub.Predict.future(self._request, timeout=10)
            future.add_done_callback(lambda f, s=due: self._done(s, f))
            i += 1
            self.sent = i

    def __enter__(self) -> OpenLoop:
        import gc

        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        self._stop.set()
        self._thread.join(5)
        try:
            wait_until(lambda: len(self.answers) >= self.sent, timeout=15, step=0.05)
        finally:
            if self._gc_was_enabled:
                gc.enable()

    def version_answers(self, version: int) -> list[float]:
        """Latencies (ms) of ``version``'s answers, in the order they were sent."""
        with self._lock:
            return [lat for _, lat, v, _ in sorted(self.answers) if v == version]

    def errors(self) -> list[str]:
        with self._lock:
            return [f"{t:.2f}s {err}" for t, _, _, err in sorted(self.answers) if err]
