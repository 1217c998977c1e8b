"""Latency of the bundled server's answers while it swaps model versions under open-loop load.

    python benchmarks/swap_stall.py [--model fixtures/models/ctr_direct] [--rate 300]
        [--seconds 10] [--swap-at 3] [--runs 1] [--flag=--extra_server_flag ...]

Starts the bundled server on a temp base dir holding version 1 (``--file_system_poll_wait_seconds
=1``), sends gRPC Predict (batch 1, the model's first warmup record) open loop at ``--rate`` from a
thread (async calls sent on schedule; each answer's latency and answering version recorded),
copies version 2 into the base dir after ``--swap-at`` seconds (staged beside it, then renamed in:
it appears whole), and prints latency percentiles before the swap, during it (from the copy to 0.5 s
after v2's first answer) and after it, plus v2's first answers' latencies and the client's send
lag. ``--probe`` runs the server under ``stall_probe.py`` (its GIL stalls and GC passes). TF
Serving's answers to a warmed-up new version are warm and its unload of the old one holds no lock
requests need.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SLOW_MS = 25.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_warmup_request(model: Path, name: str) -> Any:
    from tensorflow_serving.apis import prediction_log_pb2

    from pytest_tfserving.model import WARMUP_RELATIVE_PATH
    from pytest_tfserving.tfrecord import read_records

    record = next(iter(read_records(model / "1" / WARMUP_RELATIVE_PATH)))
    entry = prediction_log_pb2.PredictionLog()
    entry.ParseFromString(record)
    request = entry.predict_log.request
    request.model_spec.name = name
    return request


class Recorder:
    """Open-loop sender: one async Predict every 1/rate s; (sent_s, latency_ms, version)."""

    def __init__(self, stub: Any, request: Any, rate: float) -> None:
        self.stub, self.request, self.period = stub, request, 1.0 / rate
        self.rows: list[tuple[float, float, int]] = []
        self.errors: list[str] = []
        self.lag_ms: list[tuple[float, float]] = []  # (due_s, how late it was sent): CPU noise
        self._lock = threading.Lock()
        self.t0 = 0.0

    def _done(self, sent: float, future: Any) -> None:
        latency = (time.monotonic() - sent) * 1e3
        try:
            version = future.result().model_spec.version.value
        except Exception as exc:  # noqa: BLE001 - an error is a result to report
            with self._lock:
                self.errors.append(f"{sent - self.t0:.2f}s {exc}")
            return
        with self._lock:
            self.rows.append((sent - self.t0, latency, version))

    def run(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        n = int(seconds / self.period)
        for i in range(n):
            due = self.t0 + i * self.period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.lag_ms.append((due - self.t0, (time.monotonic() - due) * 1e3))
            future = self.stub.Predict.future(self.request, timeout=10)
            future.add_done_callback(lambda f, s=due: self._done(s, f))
        time.sleep(1.0)


def pct(values: list[float]) -> str:
    if not values:
        return "n=0"
    a = np.asarray(values)
    return (f"n={len(a)} p50={np.percentile(a, 50):.1f} p99={np.percentile(a, 99):.1f} "
            f"max={a.max():.1f} ms, >{SLOW_MS:.0f} ms: {int((a > SLOW_MS).sum())}")


def report(rows: list[tuple[float, float, int]], swap_at: float) -> dict[str, Any]:
    rows = sorted(rows)
    v2 = [r for r in rows if r[2] == 2]
    first_v2 = min((r[0] + r[1] / 1e3 for r in v2), default=float("inf"))  # answered at
    window_end = first_v2 + 0.5
    before = [lat for t, lat, _ in rows if t < swap_at]
    during = [lat for t, lat, _ in rows if swap_at <= t < window_end]
    after = [lat for t, lat, _ in rows if t >= window_end]
    print(f"  before : {pct(before)}")
    print(f"  during : {pct(during)}  (copy at {swap_at:.1f}s, v2's first answer at "
          f"{first_v2:.2f}s)")
    print(f"  after  : {pct(after)}")
    print(f"  v2 first answers: {[round(r[1], 1) for r in v2[:5]]} ms")
    slowest = sorted(rows, key=lambda r: -r[1])[:8]
    print("  slowest: " + ", ".join(f"{lat:.0f}ms@{t:.2f}s(v{v})" for t, lat, v in slowest))
    return {"v2_first": [r[1] for r in v2[:5]], "during": during, "after": after}


def print_probe(log: str) -> None:
    """The probe's lines from v1's AVAILABLE on (start-up's imports stall by design)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "Successfully loaded" in line), 0)
    keep = ("PROBE", "Successfully loaded", "Unloading", "Done unloading")
    shown = [line for line in lines[start:] if any(k in line for k in keep)]
    print("  server probe (GIL stalls > 15 ms, GCs > 3 ms):\n    " + "\n    ".join(shown))


def one_run(args: argparse.Namespace) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model = Path(args.model)
    name = model.name
    with tempfile.TemporaryDirectory(prefix="swap-stall-") as tmp:
        base = Path(tmp) / name
        shutil.copytree(model / "1", base / "1")
        port = free_port()
        log_path = Path(tmp) / "server.log"
        server = ([str(ROOT / "benchmarks" / "stall_probe.py")] if args.probe
                  else ["-m", "pytest_tfserving.bundled_server"])
        cmd = [sys.executable, *server, f"--port={port}",
               f"--model_name={name}", f"--model_base_path={base}",
               "--file_system_poll_wait_seconds=1", "--bind_address=127.0.0.1", *args.flag]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                    start_new_session=True)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = first_warmup_request(model, name)
            deadline = time.monotonic() + 60
            while True:
                try:
                    stub.Predict(request, timeout=2)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(log_path.read_text()[-3000:]) from None
                    time.sleep(0.2)
            for _ in range(200):
                stub.Predict(request, timeout=2)
            recorder = Recorder(stub, request, args.rate)
            gc.collect()  # this process imported TF too: its own full collections would show
            gc.freeze()  # up as server latency, so nothing it holds now is walked again

            def swap() -> None:
                time.sleep(args.swap_at)
                staged = Path(tmp) / "staged"
                # cp in its own process: a copy in this one holds the GIL in bursts, which
                # reads as late sends (slow answers of v1 at the copy, in 3 of 6 runs)
                subprocess.run(["cp", "-r", str(model / "1"), str(staged)], check=True)
                staged.rename(base / "2")

            swapper = threading.Thread(target=swap, daemon=True)
            swapper.start()
            recorder.run(args.seconds)
            channel.close()
            report(recorder.rows, args.swap_at)
            lags = sorted(recorder.lag_ms, key=lambda r: -r[1])[:3]
            print("  client send lag (this machine's CPU contention, not the server): p99="
                  f"{np.percentile([lag for _, lag in recorder.lag_ms], 99):.1f} ms, worst "
                  + ", ".join(f"{lag:.0f}ms@{t:.2f}s" for t, lag in lags))
            if recorder.errors:
                print(f"  errors: {len(recorder.errors)}, first: {recorder.errors[:3]}")
            if args.log:
                print(log_path.read_text()[-args.log:])
            if args.probe:
                print_probe(log_path.read_text())
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "fixtures/models/ctr_direct"))
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--swap-at", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--log", type=int, default=0, help="print the server log's last N chars")
    parser.add_argument("--probe", action="store_true",
                        help="run the server under benchmarks/stall_probe.py; print its lines")
    parser.add_argument("--flag", action="append", default=[],
                        help="an extra server flag, e.g. --flag=--enable_batching")
    args = parser.parse_args()
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}")
        one_run(args)


if __name__ == "__main__":
    main()
