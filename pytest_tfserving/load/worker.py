"""One load-generator process: sends pre-serialized requests over gRPC at intended times.

Run as ``python -m pytest_tfserving.load.worker``; it imports hdrh and hpack only (never
TensorFlow, not even grpc), so it starts in a fraction of a second. The parent (``driver.py``)
talks to it with the messages of ``protocol.py`` on stdin/stdout.

Open loop: request i has an intended send time (constant spacing or Poisson arrivals) and its
latency is measured from that time, not from when the worker got round to sending it, so a stalled
server or a late generator shows in the numbers (no coordinated omission). How late the worker sent
each request is recorded separately (``lag``), so that the parent can say when the generator itself
fell behind. Closed loop: ``concurrency`` callers, each sending its next request when the previous
one answered (latency from the actual send).

One thread does everything: it writes due requests onto HTTP/2 connections of its own
(``connections.ConnectionPool``), waits in ``select`` until the next intended send time
(microsecond timeouts, where epoll-based event loops round up to a millisecond) or until answers
arrive, and records each answer with the time ``recv`` returned it.
"""

from __future__ import annotations

import gc
import math
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.load import protocol
from pytest_tfserving.load.connections import ConnectionPool
from pytest_tfserving.load.h2frames import CANCELLED, UNAVAILABLE
from pytest_tfserving.load.protocol import Done, Report, WorkerConfig
from pytest_tfserving.load.stats import HIST_MAX_US, new_histogram
from pytest_tfserving.load.timeline import TimelineRecorder, code_name, response_version

BURST = 256  # at most this many overdue sends before answers are read again
POLL_MAX_S = 0.05  # the loop looks at stop requests and finished windows at least this often
EXPIRE_EVERY_S = 0.005  # how often deadlines are checked
# The open loop still sends requests due before the run's end this long after it: a generator
# woken a few ms late on a busy machine sends its last requests late (the lateness is measured
# as send lag and in the latency from the intended time) instead of dropping the last window as
# partial. Further behind than this, the rest counts as missed.
LATE_SEND_GRACE_S = 0.5
# Waking from a sleep at the intended send time costs ~200 us at p99 on a VM (vCPU wake-up);
# the open loop wakes SPIN_S early and polls without sleeping until the time comes (send lag p99
# 200 us -> 5 us, measured at 100-300 req/s), when that costs at most SPIN_MAX_SHARE of a core.
SPIN_S = 0.0002
SPIN_MAX_SHARE = 0.1


@dataclass
class _Window:
    hist: Any = field(default_factory=new_histogram)  # latency from the intended send time
    lag: Any = field(default_factory=new_histogram)  # how late each request was sent
    service: Any = field(default_factory=new_histogram)  # latency from the actual send
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    ok: int = 0
    outstanding: int = 0


class Worker:
    def __init__(self, config: WorkerConfig, emit: Callable[[Report], None]) -> None:
        self.cfg = config
        self.emit = emit
        self.payloads = protocol.read_payloads(Path(config.payload_file))
        if not self.payloads:
            raise ValueError(f"no requests in {config.payload_file}")
        self.windows: dict[int, _Window] = {}
        self.emitted = -1  # highest window index emitted
        self.error_details: dict[str, str] = {}
        self.horizon = float("-inf")  # every request intended before this has been sent
        self.stop = threading.Event()
        self.abort = threading.Event()  # stop now: no waiting for the answers in flight
        self.measured = 0
        self.next_index = 0  # requests sent so far (the payload and connection round robin)
        self.t0 = 0.0  # the common start (timeline times are relative to it)
        self.m0 = 0.0
        self.end = 0.0
        self.sched_end = float("inf")  # where sending stopped (the run's end unless stopped)
        self.missed = 0  # measured requests the schedule asked for but time ran out to send
        self.idle_callers: deque[int] = deque()  # closed loop: callers whose call has ended
        self.w_end = float("-inf")  # end of the window cached in ``w_cur``
        self.w_cur: _Window | None = None
        self.timeline = TimelineRecorder() if config.timeline_file else None
        self.msg_tag: Any = None  # the call whose response version was read last
        self.msg_version = -1
        self.pool = ConnectionPool(config.target, config.method, config.timeout_s,
                                   config.channels, self._answered,
                                   self._on_message if self.timeline is not None else None)

    # --- calls --------------------------------------------------------------------------------

    def _window_of(self, intended: float) -> _Window | None:
        if intended < self.w_end and intended >= self.w_end - self.cfg.window_s:
            return self.w_cur
        if intended < self.m0:
            return None
        k = int((intended - self.m0) // self.cfg.window_s)
        win = self.windows.get(k)
        if win is None:
            win = self.windows[k] = _Window()
        self.w_cur, self.w_end = win, self.m0 + (k + 1) * self.cfg.window_s
        return win

    def _send(self, i: int, intended: float, now: float, caller: int) -> None:
        win = self._window_of(intended)
        if win is not None:
            win.sent += 1
            win.outstanding += 1
            self.measured += 1
        tag = (win, intended, caller)
        conn = self.pool.conn_for(i, now)
        if conn is None:
            self._answered(tag, UNAVAILABLE, self.pool.connect_error or "no connection", now,
                           now)
        else:
            conn.start(tag, self.payloads[i % len(self.payloads)], now)

    def _on_message(self, tag: Any, message: bytes) -> None:
        self.msg_tag, self.msg_version = tag, response_version(message)

    def _answered(self, tag: Any, code: int, detail: str, sent: float, at: float) -> None:
        win, intended, caller = tag
        if caller >= 0:
            self.idle_callers.append(caller)
        if self.timeline is not None:
            version = self.msg_version if code == 0 and self.msg_tag is tag else -1
            self.timeline.record(intended - self.t0, (at - intended) * 1000.0, code, version)
            self.msg_tag = None
        if win is None:
            return
        win.outstanding -= 1
        win.lag.record_value(min(HIST_MAX_US, max(1, int((sent - intended) * 1e6))))
        if code == 0:
            win.ok += 1
            win.hist.record_value(min(HIST_MAX_US, max(1, int((at - intended) * 1e6))))
            win.service.record_value(min(HIST_MAX_US, max(1, int((at - sent) * 1e6))))
        else:
            name = code_name(code)
            win.errors[name] = win.errors.get(name, 0) + 1
            self.error_details.setdefault(name, detail[:300])

    def _budget_left(self) -> bool:
        return not self.cfg.max_requests or self.measured < self.cfg.max_requests

    # --- the run ------------------------------------------------------------------------------

    def run(self, start: float) -> None:
        """Send from ``start`` until the run's end (or a stop), then wait for the answers."""
        cfg = self.cfg
        self.t0, self.m0 = start, start + cfg.warmup_s
        self.end = self.m0 + cfg.window_s * cfg.max_windows
        closed = cfg.mode == "closed"
        schedule = _Schedule(cfg, start, self.m0)
        while time.monotonic() < start:
            time.sleep(min(0.05, max(0.0, start - time.monotonic())))
        if closed:
            self.idle_callers.extend(range(max(1, cfg.concurrency)))
        next_flush = next_expire = 0.0
        spin = not closed and cfg.rate * SPIN_S <= SPIN_MAX_SHARE
        stop_sending_at = self.end + (0.0 if closed else LATE_SEND_GRACE_S)
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= stop_sending_at or not self._budget_left():
                break
            if closed:
                self._send_closed(now)
            elif not self._send_open(schedule, now):
                break
            live = self.pool.live()
            for conn in live:
                conn.flush()
            if now >= next_expire:
                for conn in live:
                    conn.expire(now)
                next_expire = now + EXPIRE_EVERY_S
            if now >= next_flush:
                self._flush()
                next_flush = now + POLL_MAX_S
            wait = POLL_MAX_S if closed else min(POLL_MAX_S, schedule.next_t - time.monotonic())
            if spin and wait > 0:
                wait = max(0.0, wait - SPIN_S)  # wake early, then poll without sleeping
            self.pool.poll(min(wait, next_flush - now, next_expire - now), live)
        next_t = schedule.next_t
        if not closed and not self.stop.is_set() and self._budget_left() and next_t < self.end:
            # time ran out before the schedule did: the measured requests never sent
            self.missed = int((self.end - max(next_t, self.m0)) * cfg.rate)
        self.sched_end = min(time.monotonic() if closed else next_t, self.end)
        self.horizon = float("inf")
        self._drain()

    def _send_closed(self, now: float) -> None:
        # only the callers idle now: one whose call fails at once waits for the next turn
        for _ in range(len(self.idle_callers)):
            if not self._budget_left():
                break
            self._send(self.next_index, now, now, self.idle_callers.popleft())
            self.next_index += 1
        self.horizon = now

    def _send_open(self, schedule: _Schedule, now: float) -> bool:
        """Send every request due by ``now`` (at most BURST); False when the schedule is over."""
        if schedule.next_t >= self.end:
            return False
        schedule.skip_late_warmup(now)
        fired = 0
        while schedule.next_t <= now and fired < BURST and schedule.next_t < self.end \
                and self._budget_left():
            self._send(self.next_index, schedule.next_t, time.monotonic(), -1)
            self.next_index += 1
            fired += 1
            schedule.advance()
        self.horizon = schedule.next_t
        return True

    def _drain(self) -> None:
        """Let the answers of calls in flight arrive (each has a deadline), then close."""
        give_up = time.monotonic() + self.cfg.timeout_s + 1.0
        while True:
            live = self.pool.live()
            now = time.monotonic()
            for conn in live:
                conn.expire(now)
            if not any(c.busy for c in live) or now >= give_up or self.abort.is_set():
                break
            self.pool.poll(0.01, live)
        if self.abort.is_set():
            self._flush()  # the windows complete now; those with calls in flight are dropped
            self.pool.close_all(CANCELLED, "the load was aborted")
        else:
            self.pool.close_all()
            self._flush()

    def _flush(self) -> None:
        """Emit, in order, every window whose requests have all been sent and answered."""
        ws = self.cfg.window_s
        while True:
            k = self.emitted + 1
            w_start = self.m0 + k * ws
            w_end = w_start + ws
            if k >= self.cfg.max_windows or w_start >= self.sched_end:
                return  # past the run (or past where sending stopped early)
            if self.horizon < w_end:
                return  # still being scheduled
            win = self.windows.get(k) or _Window()
            if win.outstanding > 0:
                return
            span = max(0.0, min(self.sched_end, w_end) - w_start)
            self.emit(protocol.WindowReport(
                index=k, hist=win.hist.encode().decode("ascii"),
                lag=win.lag.encode().decode("ascii"),
                service=win.service.encode().decode("ascii"), errors=win.errors, sent=win.sent,
                ok=win.ok, span_s=span, partial=span < ws - 1e-9))
            self.windows.pop(k, None)
            if self.w_cur is win:
                self.w_cur, self.w_end = None, float("-inf")
            self.emitted = k
            del win
            # an hdrh histogram and its encoder reference each other: a window's three (~0.5 MiB)
            # stay until the cyclic GC runs, which this loop, allocating little, seldom starts
            # (soak: +0.5 MiB per window, +10 % in 2 min). Older objects are frozen: ~0.2 ms.
            gc.collect()

    def done(self) -> None:
        if not self.abort.is_set():
            self._flush()
        if self.timeline is not None:
            self.timeline.write(Path(self.cfg.timeline_file))
        self.emit(Done(error_details=self.error_details, measured=self.measured,
                       missed=self.missed))


class _Schedule:
    """The open loop's intended send times: constant spacing (offset by the worker's phase) or
    Poisson arrivals."""

    def __init__(self, cfg: WorkerConfig, start: float, m0: float) -> None:
        self.rng = random.Random(cfg.seed)
        self.poisson = cfg.arrival == "poisson"
        self.rate = cfg.rate
        self.gap = 1.0 / cfg.rate if cfg.rate > 0 else float("inf")
        self.m0 = m0
        self.next_t = start + (self.rng.expovariate(cfg.rate) if self.poisson else cfg.phase)

    def advance(self) -> None:
        self.next_t += self.rng.expovariate(self.rate) if self.poisson else self.gap

    def skip_late_warmup(self, now: float) -> None:
        """Still sending the warm-up's schedule when measuring begins: the generator is behind;
        skip the warm-up requests it did not get to (never measured) rather than spend the
        measured time on them."""
        if self.next_t < self.m0 <= now:
            if self.poisson:
                self.next_t = self.m0 + self.rng.expovariate(self.rate)
            else:
                self.next_t += math.ceil((self.m0 - self.next_t) / self.gap) * self.gap


def _tight_timers() -> None:
    """Ask Linux for 1 ns timer slack (default 50 us) so select wakes at the intended send time."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def _read_commands(worker: Worker, started: threading.Event, start_at: list[float]) -> None:
    """The parent's commands from stdin (a thread); EOF (the parent went away) stops cleanly."""
    for line in sys.stdin:
        try:
            command = protocol.parse_command(line)
        except ValueError:
            continue
        if isinstance(command, protocol.Stop):
            worker.stop.set()
        elif isinstance(command, protocol.Abort):
            worker.abort.set()
            worker.stop.set()
        elif not started.is_set():
            start_at[0] = command.start_at
            started.set()
    worker.stop.set()
    start_at[0] = start_at[0] or time.monotonic()
    started.set()


def main() -> int:
    out_lock = threading.Lock()

    def emit(message: Report) -> None:
        with out_lock:
            sys.stdout.write(protocol.encode(message) + "\n")
            sys.stdout.flush()

    first = sys.stdin.readline()
    if not first:
        return 2
    try:
        worker = Worker(WorkerConfig.decode(first), emit)
    except (ValueError, OSError) as exc:
        emit(protocol.Fatal(f"bad worker config: {exc}"))
        return 2
    fatal = worker.pool.connect()
    if fatal is not None:
        emit(protocol.Fatal(fatal))
        return 2
    emit(protocol.Ready(payloads=len(worker.payloads)))
    started = threading.Event()
    start_at = [0.0]
    threading.Thread(target=_read_commands, args=(worker, started, start_at),
                     daemon=True).start()
    started.wait()
    _tight_timers()
    gc.collect()
    gc.freeze()  # the payloads and histograms live for the whole run
    try:
        worker.run(start_at[0])
    finally:
        worker.pool.close_all()
    worker.done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
