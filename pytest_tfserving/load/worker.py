"""One load-generator process: sends pre-serialized requests over gRPC at intended times.

Run as ``python -m pytest_tfserving.load.worker``; it imports hdrh and hpack only (never
TensorFlow, not even grpc), so it starts in a fraction of a second. The parent (``generator.py``)
talks to it with JSON lines:

- parent -> stdin: the config object, then ``{"start_at": T}`` (``time.monotonic()`` on this host,
  shared by every process), then optionally ``"stop"``.
- worker -> stdout: ``{"ready": ...}`` or ``{"fatal": msg}``, one ``{"window": k, ...}`` per
  completed measurement window, and ``{"done": ...}`` last.

Open loop: request i has an intended send time (constant spacing or Poisson arrivals) and its
latency is measured from that time, not from when the worker got round to sending it, so a stalled
server or a late generator shows in the numbers (no coordinated omission). How late the worker sent
each request is recorded separately (``lag``), so that the parent can say when the generator itself
fell behind. Closed loop: ``concurrency`` callers, each sending its next request when the previous
one answered (latency from the actual send).

One thread does everything: it writes due requests onto HTTP/2 connections of its own
(``h2grpc.H2Connection``), waits in ``select`` until the next intended send time (microsecond
timeouts, where epoll-based event loops round up to a millisecond) or until answers arrive, and
records each answer with the time ``recv`` returned it.
"""

from __future__ import annotations

import gc
import json
import math
import random
import select
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.load.h2grpc import GRPC_CODES, UNAVAILABLE, H2Connection, Target

# Latencies are recorded in microseconds, 1 us .. 10 min, 3 significant digits.
HIST_MIN_US, HIST_MAX_US, HIST_DIGITS = 1, 600_000_000, 3
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
BURST = 256  # at most this many overdue sends before answers are read again
POLL_MAX_S = 0.05  # the loop looks at stop requests and finished windows at least this often
EXPIRE_EVERY_S = 0.005  # how often deadlines are checked
RECONNECT_EVERY_S = 0.2  # a lost connection is reopened at most this often
# Waking from a sleep at the intended send time costs ~200 us at p99 on a VM (vCPU wake-up);
# the open loop wakes SPIN_S early and polls without sleeping until the time comes (send lag p99
# 200 us -> 5 us, measured at 100-300 req/s), when that costs at most SPIN_MAX_SHARE of a core.
SPIN_S = 0.0002
SPIN_MAX_SHARE = 0.1


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


def write_payloads(path: Path, payloads: list[bytes]) -> None:
    """Length-prefixed request bytes, read back by ``read_payloads`` in each worker."""
    with open(path, "wb") as f:
        for payload in payloads:
            f.write(struct.pack("<I", len(payload)))
            f.write(payload)


def read_payloads(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(data[pos:pos + length])
        pos += length
    return out


@dataclass
class WorkerConfig:
    target: str
    payload_file: str
    mode: str = "open"  # "open" | "closed"
    rate: float = 100.0  # this worker's share of the offered rate (open loop)
    arrival: str = "constant"  # "constant" | "poisson"
    phase: float = 0.0  # offset of this worker's first arrival (constant arrivals interleave)
    concurrency: int = 1  # closed loop callers in this worker
    timeout_s: float = 5.0
    warmup_s: float = 1.0
    window_s: float = 2.0
    max_windows: int = 10
    max_requests: int = 0  # 0: unbounded (measured requests of this worker)
    channels: int = 1  # HTTP/2 connections, used round robin
    seed: int = 0
    method: str = PREDICT_METHOD

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorkerConfig:
        return cls(**raw)


@dataclass
class _Window:
    hist: Any  # latency from the intended send time (what the gate judges)
    lag: Any  # how late each request was sent
    service: Any  # latency from the actual send (what a closed-loop tool such as h2load reports)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    ok: int = 0
    outstanding: int = 0


def _new_window() -> _Window:
    return _Window(new_histogram(), new_histogram(), new_histogram())


class Worker:
    def __init__(self, config: WorkerConfig, emit: Any) -> None:
        self.cfg = config
        self.emit = emit
        self.payloads = read_payloads(Path(config.payload_file))
        if not self.payloads:
            raise ValueError(f"no requests in {config.payload_file}")
        self.target = Target.parse(config.target)
        self.windows: dict[int, _Window] = {}
        self.emitted = -1  # highest window index emitted
        self.error_details: dict[str, str] = {}
        self.horizon = float("-inf")  # every request intended before this has been sent
        self.stop = threading.Event()
        self.measured = 0
        self.m0 = 0.0
        self.end = 0.0
        self.sched_end = float("inf")  # where sending stopped (the run's end unless stopped)
        self.missed = 0  # measured requests the schedule asked for but time ran out to send
        n = max(1, config.channels)
        self.conns: list[H2Connection | None] = [None] * n
        self.draining: list[H2Connection] = []  # after GOAWAY: finishing their calls
        self.reconnect_at = [0.0] * n
        self.connect_error = ""
        self.idle_callers: deque[int] = deque()  # closed loop: callers whose call has ended
        self.w_end = float("-inf")  # end of the window cached in ``w_cur``
        self.w_cur: _Window | None = None

    # --- connections --------------------------------------------------------------------------

    def _open(self, timeout_s: float) -> H2Connection:
        conn = H2Connection(self.target, self.cfg.method, self.cfg.timeout_s, self._answered)
        conn.connect(timeout_s)
        return conn

    def connect(self) -> str | None:
        """Open every connection before the start; the fatal message when one cannot be."""
        for j in range(len(self.conns)):
            try:
                self.conns[j] = self._open(self.cfg.timeout_s)
            except (ConnectionError, OSError) as exc:
                return (f"cannot connect to {self.cfg.target} within {self.cfg.timeout_s:g} s "
                        f"({exc})")
        return None

    def _reroute(self, now: float) -> None:
        """Calls queued on a connection the server sent GOAWAY on go to a fresh connection."""
        for j, conn in enumerate(self.conns):
            if conn is not None and conn.goaway and conn.queued:
                self._conn_for(j, now)

    def _conn_for(self, i: int, now: float) -> H2Connection | None:
        j = i % len(self.conns)
        conn = self.conns[j]
        if conn is not None and conn.usable:
            return conn
        unsent: list[tuple[Any, bytes, float]] = []
        if conn is not None:
            unsent = conn.take_unsent() if conn.goaway else []
            if conn.busy and conn.sock is not None:
                self.draining.append(conn)  # GOAWAY: let its accepted calls finish
            else:
                conn.close()
            self.conns[j] = None
        fresh: H2Connection | None = None
        if now >= self.reconnect_at[j]:
            try:
                fresh = self.conns[j] = self._open(min(1.0, self.cfg.timeout_s))
            except (ConnectionError, OSError) as exc:
                self.connect_error = str(exc)
                self.reconnect_at[j] = time.monotonic() + RECONNECT_EVERY_S
        for tag, message, deadline in unsent:  # never sent: they go out on the new connection
            if fresh is None:
                self._answered(tag, UNAVAILABLE, self.connect_error or "no connection", now, now)
            else:
                fresh.start(tag, message, now, deadline)
        return fresh

    def _live(self) -> list[H2Connection]:
        if self.draining:
            for done in [c for c in self.draining if not (c.busy and c.sock is not None)]:
                done.close()  # all its calls answered: the socket goes now
            self.draining = [c for c in self.draining if c.sock is not None]
        return [c for c in self.conns if c is not None and c.sock is not None] + self.draining

    def _poll(self, timeout: float, live: list[H2Connection]) -> None:
        if not live:
            time.sleep(max(0.0, timeout))
            return
        writing = [c for c in live if c.out]
        try:
            readable, writable, _ = select.select(live, writing, [], max(0.0, timeout))
        except (OSError, ValueError):  # a socket closed under us: look again next time
            return
        for conn in readable:
            conn.on_readable()
            if conn.goaway and conn.queued:
                self._reroute(time.monotonic())
        for conn in writable:
            conn.flush()

    def _close_all(self) -> None:
        for conn in [c for c in self.conns if c is not None] + self.draining:
            conn.close()
        self.conns = [None] * len(self.conns)
        self.draining = []

    # --- calls --------------------------------------------------------------------------------

    def _window_of(self, intended: float) -> _Window | None:
        if intended < self.w_end and intended >= self.w_end - self.cfg.window_s:
            return self.w_cur
        if intended < self.m0:
            return None
        k = int((intended - self.m0) // self.cfg.window_s)
        win = self.windows.get(k)
        if win is None:
            win = self.windows[k] = _new_window()
        self.w_cur, self.w_end = win, self.m0 + (k + 1) * self.cfg.window_s
        return win

    def _send(self, i: int, intended: float, now: float, caller: int) -> None:
        win = self._window_of(intended)
        if win is not None:
            win.sent += 1
            win.outstanding += 1
            self.measured += 1
        tag = (win, intended, caller)
        conn = self._conn_for(i, now)
        if conn is None:
            self._answered(tag, UNAVAILABLE, self.connect_error or "no connection", now, now)
        else:
            conn.start(tag, self.payloads[i % len(self.payloads)], now)

    def _answered(self, tag: Any, code: int, detail: str, sent: float, at: float) -> None:
        win, intended, caller = tag
        if caller >= 0:
            self.idle_callers.append(caller)
        if win is None:
            return
        win.outstanding -= 1
        win.lag.record_value(min(HIST_MAX_US, max(1, int((sent - intended) * 1e6))))
        if code == 0:
            win.ok += 1
            win.hist.record_value(min(HIST_MAX_US, max(1, int((at - intended) * 1e6))))
            win.service.record_value(min(HIST_MAX_US, max(1, int((at - sent) * 1e6))))
        else:
            name = GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else f"CODE_{code}"
            win.errors[name] = win.errors.get(name, 0) + 1
            self.error_details.setdefault(name, detail[:300])

    def _budget_left(self) -> bool:
        return not self.cfg.max_requests or self.measured < self.cfg.max_requests

    # --- the run ------------------------------------------------------------------------------

    def run(self, start: float) -> None:
        """Send from ``start`` until the run's end (or a stop), then wait for the answers."""
        cfg = self.cfg
        self.m0 = start + cfg.warmup_s
        self.end = self.m0 + cfg.window_s * cfg.max_windows
        closed = cfg.mode == "closed"
        rng = random.Random(cfg.seed)
        poisson = cfg.arrival == "poisson"
        rate = cfg.rate
        gap = 1.0 / rate if rate > 0 else float("inf")
        next_t = start + (rng.expovariate(rate) if poisson else cfg.phase)
        monotonic = time.monotonic
        while monotonic() < start:
            time.sleep(min(0.05, max(0.0, start - monotonic())))
        if closed:
            self.idle_callers.extend(range(max(1, cfg.concurrency)))
        i = 0
        next_flush = next_expire = 0.0
        spin = not closed and rate * SPIN_S <= SPIN_MAX_SHARE
        while not self.stop.is_set():
            now = monotonic()
            if now >= self.end or not self._budget_left():
                break
            if closed:
                # only the callers idle now: one whose call fails at once waits for the next turn
                for _ in range(len(self.idle_callers)):
                    if not self._budget_left():
                        break
                    self._send(i, now, now, self.idle_callers.popleft())
                    i += 1
                self.horizon = now
            else:
                if next_t >= self.end:
                    break
                if next_t < self.m0 <= now:
                    # still sending the warm-up's schedule when measuring begins: the generator
                    # is behind; skip the warm-up requests it did not get to (never measured)
                    # rather than spend the measured time on them
                    if poisson:
                        next_t = self.m0 + rng.expovariate(rate)
                    else:
                        next_t += math.ceil((self.m0 - next_t) / gap) * gap
                fired = 0
                while next_t <= now and fired < BURST and next_t < self.end \
                        and self._budget_left():
                    self._send(i, next_t, monotonic(), -1)
                    i += 1
                    fired += 1
                    next_t += rng.expovariate(rate) if poisson else gap
                self.horizon = next_t
            live = self._live()
            for conn in live:
                conn.flush()
            if now >= next_expire:
                for conn in live:
                    conn.expire(now)
                next_expire = now + EXPIRE_EVERY_S
            if now >= next_flush:
                self._flush()
                next_flush = now + POLL_MAX_S
            wait = POLL_MAX_S if closed else min(POLL_MAX_S, next_t - monotonic())
            if spin and wait > 0:
                wait = max(0.0, wait - SPIN_S)  # wake early, then poll without sleeping
            self._poll(min(wait, next_flush - now, next_expire - now), live)
        if not closed and not self.stop.is_set() and self._budget_left() and next_t < self.end:
            # time ran out before the schedule did: the measured requests never sent
            self.missed = int((self.end - max(next_t, self.m0)) * rate)
        self.sched_end = min(monotonic() if closed else next_t, self.end)
        self.horizon = float("inf")
        self._drain()

    def _drain(self) -> None:
        """Let the answers of calls in flight arrive (each has a deadline), then close."""
        give_up = time.monotonic() + self.cfg.timeout_s + 1.0
        while True:
            live = self._live()
            now = time.monotonic()
            for conn in live:
                conn.expire(now)
            if not any(c.busy for c in live) or now >= give_up:
                break
            self._poll(0.01, live)
        self._close_all()
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
            win = self.windows.get(k) or _new_window()
            if win.outstanding > 0:
                return
            span = max(0.0, min(self.sched_end, w_end) - w_start)
            self.emit({
                "window": k, "hist": win.hist.encode().decode("ascii"),
                "lag": win.lag.encode().decode("ascii"),
                "service": win.service.encode().decode("ascii"), "errors": win.errors,
                "sent": win.sent,
                "ok": win.ok, "span_s": span, "partial": span < ws - 1e-9,
            })
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
        self._flush()
        self.emit({"done": True, "error_details": self.error_details,
                   "measured": self.measured, "missed": self.missed})


def _tight_timers() -> None:
    """Ask Linux for 1 ns timer slack (default 50 us) so select wakes at the intended send time."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def main() -> int:
    out_lock = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    first = sys.stdin.readline()
    if not first:
        return 2
    try:
        config = WorkerConfig.from_dict(json.loads(first))
        worker = Worker(config, emit)
    except (ValueError, TypeError, OSError) as exc:
        emit({"fatal": f"bad worker config: {exc}"})
        return 2

    started = threading.Event()
    start_at = [0.0]

    def read_commands() -> None:
        for line in sys.stdin:
            text = line.strip()
            if text == "stop":
                worker.stop.set()
            elif text.startswith("{") and not started.is_set():
                start_at[0] = float(json.loads(text)["start_at"])
                started.set()
        # the parent went away: stop cleanly
        worker.stop.set()
        start_at[0] = start_at[0] or time.monotonic()
        started.set()

    fatal = worker.connect()
    if fatal is not None:
        emit({"fatal": fatal})
        return 2
    emit({"ready": True, "payloads": len(worker.payloads)})
    threading.Thread(target=read_commands, daemon=True).start()
    started.wait()
    _tight_timers()
    gc.collect()
    gc.freeze()  # the payloads and histograms live for the whole run
    try:
        worker.run(start_at[0])
    finally:
        worker._close_all()
    worker.done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
