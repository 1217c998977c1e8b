"""Server memory over time: RSS of a process tree from /proc, or a container's usage.

A ``MemorySampler`` thread takes a sample about every 0.2 s; the rollout asks for the peak within
a time span (the span in which both versions are loaded).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Reader = Callable[[], "int | None"]
INTERVAL_S = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def _rss(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


def process_tree_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` and all its descendants; None when it is gone."""
    if not Path(f"/proc/{pid}").exists():
        return None
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss(current)
        todo += _children(current)
    return total


def container_usage(container: Any) -> Reader:
    """A reader of a docker container's memory usage (docker stats' figure: usage minus cache).
    One-shot stats (Docker API 1.41+) answer at once; without, each call waits for a second
    CPU sample (~1 s), so an engine that refuses one-shot is asked the slow way."""
    one_shot = [True]

    def stats() -> Any:
        if one_shot[0]:
            try:
                return container.stats(stream=False, one_shot=True)
            except Exception:  # noqa: BLE001 - an older engine or SDK: the slow way from now on
                one_shot[0] = False
        return container.stats(stream=False)

    def read() -> int | None:
        try:
            stats_now = stats()
        except Exception:  # noqa: BLE001 - a stopped container or a busy engine: no sample
            return None
        memory = stats_now.get("memory_stats") or {}
        usage = memory.get("usage")
        if usage is None:
            return None
        inner = memory.get("stats") or {}
        cache = inner.get("inactive_file", inner.get("total_inactive_file", 0))
        return int(usage) - int(cache)

    return read


@dataclass
class MemorySampler:
    """Samples ``read()`` every ``interval_s`` on a daemon thread: (monotonic time, bytes)."""

    read: Reader
    source: str  # "RSS of pid 123 and its children", "docker stats of container x"
    interval_s: float = INTERVAL_S
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="tfs-rollout-memory",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), value))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def peak(self, start: float = float("-inf"), end: float = float("inf")) -> int | None:
        """The largest sample taken in [start, end], or None when none was."""
        values = [v for t, v in list(self.samples) if start <= t <= end]
        return max(values) if values else None


def sampler_for(server: Any) -> MemorySampler | None:
    """A sampler for a RunningServer: /proc for local processes, docker stats for containers,
    None for a remote endpoint (nothing of it to measure)."""
    launcher = server.launcher
    container = getattr(launcher, "container", None)
    if container is not None:
        name = getattr(launcher, "container_name", None) or "the container"
        return MemorySampler(container_usage(container), f"docker stats of {name}",
                             interval_s=0.25)
    process = getattr(launcher, "process", None)
    if process is not None:
        pid = int(process.pid)
        return MemorySampler(lambda: process_tree_rss(pid),
                             f"RSS of the server process tree (pid {pid}) from /proc")
    return None
