"""Runs a load: the worker processes, the common start, merged windows, when to stop, the result.

``run_load(target, payloads, spec)`` starts ``spec.workers`` processes of ``load/worker.py`` (no
TensorFlow in them), gives them one common start time, merges their windows as they complete, stops
them once three consecutive windows agree (or a caller's ``stop_when`` says so, or at
``max_windows``), and returns a ``LoadResult``. Every wait has a deadline; workers that do not
finish in time are killed, so nothing hangs; a caller's ``abort`` hook ends the run at once.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load import protocol, stability
from pytest_tfserving.load.protocol import (
    PREDICT_METHOD,
    Done,
    Fatal,
    Ready,
    Report,
    WindowReport,
    WorkerConfig,
)
from pytest_tfserving.load.result import LoadResult, build_result, window_verdict
from pytest_tfserving.load.server_metrics import ServerEvidence, Snapshot, evidence, scrape
from pytest_tfserving.load.spec import LoadError, LoadSpec
from pytest_tfserving.load.stats import WindowStats
from pytest_tfserving.load.timeline import Timeline
from pytest_tfserving.staging import make_staging_dir

READY_TIMEOUT_S = 20.0
ABORT_POLL_S = 0.25  # the abort hook is called at least this often
ABORT_GRACE_S = 0.4  # after an abort, how long the workers' last reports are waited for

Progress = Callable[[str], None]
Abort = Callable[[], "str | None"]  # a reason to stop the load now, or None
StopRule = Callable[[Sequence[WindowStats]], bool]  # True: enough measured, stop


class Eof:
    """A worker's stdout ended (it exited)."""


class WorkerPool:
    """The worker processes and the threads that read their reports into one queue."""

    def __init__(self, configs: Sequence[WorkerConfig], stderr_dir: Path) -> None:
        self.messages: queue.Queue[tuple[int, Report | Eof]] = queue.Queue()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.readers: list[threading.Thread] = []
        self.stderr_paths = [stderr_dir / f"worker{i}.stderr" for i in range(len(configs))]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for i, config in enumerate(configs):
            with open(self.stderr_paths[i], "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pytest_tfserving.load.worker"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                    start_new_session=True)
            self.procs.append(proc)
            reader = threading.Thread(target=self._read, args=(i, proc.stdout), daemon=True)
            reader.start()
            self.readers.append(reader)
            self._send(i, config.encode())

    def _read(self, index: int, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                self.messages.put((index, protocol.parse_report(line.decode())))
            except (ValueError, UnicodeDecodeError):
                continue
        self.messages.put((index, Eof()))

    def _send(self, index: int, line: str) -> None:
        proc = self.procs[index]
        if proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def broadcast(self, command: protocol.Command) -> None:
        line = protocol.encode(command)
        for i in range(len(self.procs)):
            self._send(i, line)

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


def run_load(target: str, payloads: Sequence[bytes], spec: LoadSpec, *,
             metrics_url: str | None = None, model_name: str = "",
             progress: Progress | None = None, method: str = PREDICT_METHOD,
             label: str = "", abort: Abort | None = None,
             stop_when: StopRule | None = None,
             on_start: Callable[[float], None] | None = None) -> LoadResult:
    """Load ``target`` (host:port) with ``payloads`` (serialized requests, sent round robin).

    ``abort`` is called at least every ``ABORT_POLL_S`` while the run lasts; when it returns a
    reason (e.g. the server process exited) the workers stop at once and the result holds what
    was measured until then, with ``aborted``/``aborted_at_s`` set. ``stop_when``, consulted
    with the merged windows after each window once ``spec.min_windows`` are measured, ends the
    run when it returns True (in place of the stability rule; ``max_windows`` still bounds it).
    ``on_start`` is called with the common start (``time.monotonic()`` seconds) when the workers
    are told to start: a timeline's ``intended_s`` counts from there.
    """
    spec.validate()
    if not payloads:
        raise ConfigError("No requests to send: the request source gave 0 requests. Provide "
                          "warmup records, an .npz (--tfs-sla-requests) or a tfs_requests "
                          "fixture.")
    n = spec.worker_count()
    tmp = make_staging_dir("tfs-load-")
    try:
        payload_file = tmp / "requests.bin"
        protocol.write_payloads(payload_file, payloads)
        workers = WorkerPool([WorkerConfig.from_spec(spec, target, payload_file, i, n, method,
                                                     stop_rule=stop_when is not None)
                              for i in range(n)], tmp)
        run = _Run(workers, n, spec, target, abort, stop_when, progress)
        run.on_start = on_start
        try:
            result = run.drive(metrics_url, model_name, label)
        finally:
            workers.close(grace_s=ABORT_GRACE_S if run.aborted else 3.0)
        if spec.timeline:
            result.timeline = Timeline.read(
                [protocol.timeline_path(payload_file, i) for i in range(n)], spec.warmup_s)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Aborted(Exception):
    """The abort hook gave a reason: the run ends now."""


class _Run:
    """One run's state as the workers' reports come in: windows, stop decisions, the abort."""

    def __init__(self, workers: WorkerPool, n: int, spec: LoadSpec, target: str,
                 abort: Abort | None, stop_when: StopRule | None,
                 progress: Progress | None) -> None:
        self.workers, self.n, self.spec, self.target = workers, n, spec, target
        self.abort, self.stop_when, self.progress = abort, stop_when, progress
        self.stop_on_stable = spec.stability_pct > 0 and stop_when is None
        self.max_windows = (spec.max_windows if spec.stability_pct > 0 or stop_when is not None
                            else spec.min_windows)
        self.pending: dict[int, dict[int, WindowReport]] = {}
        self.windows: list[WindowStats] = []
        self.done: set[int] = set()
        self.error_details: dict[str, str] = {}
        self.missed = 0
        self.verdict = stability.Verdict(False, -1, float("inf"), "not measured")
        self.stopped = False
        self.stop_rule_met = False
        self.start_at = 0.0
        self.on_start: Callable[[float], None] | None = None
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

    def next(self, deadline: float, what: str) -> tuple[int, Report | Eof]:
        """The next worker report; checks the abort hook while waiting."""
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
            self.workers.broadcast(protocol.Start(self.start_at))
            if self.on_start is not None:
                self.on_start(self.start_at)
            measure_at = self.start_at + spec.warmup_s
            while time.monotonic() < measure_at:
                self.check_abort()
                time.sleep(min(0.05, max(0.0, measure_at - time.monotonic())))
            before = scrape(metrics_url) if metrics_url else Snapshot()
            hard_deadline = measure_at + spec.window * self.max_windows + spec.timeout_s + 10.0
            while len(self.done) < self.n:
                self.on_report(*self.next(hard_deadline, "the load run"))
        except _Aborted:
            self.wind_down()
            server = ServerEvidence(False, note=f"load aborted: {self.aborted}")
        else:
            after = scrape(metrics_url) if metrics_url else Snapshot()
            server = (evidence(before, after, model_name) if metrics_url else
                      ServerEvidence(False, note="no metrics URL for this endpoint"))
        result = build_result(spec, self.target, self.windows, self.verdict, self.stop_on_stable,
                              self.error_details, server, label, self.missed,
                              stop_rule=self.stop_rule_met if self.stop_when is not None
                              else None)
        result.aborted, result.aborted_at_s = self.aborted, self.aborted_at_s
        return result

    def wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S + self.spec.timeout_s
        while len(ready) < self.n:
            index, report = self.next(deadline, "starting the load workers")
            if isinstance(report, Fatal):
                raise LoadError(f"Load worker {index} could not start: {report.message}. Check "
                                f"that the server at {self.target} is up and answers gRPC.")
            if isinstance(report, Eof):
                raise LoadError(f"Load worker {index} exited while starting:\n"
                                f"{self.workers.stderr_tail(index)}")
            if isinstance(report, Ready):
                ready.add(index)

    def wind_down(self) -> None:
        """After an abort: tell the workers, keep what they still report within the grace."""
        self.workers.broadcast(protocol.Abort())
        end = time.monotonic() + ABORT_GRACE_S
        while len(self.done) < self.n and time.monotonic() < end:
            try:
                index, report = self.workers.messages.get(
                    timeout=max(0.001, end - time.monotonic()))
            except queue.Empty:
                return
            if not isinstance(report, Eof):
                self.on_report(index, report)

    def on_report(self, index: int, report: Report | Eof) -> None:
        if isinstance(report, WindowReport):
            self.pending.setdefault(report.index, {})[index] = report
            while len(self.pending.get(len(self.windows), ())) == self.n:
                k = len(self.windows)
                self.windows.append(protocol.merge_windows(k, list(self.pending.pop(k).values())))
                self.after_window()
        elif isinstance(report, Done):
            self.done.add(index)
            self.error_details.update(report.error_details)
            self.missed += report.missed
        elif isinstance(report, Eof) and index not in self.done and not self.aborted:
            raise LoadError(f"Load worker {index} died during the run:\n"
                            f"{self.workers.stderr_tail(index)}")

    def after_window(self) -> None:
        windows, spec = self.windows, self.spec
        if not self.stopped and not self.aborted:
            if self.stop_on_stable:
                self.verdict = window_verdict(windows, spec)
                self.stopped = self.verdict.stable and len(windows) >= spec.min_windows
            elif self.stop_when is not None and len(windows) >= spec.min_windows:
                self.stop_rule_met = self.stopped = bool(self.stop_when(windows))
            if self.stopped:
                self.workers.broadcast(protocol.Stop())
        if self.progress is not None:
            self.progress(_progress_line(windows[-1], spec, self.max_windows, self.verdict,
                                         self.stop_on_stable))


def _progress_line(window: WindowStats, spec: LoadSpec, max_windows: int,
                   verdict: stability.Verdict, stop_on_stable: bool) -> str:
    s = window.stats
    line = (f"tfs load [{spec.describe()}] window {window.index + 1}/{max_windows}: "
            f"sent {s.offered_qps:.0f}/s, answered {s.qps:.0f}/s, p99 {s.p99_ms:.2f} ms, "
            f"errors {s.error_count}")
    if stop_on_stable:
        line += f"; {verdict.reason}"
    return line
