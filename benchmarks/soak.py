"""Soak: the bundled server at 80 % of its max rate for 10 minutes, checked for errors and leaks.

    python benchmarks/soak.py [--minutes 10] [--p99-ms 25] [--fraction 0.8] [--rate R]
                              [--model fixtures/models/ctr_direct] [--json PATH]

1. Starts the bundled server on the model and finds the highest open-loop rate whose p99 stays
   within ``--p99-ms`` (``load.search.max_qps``: short trials, doubling then bisecting), unless
   ``--rate`` gives it.
2. Runs one open-loop load (``load.generator.run_load``) at ``--fraction`` of that rate for
   ``--minutes``, one measurement window per minute (``--window-s``), after ``--warmup-s`` of
   unmeasured load. A sampler thread reads the resident memory (RSS) of the server process and
   of the load worker processes (summed) every ``--sample-s`` seconds.
3. Reports errors, the p99 of each window, and RSS at the end of each window: growth in % from
   the end of the first window (after the warmup: see ``rss_figures``) to the end of the last.

Exit code 1 when a bound is broken: any error, or RSS growth of the server or of the generator
at or over ``--growth-limit-pct`` (5 %). Windows whose p99 is over the budget are listed, not
failed: on a shared machine a neighbour's burst shows there (``--strict-p99`` fails them too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pytest_tfserving.load.driver import run_load  # noqa: E402
from pytest_tfserving.load.result import LoadResult  # noqa: E402
from pytest_tfserving.load.search import MaxQps, max_qps  # noqa: E402
from pytest_tfserving.load.spec import LoadSpec  # noqa: E402

WORKER_MODULE = "pytest_tfserving.load.worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The bundled server in its own process group, logging to a temporary file."""

    def __init__(self, model: Path, name: str, *flags: str) -> None:
        self.port = free_port()
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix="soak_server_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_tfserving.bundled_server", f"--port={self.port}",
             f"--model_name={name}", f"--model_base_path={model}", "--bind_address=127.0.0.1",
             *flags], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_available(self, timeout: float = 180.0) -> None:
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.name
        end = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited {self.proc.returncode}; log: {self.log.name}")
                try:
                    status = stub.GetModelStatus(request, timeout=1).model_version_status[0]
                    if status.state == 30:  # AVAILABLE
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"model not AVAILABLE after {timeout:g} s; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def worker_pids() -> list[int]:
    """This process's load worker children (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return [c.pid for c in psutil.Process().children()
                if WORKER_MODULE in " ".join(_cmdline(c))]
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and WORKER_MODULE in cmd:
            out.append(int(entry.name))
    return out


def _cmdline(proc: Any) -> list[str]:
    try:
        return list(proc.cmdline())
    except Exception:  # noqa: BLE001 - a worker that just exited has no command line
        return []


@dataclass
class Sample:
    t: float  # seconds since the soak load started
    server: int  # bytes
    workers: int  # bytes, summed
    n_workers: int


@dataclass
class Sampler:
    """Samples RSS in a thread until stopped."""

    server_pid: int
    every_s: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.every_s)

    def take(self) -> Sample:
        """One sample now (the sampler thread, and the soak at the end of each window)."""
        pids = worker_pids()
        sample = Sample(time.monotonic() - self.t0, rss_bytes(self.server_pid),
                        sum(rss_bytes(p) for p in pids), len(pids))
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def find_rate(server: Server, payloads: list[bytes], p99_ms: float, seconds: float) -> MaxQps:
    def one(rate: float) -> LoadResult:
        spec = LoadSpec(rate=rate, duration_s=seconds, warmup_s=0.5, stability_pct=0)
        return run_load(server.address, payloads, spec, model_name=server.name)

    found = max_qps(one, p99_ms, lo=50.0, hi=20_000.0, precision=0.05)
    for trial in found.trials:
        print(f"  trial {trial.rate:8.1f} req/s: p99 {trial.p99_ms:7.2f} ms, "
              f"{'pass' if trial.passed else 'fail'} ({trial.reason})", flush=True)
    return found


def growth_pct(start: int, end: int) -> float:
    return (end - start) / start * 100.0 if start else float("inf")


def rss_figures(sampler: Sampler, at_windows: list[Sample]) -> dict[str, Any]:
    """RSS at start and end of the steady load, peak, and the series (MiB) at each window's end.

    Start: the end of the first measured window (after the warmup). A worker builds a window's
    histograms (~0.5 MiB) when it opens, so its size is steady only from the first window on;
    from there, growth means a leak. End: the last window end while every worker still ran (the
    last window is merged after they exit).
    """
    full = max((s.n_workers for s in at_windows), default=0)
    running = [s for s in at_windows if s.n_workers == full and full]
    if len(running) < 2:
        return {"error": f"RSS sampled at {len(running)} window ends with the workers running; "
                         "need >= 2 (run at least 3 windows)"}
    start, end = running[0], running[-1]
    during = [s for s in sampler.samples if start.t <= s.t <= end.t] or [start, end]
    return {
        "start_t_s": round(start.t, 1), "end_t_s": round(end.t, 1), "workers": end.n_workers,
        "server_start_mib": _mib(start.server), "server_end_mib": _mib(end.server),
        "server_growth_pct": round(growth_pct(start.server, end.server), 2),
        "generator_start_mib": _mib(start.workers), "generator_end_mib": _mib(end.workers),
        "generator_growth_pct": round(growth_pct(start.workers, end.workers), 2),
        "server_peak_mib": _mib(max(s.server for s in during)),
        "generator_peak_mib": _mib(max(s.workers for s in during)),
        "at_window_ends": [[round(s.t), _mib(s.server), _mib(s.workers)] for s in at_windows],
    }


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def soak(server: Server, payloads: list[bytes], rate: float, args: argparse.Namespace
         ) -> dict[str, Any]:
    minutes_s = args.minutes * 60.0
    window = min(args.window_s, minutes_s)
    spec = LoadSpec(rate=rate, duration_s=minutes_s, window_s=window, warmup_s=args.warmup_s,
                    stability_pct=0, max_windows=max(1, math.ceil(minutes_s / window - 1e-9)),
                    timeout_s=5.0)
    sampler = Sampler(server.proc.pid, args.sample_s)
    at_windows: list[Sample] = []

    def progress(line: str) -> None:  # called as each window is merged
        at_windows.append(sampler.take())
        rss = at_windows[-1]
        print(f"  {line}; RSS server {_mib(rss.server)} MiB, generator {_mib(rss.workers)} MiB",
              flush=True)

    try:
        result = run_load(server.address, payloads, spec, model_name=server.name,
                          progress=progress, label="soak")
    finally:
        sampler.stop()
    return {
        "rate": round(rate, 1), "requests": result.requests, "qps": round(result.qps, 1),
        "errors": result.errors, "error_count": sum(result.errors.values()),
        "error_details": result.error_details, "p99_ms": round(result.p99_ms, 3),
        "p99_per_window_ms": [round(w.stats.p99_ms, 3) for w in result.windows],
        "window_s": window, "generator_behind": result.generator_behind,
        "generator_note": result.generator_note, "missed": result.missed,
        "server_alive": server.proc.poll() is None,
        "rss": rss_figures(sampler, at_windows),
    }


def broken_bounds(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    run = report["soak"]
    if run["error_count"]:
        out.append(f"{run['error_count']} errors {run['errors']} {run['error_details']}")
    if not run["server_alive"]:
        out.append("the server process died")
    rss = run["rss"]
    if "error" in rss:
        out.append(rss["error"])
    for who in ("server", "generator"):
        if "error" not in rss and rss[f"{who}_growth_pct"] >= args.growth_limit_pct:
            out.append(f"{who} RSS grew {rss[f'{who}_growth_pct']:.2f} % "
                       f"(limit {args.growth_limit_pct:g} %)")
    over = [i for i, p in enumerate(run["p99_per_window_ms"]) if p > args.p99_ms]
    if over:
        note = f"p99 over {args.p99_ms:g} ms in window(s) {over}"
        report["p99_note"] = note
        if args.strict_p99:
            out.append(note)
    return out


def print_report(report: dict[str, Any]) -> None:
    run, rss = report["soak"], report["soak"]["rss"]
    print(f"max rate with p99 <= {report['p99_budget_ms']:g} ms: {report['max_rate']:.0f} req/s;"
          f" soak at {run['rate']:.0f} req/s for {report['minutes']:g} min")
    print(f"requests {run['requests']}, answered {run['qps']:.1f} req/s, errors "
          f"{run['error_count']}, overall p99 {run['p99_ms']:.2f} ms")
    print("p99 per window (ms): " + ", ".join(f"{p:.2f}" for p in run["p99_per_window_ms"]))
    if "error" not in rss:
        print(f"server RSS {rss['server_start_mib']} -> {rss['server_end_mib']} MiB "
              f"({rss['server_growth_pct']:+.2f} %), peak {rss['server_peak_mib']} MiB; "
              f"generator ({rss['workers']} workers) RSS {rss['generator_start_mib']} -> "
              f"{rss['generator_end_mib']} MiB ({rss['generator_growth_pct']:+.2f} %), peak "
              f"{rss['generator_peak_mib']} MiB")
    print("generator: " + (run["generator_note"] or "kept up"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "models" / "ctr_direct")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--p99-ms", type=float, default=25.0)
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--rate", type=float, default=0.0, help="skip the search: soak at this")
    parser.add_argument("--search-s", type=float, default=5.0, help="seconds per search trial")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=20.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--growth-limit-pct", type=float, default=5.0)
    parser.add_argument("--strict-p99", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "soak.json")
    args = parser.parse_args(argv)
    if not (0 < args.fraction <= 1 and args.minutes > 0 and args.p99_ms > 0):
        parser.error("need 0 < --fraction <= 1, --minutes > 0 and --p99-ms > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pytest_tfserving.load.payloads import for_model
    from pytest_tfserving.model import inspect_model

    server = Server(args.model, "soak")
    try:
        server.wait_available()
        payloads, source = for_model(inspect_model(args.model), "soak", "serving_default",
                                     batch_size=args.batch_size)
        print(f"server {server.address} (pid {server.proc.pid}); requests: {source}", flush=True)
        found = None if args.rate else find_rate(server, payloads, args.p99_ms, args.search_s)
        top = args.rate or (found.rate if found else 0.0)
        if not top:
            print(f"even 50 req/s missed the {args.p99_ms:g} ms p99 budget", file=sys.stderr)
            return 1
        report: dict[str, Any] = {
            "model": str(args.model), "p99_budget_ms": args.p99_ms, "max_rate": top,
            "search": found.as_dict() if found else None, "minutes": args.minutes,
            "soak": soak(server, payloads, args.fraction * top, args)}
    finally:
        server.stop()
    broken = broken_bounds(report, args)
    report["broken"] = broken
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    for line in broken:
        print(f"BOUND BROKEN: {line}", file=sys.stderr)
    print(f"{'FAIL' if broken else 'PASS'}; JSON in {args.json}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
