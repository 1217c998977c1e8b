"""What a config costs on the server: CPU seconds of the server process (``/proc/PID/stat`` for
the bundled server and the binary, container stats for Docker) and the batching evidence
(mean batch size, padding share, queue delay) from TF Serving's Prometheus metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_tfserving.load.server_metrics import (
    PREFIX,
    PROCESSED_BATCH_SIZE,
    QUEUING_LATENCY,
    REQUEST_COUNT,
    Snapshot,
)

PADDING_SIZE = PREFIX + "batching_session:padding_size"


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its waited-for children; None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def container_cpu_seconds(name: str) -> float | None:
    """A container's total CPU seconds from Docker's stats; None when Docker cannot say."""
    try:
        import docker

        stats = docker.from_env().containers.get(name).stats(stream=False)
        return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
    except Exception:  # noqa: BLE001 - no docker SDK, daemon gone, container gone: unknown
        return None


def cpu_seconds(pid: object, container: object) -> float | None:
    """The server's CPU seconds so far: by pid (bundled, binary), by container (docker), else
    None (remote)."""
    if isinstance(pid, int):
        return process_cpu_seconds(pid)
    if isinstance(container, str) and container:
        return container_cpu_seconds(container)
    return None


@dataclass(frozen=True)
class BatchEvidence:
    """Batching seen between two scrapes (None where the server exported nothing)."""

    mean_batch_size: float | None
    padding_share: float | None  # padded rows / processed rows
    queue_delay_ms: float | None
    requests: float  # requests the server counted for the model (0: unknown)


def batch_evidence(before: Snapshot, after: Snapshot, model_name: str) -> BatchEvidence:
    def diff(name: str) -> tuple[float, float] | None:
        now = after.histogram(name, {})
        if now is None:
            return None
        d = now.minus(before.histogram(name, {}))
        return (d.count, d.sum) if d.count else None

    processed = diff(PROCESSED_BATCH_SIZE)
    padding = diff(PADDING_SIZE)
    queued = diff(QUEUING_LATENCY)
    mean = processed[1] / processed[0] if processed else None
    share = (padding[1] / processed[1] if padding else 0.0) if processed and processed[1] \
        else None
    delay = queued[1] / queued[0] / 1000 if queued else None
    where = {"model_name": model_name}
    requests = sum(after.counter_by(REQUEST_COUNT, "status", where).values()) - \
        sum(before.counter_by(REQUEST_COUNT, "status", where).values())
    return BatchEvidence(mean, share, delay, requests)
