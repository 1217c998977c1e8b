"""One load-generator process: sends pre-serialized requests over gRPC at intended times.

Run as ``python -m pytest_tfserving.load.worker``; it imports grpc and hdrh only (never
TensorFlow), so it starts in a fraction of a second. The parent (``generator.py``) talks to it with
JSON lines:

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
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Latencies are recorded in microseconds, 1 us .. 10 min, 3 significant digits.
HIST_MIN_US, HIST_MAX_US, HIST_DIGITS = 1, 600_000_000, 3
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
BURST = 256  # at most this many overdue sends before the loop lets completions run


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
    channels: int = 1
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


class Worker:
    def __init__(self, config: WorkerConfig, emit: Any) -> None:
        self.cfg = config
        self.emit = emit
        self.payloads = read_payloads(Path(config.payload_file))
        if not self.payloads:
            raise ValueError(f"no requests in {config.payload_file}")
        self.windows: dict[int, _Window] = {}
        self.emitted = -1  # highest window index emitted
        self.error_details: dict[str, str] = {}
        self.horizon = float("-inf")  # every request intended before this has been sent
        self.stop = asyncio.Event()
        self.measured = 0
        self.m0 = 0.0
        self.end = 0.0
        self.sched_end = float("inf")  # where sending stopped (the run's end unless stopped)
        self.missed = 0  # measured requests the schedule asked for but time ran out to send

    def _window(self, intended: float) -> tuple[int, _Window | None]:
        if intended < self.m0:
            return -1, None
        k = int((intended - self.m0) // self.cfg.window_s)
        win = self.windows.get(k)
        if win is None:
            win = self.windows[k] = _Window(new_histogram(), new_histogram(), new_histogram())
        return k, win

    async def _one(self, call: Any, payload: bytes, intended: float, win: _Window | None) -> None:
        import grpc

        sent = time.monotonic()
        if win is not None:
            win.lag.record_value(max(1, int((sent - intended) * 1e6)))
        try:
            await call(payload, timeout=self.cfg.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if win is not None:
                code = exc.code().name
                win.errors[code] = win.errors.get(code, 0) + 1
                self.error_details.setdefault(code, str(exc.details())[:300])
        except Exception as exc:  # a transport problem grpc did not wrap
            if win is not None:
                win.errors["CLIENT_ERROR"] = win.errors.get("CLIENT_ERROR", 0) + 1
                self.error_details.setdefault("CLIENT_ERROR", f"{type(exc).__name__}: {exc}")
        else:
            if win is not None:
                now = time.monotonic()
                win.ok += 1
                win.hist.record_value(min(HIST_MAX_US, max(1, int((now - intended) * 1e6))))
                win.service.record_value(min(HIST_MAX_US, max(1, int((now - sent) * 1e6))))
        finally:
            if win is not None:
                win.outstanding -= 1

    def _launch(self, calls: list[Any], i: int, intended: float) -> None:
        _, win = self._window(intended)
        if win is not None:
            win.sent += 1
            win.outstanding += 1
            self.measured += 1
        payload = self.payloads[i % len(self.payloads)]
        asyncio.ensure_future(self._one(calls[i % len(calls)], payload, intended, win))

    def _budget_left(self) -> bool:
        return not self.cfg.max_requests or self.measured < self.cfg.max_requests

    async def _open_loop(self, calls: list[Any], start: float) -> None:
        rng = random.Random(self.cfg.seed)
        poisson = self.cfg.arrival == "poisson"
        gap = 1.0 / self.cfg.rate
        next_t = start + (self.cfg.phase if not poisson else rng.expovariate(self.cfg.rate))
        i = 0
        while not self.stop.is_set() and next_t < self.end and self._budget_left():
            now = time.monotonic()
            if now >= self.end:
                break  # the run's time is up: what was not sent by now is reported as not sent
            fired = 0
            while next_t <= now and fired < BURST and next_t < self.end and self._budget_left():
                self._launch(calls, i, next_t)
                i += 1
                fired += 1
                next_t += rng.expovariate(self.cfg.rate) if poisson else gap
            self.horizon = next_t
            # asyncio.sleep(0) still runs every ready callback (answers) before coming back
            await asyncio.sleep(min(0.1, max(0.0, next_t - time.monotonic())))
        if not self.stop.is_set() and self._budget_left() and next_t < self.end:
            # time ran out before the schedule did: the measured requests never sent
            self.missed = int((self.end - max(next_t, self.m0)) * self.cfg.rate)
        self.sched_end = min(next_t, self.end)
        self.horizon = float("inf")

    async def _closed_caller(self, calls: list[Any], index: int) -> None:
        i = index
        while not self.stop.is_set() and time.monotonic() < self.end and self._budget_left():
            intended = time.monotonic()
            _, win = self._window(intended)
            if win is not None:
                win.sent += 1
                win.outstanding += 1
                self.measured += 1
            await self._one(calls[i % len(calls)], self.payloads[i % len(self.payloads)],
                            intended, win)
            i += self.cfg.concurrency

    async def _closed_loop(self, calls: list[Any]) -> None:
        async def horizon() -> None:
            while True:
                self.horizon = time.monotonic()
                await asyncio.sleep(0.02)

        ticker = asyncio.ensure_future(horizon())
        try:
            await asyncio.gather(*(self._closed_caller(calls, j)
                                   for j in range(self.cfg.concurrency)))
        finally:
            ticker.cancel()
            self.sched_end = min(time.monotonic(), self.end)
            self.horizon = float("inf")

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
            win = self.windows.get(k) or _Window(new_histogram(), new_histogram(),
                                                 new_histogram())
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
            self.emitted = k

    async def _flusher(self) -> None:
        while True:
            self._flush()
            await asyncio.sleep(0.05)

    async def run(self, start_event: asyncio.Future[float]) -> None:
        import grpc

        opts = [("grpc.max_send_message_length", 256 << 20),
                ("grpc.max_receive_message_length", 256 << 20),
                ("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(self.cfg.target, options=opts)
                    for _ in range(max(1, self.cfg.channels))]
        try:
            for channel in channels:
                try:
                    await asyncio.wait_for(channel.channel_ready(), timeout=self.cfg.timeout_s)
                except asyncio.TimeoutError:
                    self.emit({"fatal": f"cannot connect to {self.cfg.target} within "
                                        f"{self.cfg.timeout_s:g} s"})
                    return
            calls = [ch.unary_unary(self.cfg.method, request_serializer=None,
                                    response_deserializer=None) for ch in channels]
            self.emit({"ready": True, "payloads": len(self.payloads)})
            start = await start_event
            self.m0 = start + self.cfg.warmup_s
            self.end = self.m0 + self.cfg.window_s * self.cfg.max_windows
            delay = start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            flusher = asyncio.ensure_future(self._flusher())
            try:
                if self.cfg.mode == "closed":
                    await self._closed_loop(calls)
                else:
                    await self._open_loop(calls, start)
                # let answers of in-flight requests arrive (each has a deadline)
                give_up = time.monotonic() + self.cfg.timeout_s + 1.0
                while (any(w.outstanding for w in self.windows.values())
                       and time.monotonic() < give_up):
                    await asyncio.sleep(0.01)
            finally:
                flusher.cancel()
            self._flush()
            self.emit({"done": True, "error_details": self.error_details,
                       "measured": self.measured, "missed": self.missed})
        finally:
            for channel in channels:
                await channel.close(grace=None)


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

    loop = asyncio.new_event_loop()
    start_future: asyncio.Future[float] = loop.create_future()

    def start(at: float) -> None:
        if not start_future.done():
            start_future.set_result(at)

    def read_commands() -> None:
        for line in sys.stdin:
            text = line.strip()
            if text == "stop":
                loop.call_soon_threadsafe(worker.stop.set)
            elif text.startswith("{"):
                loop.call_soon_threadsafe(start, float(json.loads(text)["start_at"]))
        # the parent went away: stop cleanly
        loop.call_soon_threadsafe(worker.stop.set)
        loop.call_soon_threadsafe(start, time.monotonic())

    threading.Thread(target=read_commands, daemon=True).start()
    try:
        loop.run_until_complete(worker.run(start_future))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
