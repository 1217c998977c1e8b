"""Bundled server vs in-process model calls, measured side by side in one run (ratios only).

    python benchmarks/bench_server.py [--model fixtures/models/ctr_direct] [--seconds 3]

(a) saturated throughput of the server (batching off) vs direct in-process calls at the same batch
    size (batch 1 and 32; 8 concurrent streams): vs the eager TF2 signature call, and (a') vs the
    prepared Session callable the server itself runs,
(b) p50 overhead per request at low load (one request at a time: server p50 minus in-process p50),
(c) throughput with batching on vs off, 32 concurrent streams sending one example each, for
    ctr_direct (per-request RPC work dominates: the arithmetic bound is printed with its numbers)
    and image_cnn (the model call dominates: where batching pays off).
The client is h2load (C, cheap on CPU) in its own process; a Python grpc.aio Predict echo server
(fixed response) gives the per-request RPC floor. The in-process baseline runs before any server
starts, so the two never share the CPU.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_inputs(info: Any, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    sig = info.signatures["serving_default"]
    out = {}
    for key, spec in sig.inputs.items():
        shape = [n if d is None else d for d in (spec.shape or (None,))]
        if spec.numpy_dtype.startswith("int"):
            out[key] = rng.integers(0, 100, shape).astype(spec.numpy_dtype)
        else:
            out[key] = rng.random(shape).astype(spec.numpy_dtype)
    return out


def in_process(model: Path, inputs: dict[str, np.ndarray], seconds: float,
               how: str = "eager") -> dict[str, float]:
    """Calls per second and p50 of one thread calling the model in this process: ``eager``, the
    TF2 signature function (what a user runs in-process), or ``session``, the prepared Session
    callable the bundled server itself runs (the server's own floor)."""
    import tensorflow as tf

    if how == "session":
        from pytest_tfserving.bundled_server.servable import load_servable

        runner = load_servable("m", 1, model).signatures["serving_default"]

        def call() -> None:
            runner.run(inputs)
    else:
        fn = tf.saved_model.load(str(model)).signatures["serving_default"]

        def call() -> None:
            for v in fn(**{k: tf.constant(a) for k, a in inputs.items()}).values():
                v.numpy()

    for _ in range(50):
        call()
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t0)
    return {"qps": len(lat) / sum(lat), "p50_us": float(np.median(lat) * 1e6)}


class Server:
    def __init__(self, base: Path, *flags: str) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench_server_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_tfserving.bundled_server", f"--port={self.port}",
             "--model_name=m", f"--model_base_path={base}", "--bind_address=127.0.0.1", *flags],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def wait(self, timeout: float = 120) -> None:
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        stub = model_service_pb2_grpc.ModelServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{self.port}"))
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "m"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                st = stub.GetModelStatus(req, timeout=1).model_version_status[0]
                if st.state == 30:
                    return
                if st.state == 50:
                    raise RuntimeError(st.status.error_message)
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become AVAILABLE")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def h2load_body(inputs: dict[str, np.ndarray]) -> Path:
    """A gRPC-framed PredictRequest file for ``h2load -d``."""
    from tensorflow_serving.apis import predict_pb2

    from pytest_tfserving.tensors import from_numpy

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    for k, v in inputs.items():
        from_numpy(v, proto=req.inputs[k])
    raw = req.SerializeToString()
    f = tempfile.NamedTemporaryFile(prefix="bench_body_", suffix=".bin", delete=False)
    f.write(b"\x00" + struct.pack(">I", len(raw)) + raw)
    f.close()
    return Path(f.name)


def h2load(port: int, body: Path, streams: int, seconds: float) -> dict[str, float]:
    """h2load on one connection with ``streams`` concurrent unary Predict calls for ~seconds."""
    url = f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"

    def run(n: int, log: str | None = None) -> tuple[float, int, float]:
        cmd = ["h2load", "-n", str(n), "-c", "1", "-m", str(streams), "-H",
               "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), url]
        if log:
            cmd.append(f"--log-file={log}")
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0
        m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
        ok = re.search(r"(\d+) succeeded, (\d+) failed", out)
        if m is None or ok is None or ok.group(2) != "0":
            raise RuntimeError(f"h2load failed:\n{out}")
        return float(m.group(1)), int(ok.group(1)), wall

    qps, _, _ = run(max(200, streams * 10))  # warm up, and size the measured run
    n = max(streams * 20, int(qps * seconds))
    with tempfile.NamedTemporaryFile(prefix="bench_h2_", suffix=".log") as log:
        qps, _, _ = run(n, log.name)
        lat = [int(line.split("\t")[2]) for line in Path(log.name).read_text().splitlines()
               if line.count("\t") >= 2]
    return {"qps": qps, "p50_us": float(np.median(lat))}


ECHO = """
import asyncio, sys, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
RESP = predict_pb2.PredictResponse()
class S(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context):
        return RESP
async def main():
    s = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(S(), s)
    s.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await s.start()
    print("ready", flush=True)
    await s.wait_for_termination()
asyncio.run(main())
"""


def echo_qps(body: Path, streams: int, seconds: float) -> float:
    """The per-request floor: a grpc.aio Predict servicer that returns a fixed response."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return h2load(port, body, streams, seconds)["qps"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def serve(base: Path, body: Path, streams: int, seconds: float,
          *flags: str) -> dict[str, float]:
    srv = Server(base, "--enable_model_warmup=false", *flags)
    try:
        srv.wait()
        return h2load(srv.port, body, streams, seconds)
    finally:
        srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "fixtures/models/ctr_direct"))
    parser.add_argument("--heavy", default=str(ROOT / "fixtures/models/image_cnn"))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("bench_server needs h2load (Debian: apt-get install nghttp2-client)")
    from pytest_tfserving.model import inspect_model

    rng = np.random.default_rng(0)
    sec = args.seconds
    rows: list[tuple[str, str, str, str]] = []
    base, heavy = Path(args.model), Path(args.heavy)
    info, hinfo = inspect_model(base), inspect_model(heavy)
    x1, x32 = model_inputs(info, 1, rng), model_inputs(info, 32, rng)
    h1, h32 = model_inputs(hinfo, 1, rng), model_inputs(hinfo, 32, rng)
    ip1, ip32 = in_process(info.version_dir, x1, sec), in_process(info.version_dir, x32, sec)
    hp1, hp32 = in_process(hinfo.version_dir, h1, sec), in_process(hinfo.version_dir, h32, sec)
    sp1 = in_process(info.version_dir, x1, sec, "session")
    sp32 = in_process(info.version_dir, x32, sec, "session")
    b1, b32, hb1 = h2load_body(x1), h2load_body(x32), h2load_body(h1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "batching.txt"
        cfg.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
                       "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n")
        on = ("--enable_batching", f"--batching_parameters_file={cfg}")
        echo = echo_qps(b1, 32, sec)
        srv = Server(base, "--enable_model_warmup=false")
        try:
            srv.wait()
            low = h2load(srv.port, b1, 1, sec)
            sat1 = h2load(srv.port, b1, 8, sec)
            sat32 = h2load(srv.port, b32, 8, sec)
            off = h2load(srv.port, b1, 32, sec)
        finally:
            srv.stop()
        ctr_on = serve(base, b1, 32, sec, *on)
        cnn_off = serve(heavy, hb1, 32, sec)
        cnn_on = serve(heavy, hb1, 32, sec, *on)
    for p in (b1, b32, hb1):
        p.unlink()
    rows += [
        ("(a) saturated req/s, batch 1", f"{sat1['qps']:.0f}", f"{ip1['qps']:.0f}",
         f"{sat1['qps'] / ip1['qps']:.2f} (goal >= 0.8)"),
        ("(a) saturated req/s, batch 32", f"{sat32['qps']:.0f}", f"{ip32['qps']:.0f}",
         f"{sat32['qps'] / ip32['qps']:.2f} (goal >= 0.8)"),
        ("(a') batch 1 vs the Session callable", f"{sat1['qps']:.0f}", f"{sp1['qps']:.0f}",
         f"{sat1['qps'] / sp1['qps']:.2f} (the server's own floor)"),
        ("(a') batch 32 vs the Session callable", f"{sat32['qps']:.0f}", f"{sp32['qps']:.0f}",
         f"{sat32['qps'] / sp32['qps']:.2f}"),
        ("(b) p50 us at 1 stream, batch 1", f"{low['p50_us']:.0f}", f"{ip1['p50_us']:.0f}",
         f"overhead {low['p50_us'] - ip1['p50_us']:.0f} us"),
        ("(c) ctr_direct: 32 streams x 1 example", f"on {ctr_on['qps']:.0f}",
         f"off {off['qps']:.0f}", f"{ctr_on['qps'] / off['qps']:.2f}x (goal >= 5x)"),
        ("(c) image_cnn: 32 streams x 1 example", f"on {cnn_on['qps']:.0f}",
         f"off {cnn_off['qps']:.0f}", f"{cnn_on['qps'] / cnn_off['qps']:.2f}x (goal >= 5x)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'server':>10}  {'baseline':>10}  ratio")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]:>10}  {r[3]}")
    rpc_us = 1e6 / echo
    print(f"\nin-process p50 (one thread): ctr_direct batch 1 {ip1['p50_us']:.0f} us, batch 32 "
          f"{ip32['p50_us']:.0f} us; image_cnn batch 1 {hp1['p50_us']:.0f} us, batch 32 "
          f"{hp32['p50_us']:.0f} us. {os.cpu_count()} cores; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print(f"RPC floor: a grpc.aio echo Predict servicer answers {echo:.0f} req/s "
          f"(~{rpc_us:.0f} us per request of Python gRPC work, 32 streams, h2load).")
    for name, m1, m32, got in (("ctr_direct", ip1, ip32, ctr_on['qps'] / off['qps']),
                               ("image_cnn", hp1, hp32, cnn_on['qps'] / cnn_off['qps'])):
        per_off = rpc_us + m1["p50_us"]
        per_on = rpc_us + m32["p50_us"] / 32
        print(f"(c) bound {name}: (rpc + model@1) / (rpc + model@32 / 32) = ({rpc_us:.0f} + "
              f"{m1['p50_us']:.0f}) / ({rpc_us:.0f} + {m32['p50_us'] / 32:.0f}) = "
              f"{per_off / per_on:.1f}x if one core did everything; measured {got:.2f}x.")


if __name__ == "__main__":
    main()
