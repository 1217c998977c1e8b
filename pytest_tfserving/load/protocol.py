"""The parent <-> load-worker boundary: the worker's config, the payload file, and the messages.

The parent (``driver.py``) starts ``python -m pytest_tfserving.load.worker`` and talks to it with
JSON lines, each one of the message classes below (``encode`` / ``parse_command`` /
``parse_report``):

- parent -> worker stdin: the ``WorkerConfig``, then ``Start`` (``time.monotonic()`` on this host,
  shared by every worker), then optionally ``Stop`` (finish the answers in flight) or ``Abort``
  (end now).
- worker -> parent stdout: ``Ready`` or ``Fatal``, one ``WindowReport`` per completed measurement
  window, ``Done`` last.

The requests travel in a file (``write_payloads`` / ``read_payloads``): length-prefixed bytes.
Nothing here imports grpc or TensorFlow: the worker imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pytest_tfserving.load.stats import LatencyStats, WindowStats, decode, merge

if TYPE_CHECKING:
    from pytest_tfserving.load.spec import LoadSpec

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def write_payloads(path: Path, payloads: Sequence[bytes]) -> None:
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


def timeline_path(payload_file: Path, index: int) -> Path:
    """Where worker ``index`` writes its timeline (next to the payload file)."""
    return Path(payload_file).parent / f"timeline{index}.bin"


def _share(total: int, index: int, n: int) -> int:
    """Worker ``index``'s share of ``total`` split over ``n`` workers (the first ones get the
    remainder)."""
    return total // n + (1 if index < total % n else 0)


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker process does: its share of the load."""

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
    timeline_file: str = ""  # where to write the per-request timeline ("": none)

    @classmethod
    def from_spec(cls, spec: LoadSpec, target: str, payload_file: Path, index: int, n: int,
                  method: str = PREDICT_METHOD, *, stop_rule: bool = False) -> WorkerConfig:
        """Worker ``index`` of ``n``: its share of ``spec``. The run may stop early (stability
        rule, or a caller's ``stop_rule``): then it is bounded by ``max_windows``, else it lasts
        exactly ``min_windows``."""
        stop_early = spec.stability_pct > 0 or stop_rule
        return cls(
            target=target, payload_file=str(payload_file), mode=spec.mode, rate=spec.rate / n,
            arrival=spec.arrival, phase=index / spec.rate if spec.rate else 0.0,
            concurrency=max(1, _share(spec.concurrency, index, n)), timeout_s=spec.timeout_s,
            warmup_s=spec.warmup_s, window_s=spec.window,
            max_windows=spec.max_windows if stop_early else spec.min_windows,
            max_requests=_share(spec.max_requests, index, n) if spec.max_requests else 0,
            channels=spec.channels, seed=spec.seed * 1000 + index, method=method,
            timeline_file=str(timeline_path(payload_file, index)) if spec.timeline else "")

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, line: str) -> WorkerConfig:
        """The config from its JSON line; ValueError naming what does not fit."""
        raw = _json_object(line, "worker config")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown worker config field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(f"bad worker config {raw!r}: {exc}") from None


# --- parent -> worker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    kind: ClassVar[str] = "start"
    start_at: float  # time.monotonic() of the common start


@dataclass(frozen=True)
class Stop:
    """Stop sending; let the calls in flight answer, report the windows, then Done."""

    kind: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Abort:
    """Stop now: calls in flight end CANCELLED, only windows already complete are reported."""

    kind: ClassVar[str] = "abort"


Command = Start | Stop | Abort

# --- worker -> parent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    kind: ClassVar[str] = "ready"
    payloads: int  # requests read from the payload file


@dataclass(frozen=True)
class Fatal:
    kind: ClassVar[str] = "fatal"
    message: str  # why the worker cannot run (it exits)


@dataclass(frozen=True)
class WindowReport:
    """One worker's part of measurement window ``index``; histograms HDR-encoded (ASCII)."""

    kind: ClassVar[str] = "window"
    index: int
    hist: str  # latency from the intended send time, successful requests (us)
    lag: str  # how late each request was sent (us)
    service: str  # latency from the actual send, successful requests (us)
    errors: dict[str, int]  # gRPC code name -> count
    sent: int
    ok: int
    span_s: float
    partial: bool  # sending stopped inside the window


@dataclass(frozen=True)
class Done:
    kind: ClassVar[str] = "done"
    error_details: dict[str, str] = field(default_factory=dict)  # code -> first message
    measured: int = 0  # measured requests sent
    missed: int = 0  # measured requests the schedule asked for but time ran out to send


Report = Ready | Fatal | WindowReport | Done
_COMMANDS: dict[str, type[Command]] = {c.kind: c for c in (Start, Stop, Abort)}
_REPORTS: dict[str, type[Report]] = {c.kind: c for c in (Ready, Fatal, WindowReport, Done)}


def encode(message: Command | Report) -> str:
    """One JSON line (without the newline): ``{"kind": ..., fields...}``."""
    return json.dumps({"kind": message.kind, **dataclasses.asdict(message)})


def _json_object(line: str, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON ({exc}): {line[:200]!r}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not a JSON object: {line[:200]!r}")
    return raw


def _parse(line: str, table: dict[str, Any], what: str) -> Any:
    raw = _json_object(line, what)
    kind = raw.pop("kind", None)
    cls = table.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown {what} kind {kind!r}; known: {sorted(table)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ValueError(f"bad {what} {kind!r}: {exc}") from None


def parse_command(line: str) -> Command:
    """A parent -> worker message; ValueError when the line is none."""
    message: Command = _parse(line, _COMMANDS, "command")
    return message


def parse_report(line: str) -> Report:
    """A worker -> parent message; ValueError when the line is none."""
    message: Report = _parse(line, _REPORTS, "worker report")
    return message


def merge_windows(index: int, reports: Sequence[WindowReport]) -> WindowStats:
    """Window ``index`` merged over the workers' reports of it."""
    errors: dict[str, int] = {}
    for report in reports:
        for code, n in report.errors.items():
            errors[code] = errors.get(code, 0) + int(n)
    # the workers share the window's time span
    span = max((r.span_s for r in reports), default=0.0)
    stats = LatencyStats(merge(decode(r.hist) for r in reports), span,
                         sum(r.sent for r in reports), sum(r.ok for r in reports), errors)
    return WindowStats(index, stats, merge(decode(r.lag) for r in reports),
                       any(r.partial for r in reports),
                       merge(decode(r.service) for r in reports))
