"""PNG plots of load results (matplotlib, the optional ``plots`` extra).

- ``percentile_plot``: latency against percentile on a "nines" axis (50, 90, 99, 99.9, ...), one
  line per result (candidate and baseline side by side).
- ``throughput_plot``: p50/p99 latency against achieved throughput (several rates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_tfserving.load.result import LoadResult
from pytest_tfserving.plotting import pyplot


def percentile_curve(result: LoadResult) -> tuple[list[float], list[float]]:
    """(x = -log10(1 - p/100), latency ms) for percentiles up to the largest sample."""
    xs: list[float] = []
    ys: list[float] = []
    if not result.stats.count:
        return xs, ys
    nines = min(5.0, math.log10(max(10, result.stats.count)))
    steps = 200
    for i in range(steps + 1):
        x = nines * i / steps
        p = 100.0 * (1 - 10 ** (-x))
        xs.append(x)
        ys.append(result.percentile(max(p, 0.001)))
    return xs, ys


def percentile_plot(results: Sequence[tuple[str, LoadResult]], path: Path,
                    title: str = "latency by percentile") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    top = 0.0
    for name, result in results:
        xs, ys = percentile_curve(result)
        if xs:
            ax.plot(xs, ys, label=f"{name} (p99 {result.p99_ms:.2f} ms)")
            top = max(top, xs[-1])
    ticks = [t for t in range(0, int(top) + 1)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{100 * (1 - 10 ** -t):g}" for t in ticks])
    ax.set_xlabel("percentile")
    return _save(plt, fig, ax, path, title)


def throughput_plot(series: Sequence[tuple[str, Sequence[LoadResult]]], path: Path,
                    p99_target_ms: float | None = None,
                    title: str = "latency vs throughput") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, results in series:
        ordered = sorted(results, key=lambda r: r.qps)
        qps = [r.qps for r in ordered]
        ax.plot(qps, [r.p99_ms for r in ordered], marker="o", label=f"{name} p99")
        ax.plot(qps, [r.p50_ms for r in ordered], marker=".", linestyle="--",
                label=f"{name} p50")
    if p99_target_ms:
        ax.axhline(p99_target_ms, color="red", linewidth=1,
                   label=f"p99 target {p99_target_ms:g} ms")
    ax.set_xlabel("achieved throughput (req/s)")
    ax.set_yscale("log")
    return _save(plt, fig, ax, path, title)


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str) -> Path:
    """Common finish of both plots: labels, grid, legend, PNG written, figure closed."""
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
