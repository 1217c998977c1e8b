"""The load generator: worker processes, measurement windows, stability, the result.

``run_load(target, payloads, spec)`` starts ``spec.workers`` processes of ``load/worker.py`` (no
TensorFlow in them), gives them one common start time, merges their windows as they complete, stops
them once three consecutive windows agree (or at ``max_windows``), and returns a ``LoadResult``.
Every wait has a deadline; workers that do not finish in time are killed, so nothing hangs.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from pytest_tfserving.errors import ConfigError, TFServingError
from pytest_tfserving.load import stability
from pytest_tfserving.load.server_metrics import ServerEvidence, Snapshot, evidence, scrape
from pytest_tfserving.load.stats import (
    LatencyStats,
    WindowStats,
    combine,
    merge,
    window_from_messages,
)
from pytest_tfserving.load.timeline import Timeline
from pytest_tfserving.load.worker import PREDICT_METHOD, write_payloads

# Above this rate the load is split over several worker processes (at most one per core). One
# worker held 80,000-120,000 req/s against a null server on a 2-core machine (bench_load.py);
# a real server shares the cores and real requests are larger, hence the margin.
PER_WORKER_RATE = 10000.0
CLOSED_PER_WORKER = 64
# The generator "fell behind" when it sent the p99 request later than LAG_LIMIT_MS and than
# LAG_LIMIT_SHARE of the measured p99 (then its own delay, not the server, makes the tail), or sent
# fewer than OFFERED_MIN_SHARE of the requests the rate asks for.
LAG_LIMIT_MS = 5.0
LAG_LIMIT_SHARE = 0.25
OFFERED_MIN_SHARE = 0.95  # of the requests the schedule asked for
READY_TIMEOUT_S = 20.0
ABORT_POLL_S = 0.25  # the abort hook is called at least this often
ABORT_GRACE_S = 0.4  # after an abort, how long the workers' last reports are waited for

Progress = Callable[[str], None]
Abort = Callable[[], "str | None"]  # a reason to stop the load now, or None
StopRule = Callable[[Sequence[WindowStats]], bool]  # True: enough measured, stop


class LoadError(TFServingError):
    """The load could not be generated at all (no connection, a worker died, bad spec)."""


@dataclass(frozen=True)
class LoadSpec:
    """How to load the server. ``duration_s`` is the minimum measured time: windows of
    ``window_s`` (default ``duration_s / 3``) are measured until 3 consecutive windows agree within
    ``stability_pct`` % (0: no stability rule, measure exactly ``duration_s``), at most
    ``max_windows`` windows."""

    rate: float = 100.0  # offered requests/s (open loop)
    mode: str = "open"  # "open" (fixed rate) | "closed" (fixed concurrency)
    arrival: str = "constant"  # "constant" | "poisson" (open loop)
    concurrency: int = 1  # closed loop
    duration_s: float = 6.0
    window_s: float | None = None
    warmup_s: float = 1.0
    stability_pct: float = 10.0
    max_windows: int = 10
    max_requests: int = 0  # 0: unbounded
    timeout_s: float = 5.0  # per request
    workers: int = 0  # 0: as many as the rate needs (at most one per core)
    channels: int = 1  # gRPC channels (HTTP/2 connections) per worker
    seed: int = 0
    timeline: bool = False  # record every request (``LoadResult.timeline``); costs CPU per answer

    @property
    def window(self) -> float:
        return self.window_s if self.window_s is not None else self.duration_s / 3.0

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.mode not in ("open", "closed"):
            out.append(f"mode={self.mode!r} must be 'open' (fixed rate) or 'closed' "
                       "(fixed concurrency)")
        if self.mode == "open" and not self.rate > 0:
            out.append(f"rate={self.rate!r} must be > 0 requests/s")
        if self.arrival not in ("constant", "poisson"):
            out.append(f"arrival={self.arrival!r} must be 'constant' or 'poisson'")
        if self.mode == "closed" and self.concurrency < 1:
            out.append(f"concurrency={self.concurrency!r} must be >= 1")
        if not self.duration_s > 0:
            out.append(f"duration={self.duration_s!r} must be > 0 seconds")
        if not self.window > 0:
            out.append(f"window={self.window!r} must be > 0 seconds")
        if self.warmup_s < 0:
            out.append(f"warmup={self.warmup_s!r} must be >= 0 seconds")
        if self.stability_pct < 0:
            out.append(f"stability_pct={self.stability_pct!r} must be >= 0 (0 turns it off)")
        if self.max_windows < self.min_windows:
            out.append(f"max_windows={self.max_windows!r} must be >= {self.min_windows} "
                       "(the windows that make up duration)")
        if self.max_requests < 0:
            out.append(f"max_requests={self.max_requests!r} must be >= 0 (0: no limit)")
        if not self.timeout_s > 0:
            out.append(f"timeout={self.timeout_s!r} must be > 0 seconds")
        if self.workers < 0 or self.channels < 1:
            out.append(f"workers={self.workers!r} must be >= 0 and channels={self.channels!r} "
                       ">= 1")
        return out

    def validate(self) -> LoadSpec:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid load settings: " + "; ".join(problems) + ".")
        return self

    @property
    def min_windows(self) -> int:
        return max(1, math.ceil(self.duration_s / self.window - 1e-9))

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        cores = os.cpu_count() or 1
        if self.mode == "closed":
            return max(1, min(cores, math.ceil(self.concurrency / CLOSED_PER_WORKER)))
        return max(1, min(cores, math.ceil(self.rate / PER_WORKER_RATE)))

    def describe(self) -> str:
        if self.mode == "closed":
            return f"closed loop, concurrency {self.concurrency}"
        return f"open loop, {self.rate:g} req/s {self.arrival}"

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "rate": self.rate, "arrival": self.arrival,
                "concurrency": self.concurrency, "duration_s": self.duration_s,
                "window_s": self.window, "warmup_s": self.warmup_s,
                "stability_pct": self.stability_pct, "max_windows": self.max_windows,
                "max_requests": self.max_requests, "timeout_s": self.timeout_s,
                "workers": self.worker_count()}


@dataclass
class LoadResult:
    """What one load run measured. Latencies in ms; ``qps`` is achieved (successful answers/s)."""

    spec: LoadSpec
    target: str
    stats: LatencyStats  # the windows the verdict uses (the stable run, or all when unstable)
    windows: list[WindowStats]
    stable: bool
    stability_reason: str
    generator_behind: bool
    generator_note: str
    server: ServerEvidence
    error_details: dict[str, str] = field(default_factory=dict)
    label: str = ""
    missed: int = 0  # measured requests the generator never got to send (time ran out)
    service: LatencyStats | None = None  # latency from the actual send (as h2load measures)
    # every request, warm-up included, sorted by intended send time (``LoadSpec(timeline=True)``)
    timeline: Timeline | None = None
    aborted: str = ""  # why the abort hook stopped the run ("" when it was not)
    aborted_at_s: float | None = None  # when, in seconds since the load started

    @property
    def p99_from_send_ms(self) -> float:
        """p99 measured from when each request was actually sent: what a tool that suffers
        coordinated omission reports; compare with ``p99_ms`` to see the generator's share."""
        return self.service.p99_ms if self.service is not None else 0.0

    @property
    def sent_share(self) -> float:
        """Share of the requests the schedule asked for that were sent (1.0: all)."""
        asked = self.stats.sent + self.missed
        return self.stats.sent / asked if asked else 1.0

    @property
    def rate_not_offered(self) -> bool:
        """The generator could not offer the rate: the server was not tested at it."""
        return self.sent_share < OFFERED_MIN_SHARE

    # --- numbers ------------------------------------------------------------------------------
    @property
    def p50_ms(self) -> float:
        return self.stats.p50_ms

    @property
    def p90_ms(self) -> float:
        return self.stats.p90_ms

    @property
    def p99_ms(self) -> float:
        return self.stats.p99_ms

    @property
    def p999_ms(self) -> float:
        return self.stats.p999_ms

    @property
    def max_ms(self) -> float:
        return self.stats.max_ms

    @property
    def qps(self) -> float:
        return self.stats.qps

    @property
    def offered_qps(self) -> float:
        return self.stats.offered_qps

    @property
    def errors(self) -> dict[str, int]:
        return dict(self.stats.errors)

    @property
    def error_rate(self) -> float:
        return self.stats.error_rate

    @property
    def requests(self) -> int:
        return self.stats.sent

    @property
    def batch_sizes(self) -> dict[str, int]:
        """Server-observed batch sizes {"5-8": batches, ...} (empty without metrics)."""
        sizes = self.server.batch_sizes
        return sizes.buckets() if sizes is not None else {}

    @property
    def mean_batch_size(self) -> float:
        return self.server.mean_batch_size

    def percentile(self, p: float) -> float:
        return self.stats.percentile(p)

    @property
    def send_lag_p99_ms(self) -> float:
        """How late the generator sent its p99 request (worst window; open loop)."""
        return max((w.lag_p99_ms for w in self.windows), default=0.0)

    def p99_ci_ms(self) -> tuple[float, float]:
        return self.stats.p99_ci_ms()

    # --- readable assertions ------------------------------------------------------------------
    def summary(self) -> str:
        lo, hi = self.p99_ci_ms()
        errs = ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())) or "none"
        text = (f"{self.spec.describe()} against {self.target}: p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms (95% CI {lo:.2f}-{hi:.2f}), p99.9 "
                f"{self.p999_ms:.2f} ms, max {self.max_ms:.2f} ms; achieved {self.qps:.0f} "
                f"req/s of {self.offered_qps:.0f} sent/s; errors {errs}; "
                f"{'stable' if self.stable else 'NOT stable'} ({self.stability_reason})")
        if self.spec.mode == "open" and self.windows:
            text += (f"; generator send lag p99 {self.send_lag_p99_ms:.2f} ms (p99 from the "
                     f"actual send {self.p99_from_send_ms:.2f} ms)")
        if self.generator_behind:
            text += f"; GENERATOR FELL BEHIND: {self.generator_note}"
        return text + f"; {self.server.summary()}"

    def assert_p99_below(self, ms: float) -> None:
        if not self.p99_ms <= ms:
            raise AssertionError(f"p99 {self.p99_ms:.2f} ms > limit {ms:g} ms. {self.summary()}")

    def assert_percentile_below(self, p: float, ms: float) -> None:
        got = self.percentile(p)
        if not got <= ms:
            raise AssertionError(f"p{p:g} {got:.2f} ms > limit {ms:g} ms. {self.summary()}")

    def assert_qps_at_least(self, qps: float) -> None:
        if not self.qps >= qps:
            raise AssertionError(f"achieved {self.qps:.1f} req/s < required {qps:g} req/s. "
                                 f"{self.summary()}")

    def assert_error_rate_below(self, rate: float) -> None:
        if not self.error_rate <= rate:
            raise AssertionError(f"error rate {self.error_rate:.4%} > limit {rate:.4%} "
                                 f"({self.errors}; first messages {self.error_details}). "
                                 f"{self.summary()}")

    def assert_batched(self, min_mean_batch_size: float = 1.01) -> None:
        if not self.server.available:
            raise AssertionError(f"no server metrics to prove batching: {self.server.note}")
        if not self.mean_batch_size >= min_mean_batch_size:
            raise AssertionError(f"mean server batch size {self.mean_batch_size:.2f} < "
                                 f"{min_mean_batch_size:g}: {self.server.summary()}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "label": self.label, "spec": self.spec.as_dict(),
            **self.stats.as_dict(), "stable": self.stable,
            "stability": self.stability_reason, "generator_behind": self.generator_behind,
            "generator_note": self.generator_note, "error_details": self.error_details,
            "send_lag_p99_ms": round(self.send_lag_p99_ms, 3), "missed": self.missed,
            "p99_from_send_ms": round(self.p99_from_send_ms, 3),
            "windows": [w.summary() for w in self.windows], "server": self.server.as_dict(),
            "aborted": self.aborted, "aborted_at_s": self.aborted_at_s,
        }


# --- the run ------------------------------------------------------------------------------------

class _Workers:
    """The worker processes and the threads that read their stdout into one queue."""

    def __init__(self, n: int, configs: list[dict[str, Any]], stderr_dir: Path) -> None:
        self.messages: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.readers: list[threading.Thread] = []
        self.stderr_paths = [stderr_dir / f"worker{i}.stderr" for i in range(n)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for i in range(n):
            with open(self.stderr_paths[i], "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pytest_tfserving.load.worker"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                    start_new_session=True)
            self.procs.append(proc)
            reader = threading.Thread(target=self._read, args=(i, proc.stdout), daemon=True)
            reader.start()
            self.readers.append(reader)
            self.send(i, json.dumps(configs[i]))

    def _read(self, index: int, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                self.messages.put((index, json.loads(line)))
            except ValueError:
                continue
        self.messages.put((index, {"eof": True}))

    def send(self, index: int, line: str) -> None:
        proc = self.procs[index]
        if proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def broadcast(self, line: str) -> None:
        for i in range(len(self.procs)):
            self.send(i, line)

    def stderr_tail(self, index: int, lines: int = 20) -> str:
        try:
            text = self.stderr_paths[index].read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self, grace_s: float = 3.0) -> None:
        """Close the workers' stdin (they stop), wait ``grace_s`` for them, then kill."""
        for proc in self.procs:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        end = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.01, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for proc, reader in zip(self.procs, self.readers, strict=True):
            reader.join(timeout=2.0)  # the worker exited: its stdout is at EOF
            if proc.stdout is not None and not reader.is_alive():
                proc.stdout.close()


def _worker_configs(spec: LoadSpec, target: str, payload_file: Path, n: int,
                    method: str, stop_early: bool) -> list[dict[str, Any]]:
    max_windows = spec.max_windows if stop_early else spec.min_windows
    configs = []
    for i in range(n):
        concurrency = spec.concurrency // n + (1 if i < spec.concurrency % n else 0)
        requests = spec.max_requests // n + (1 if i < spec.max_requests % n else 0)
        configs.append({
            "target": target, "payload_file": str(payload_file), "mode": spec.mode,
            "rate": spec.rate / n, "arrival": spec.arrival, "phase": i / spec.rate if spec.rate
            else 0.0, "concurrency": max(1, concurrency), "timeout_s": spec.timeout_s,
            "warmup_s": spec.warmup_s, "window_s": spec.window, "max_windows": max_windows,
            "max_requests": requests if spec.max_requests else 0, "channels": spec.channels,
            "seed": spec.seed * 1000 + i, "method": method,
            "timeline_file": str(_timeline_path(payload_file, i)) if spec.timeline else "",
        })
    return configs


def _timeline_path(payload_file: Path, index: int) -> Path:
    return payload_file.parent / f"timeline{index}.bin"


def run_load(target: str, payloads: Sequence[bytes], spec: LoadSpec, *,
             metrics_url: str | None = None, model_name: str = "",
             progress: Progress | None = None, method: str = PREDICT_METHOD,
             label: str = "", abort: Abort | None = None,
             stop_when: StopRule | None = None) -> LoadResult:
    """Load ``target`` (host:port) with ``payloads`` (serialized requests, sent round robin).

    ``abort`` is called at least every ``ABORT_POLL_S`` while the run lasts; when it returns a
    reason (e.g. the server process exited) the workers stop at once and the result holds what
    was measured until then, with ``aborted``/``aborted_at_s`` set. ``stop_when``, consulted
    with the merged windows after each window once ``spec.min_windows`` are measured, ends the
    run when it returns True (in place of the stability rule; ``max_windows`` still bounds it).
    """
    spec.validate()
    if not payloads:
        raise ConfigError("No requests to send: the request source gave 0 requests. Provide "
                          "warmup records, an .npz (--tfs-sla-requests) or a tfs_requests "
                          "fixture.")
    n = spec.worker_count()
    with tempfile.TemporaryDirectory(prefix="tfs-load-") as tmp:
        payload_file = Path(tmp) / "requests.bin"
        write_payloads(payload_file, list(payloads))
        configs = _worker_configs(spec, target, payload_file, n, method,
                                  stop_early=spec.stability_pct > 0 or stop_when is not None)
        workers = _Workers(n, configs, Path(tmp))
        run = _Run(workers, n, spec, target, abort, stop_when, progress)
        try:
            result = run.drive(metrics_url, model_name, label)
        finally:
            workers.close(grace_s=ABORT_GRACE_S if run.aborted else 3.0)
        if spec.timeline:
            result.timeline = Timeline.read([_timeline_path(payload_file, i) for i in range(n)],
                                            spec.warmup_s)
        return result


class _Aborted(Exception):
    """The abort hook gave a reason: the run ends now."""


class _Run:
    """One run's state as the workers' messages come in: windows, stop decisions, the abort."""

    def __init__(self, workers: _Workers, n: int, spec: LoadSpec, target: str,
                 abort: Abort | None, stop_when: StopRule | None,
                 progress: Progress | None) -> None:
        self.workers, self.n, self.spec, self.target = workers, n, spec, target
        self.abort, self.stop_when, self.progress = abort, stop_when, progress
        self.stop_on_stable = spec.stability_pct > 0 and stop_when is None
        self.max_windows = (spec.max_windows if spec.stability_pct > 0 or stop_when is not None
                            else spec.min_windows)
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}
        self.windows: list[WindowStats] = []
        self.done: set[int] = set()
        self.error_details: dict[str, str] = {}
        self.missed = 0
        self.verdict = stability.Verdict(False, -1, float("inf"), "not measured")
        self.stopped = False
        self.stop_rule_met = False
        self.start_at = 0.0
        self.aborted = ""
        self.aborted_at_s: float | None = None
        self.next_abort_check = 0.0

    def check_abort(self) -> None:
        if self.abort is None or self.aborted:
            return
        now = time.monotonic()
        if now < self.next_abort_check:
            return
        self.next_abort_check = now + ABORT_POLL_S / 2
        reason = self.abort()
        if reason:
            self.aborted = str(reason)
            self.aborted_at_s = max(0.0, now - self.start_at) if self.start_at else 0.0
            raise _Aborted(reason)

    def next(self, deadline: float, what: str) -> tuple[int, dict[str, Any]]:
        """The next worker message; checks the abort hook while waiting."""
        while True:
            self.check_abort()
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"Timed out during {what}: the load workers did not report "
                                "before the deadline (the machine may be overloaded). Lower the "
                                "rate or the duration.")
            try:
                return self.workers.messages.get(timeout=min(left, ABORT_POLL_S / 2))
            except queue.Empty:
                continue

    def drive(self, metrics_url: str | None, model_name: str, label: str) -> LoadResult:
        spec = self.spec
        before = Snapshot()
        try:
            self.wait_ready()
            self.start_at = time.monotonic() + 0.05
            self.workers.broadcast(json.dumps({"start_at": self.start_at}))
            measure_at = self.start_at + spec.warmup_s
            while time.monotonic() < measure_at:
                self.check_abort()
                time.sleep(min(0.05, max(0.0, measure_at - time.monotonic())))
            before = scrape(metrics_url) if metrics_url else Snapshot()
            hard_deadline = measure_at + spec.window * self.max_windows + spec.timeout_s + 10.0
            while len(self.done) < self.n:
                self.on_message(*self.next(hard_deadline, "the load run"))
        except _Aborted:
            self.wind_down()
            server = ServerEvidence(False, note=f"load aborted: {self.aborted}")
        else:
            after = scrape(metrics_url) if metrics_url else Snapshot()
            server = (evidence(before, after, model_name) if metrics_url else
                      ServerEvidence(False, note="no metrics URL for this endpoint"))
        result = _result(spec, self.target, self.windows, self.verdict, self.stop_on_stable,
                         self.error_details, server, label, self.missed,
                         stop_rule=self.stop_rule_met if self.stop_when is not None else None)
        result.aborted, result.aborted_at_s = self.aborted, self.aborted_at_s
        return result

    def wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S + self.spec.timeout_s
        while len(ready) < self.n:
            index, message = self.next(deadline, "starting the load workers")
            if "fatal" in message:
                raise LoadError(f"Load worker {index} could not start: {message['fatal']}. Check "
                                f"that the server at {self.target} is up and answers gRPC.")
            if message.get("eof"):
                raise LoadError(f"Load worker {index} exited while starting:\n"
                                f"{self.workers.stderr_tail(index)}")
            if message.get("ready"):
                ready.add(index)

    def wind_down(self) -> None:
        """After an abort: tell the workers, keep what they still report within the grace."""
        self.workers.broadcast("abort")
        end = time.monotonic() + ABORT_GRACE_S
        while len(self.done) < self.n:
            try:
                index, message = self.workers.messages.get(
                    timeout=max(0.001, end - time.monotonic()))
            except queue.Empty:
                return
            if not message.get("eof"):
                self.on_message(index, message)
            if time.monotonic() >= end:
                return

    def on_message(self, index: int, message: dict[str, Any]) -> None:
        if "window" in message:
            self.pending.setdefault(int(message["window"]), {})[index] = message
            while len(self.windows) in self.pending and \
                    len(self.pending[len(self.windows)]) == self.n:
                k = len(self.windows)
                self.windows.append(window_from_messages(k, self.pending.pop(k).values()))
                self.after_window()
        elif message.get("done"):
            self.done.add(index)
            self.error_details.update(message.get("error_details") or {})
            self.missed += int(message.get("missed") or 0)
        elif message.get("eof") and not self.aborted:
            raise LoadError(f"Load worker {index} died during the run:\n"
                            f"{self.workers.stderr_tail(index)}")

    def after_window(self) -> None:
        windows, spec = self.windows, self.spec
        if not self.stopped and not self.aborted:
            if self.stop_on_stable:
                self.verdict = _verdict(windows, spec)
                self.stopped = self.verdict.stable and len(windows) >= spec.min_windows
            elif self.stop_when is not None and len(windows) >= spec.min_windows:
                self.stop_rule_met = self.stopped = bool(self.stop_when(windows))
            if self.stopped:
                self.workers.broadcast("stop")
        if self.progress is not None:
            self.progress(_progress_line(windows[-1], spec, self.max_windows, self.verdict,
                                         self.stop_on_stable))


def _throughput(window: WindowStats, spec: LoadSpec) -> float:
    """The throughput the stability rule compares. Open loop: answers per request sent, scaled
    to the rate, because Poisson arrivals make the offered count itself vary from window to
    window (about 1/sqrt(n)); what must agree is how much of it the server answered."""
    s = window.stats
    if spec.mode == "open" and s.sent:
        return s.ok / s.sent * spec.rate
    return s.qps


def _verdict(windows: list[WindowStats], spec: LoadSpec) -> stability.Verdict:
    return stability.check([w.stats.p99_ms for w in windows],
                           [_throughput(w, spec) for w in windows], spec.stability_pct,
                           usable=[not w.partial and w.stats.ok > 0 for w in windows])


def _progress_line(window: WindowStats, spec: LoadSpec, max_windows: int,
                   verdict: stability.Verdict, stop_on_stable: bool) -> str:
    s = window.stats
    line = (f"tfs load [{spec.describe()}] window {window.index + 1}/{max_windows}: "
            f"sent {s.offered_qps:.0f}/s, answered {s.qps:.0f}/s, p99 {s.p99_ms:.2f} ms, "
            f"errors {s.error_count}")
    if stop_on_stable:
        line += f"; {verdict.reason}"
    return line


def _result(spec: LoadSpec, target: str, windows: list[WindowStats],
            verdict: stability.Verdict, stop_on_stable: bool, error_details: dict[str, str],
            server: ServerEvidence, label: str, missed: int = 0,
            stop_rule: bool | None = None) -> LoadResult:
    full = [w for w in windows if not w.partial] or windows
    if stop_rule is not None:
        chosen, stable = full, stop_rule
        reason = (f"the stop rule was met after {len(windows)} window(s)" if stop_rule else
                  f"the stop rule was not met in {len(windows)} window(s)")
    elif stop_on_stable:
        verdict = _verdict(windows, spec) if not verdict.stable else verdict
        if verdict.stable:
            chosen = windows[verdict.first:verdict.first + stability.DEFAULT_COUNT]
        else:
            chosen = full[-stability.DEFAULT_COUNT:]
        stable, reason = verdict.stable, verdict.reason
        if not stable:
            reason = f"never stable in {len(full)} windows: {verdict.reason}"
    else:
        chosen, stable, reason = full, True, "stability rule off"
    stats = combine(chosen)
    behind, note = _generator_check(spec, chosen, missed)
    service = LatencyStats(merge([w.service for w in chosen if w.service is not None]),
                           stats.span_s, stats.sent, stats.ok, dict(stats.errors))
    return LoadResult(spec=spec, target=target, stats=stats, windows=windows, stable=stable,
                      stability_reason=reason, generator_behind=behind, generator_note=note,
                      server=server, error_details=error_details, label=label, missed=missed,
                      service=service)


def _generator_check(spec: LoadSpec, windows: Sequence[WindowStats],
                     missed: int = 0) -> tuple[bool, str]:
    """Did the generator keep its schedule? Late sends, or requests it never got to send."""
    if spec.mode != "open":
        return False, ""
    stats = combine(windows)
    lag = max((w.lag_p99_ms for w in windows), default=0.0)
    limit = max(LAG_LIMIT_MS, LAG_LIMIT_SHARE * stats.p99_ms)
    problems = []
    if lag > limit:
        problems.append(f"it sent the p99 request {lag:.1f} ms after its intended time "
                        f"(limit {limit:.1f} ms: the larger of {LAG_LIMIT_MS:g} ms and "
                        f"{LAG_LIMIT_SHARE:.0%} of the measured p99)")
    asked = stats.sent + missed
    if missed and missed > (1 - OFFERED_MIN_SHARE) * asked:
        problems.append(f"time ran out before it sent {missed} of the {asked} requests "
                        f"{spec.rate:g} req/s asks for ({stats.sent / asked:.0%} sent)")
    elif not stats.sent and not spec.max_requests:
        problems.append("it sent no request in the measured time")
    if not problems:
        return False, ""
    return True, ("; ".join(problems) + f" with {spec.worker_count()} worker process(es); the "
                  "latencies include that delay. Lower the rate, give the generator more "
                  "workers (--tfs-sla-workers), or run on a less loaded machine")


def with_rate(spec: LoadSpec, rate: float) -> LoadSpec:
    return replace(spec, rate=rate)
