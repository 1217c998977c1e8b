"""How to load a server: ``LoadSpec`` (rate or concurrency, windows, warm-up, bounds) and
``LoadError``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pytest_tfserving.errors import ConfigError, TFServingError

# Above this rate the load is split over several worker processes (at most one per core). One
# worker held 80,000-120,000 req/s against a null server on a 2-core machine (bench_load.py);
# a real server shares the cores and real requests are larger, hence the margin.
PER_WORKER_RATE = 10000.0
CLOSED_PER_WORKER = 64


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
