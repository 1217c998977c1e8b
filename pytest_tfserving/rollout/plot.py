"""The rollout's picture: each request's latency over time, coloured by the version that
answered, failures marked, the swap shaded (matplotlib, the optional ``plots`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tfserving.plotting import pyplot

if TYPE_CHECKING:
    from pytest_tfserving.rollout.run import Outcome

_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def timeline_plot(outcome: Outcome, path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    origin = outcome.origin
    versions = sorted({r.version for r in outcome.requests if r.code == "OK"},
                      key=lambda v: -1 if v is None else v)
    for index, version in enumerate(versions):
        chosen = [r for r in outcome.requests if r.code == "OK" and r.version == version]
        ax.scatter([r.t_s - origin for r in chosen], [r.latency_ms for r in chosen], s=4,
                   color=_COLOURS[index % len(_COLOURS)],
                   label=f"answered by v{version if version is not None else '?'}")
    failed = [r for r in outcome.requests if r.code != "OK"]
    if failed:
        ax.scatter([r.t_s - origin for r in failed], [r.latency_ms for r in failed], s=12,
                   marker="x", color="tab:red", label=f"failed ({len(failed)})")
    swap = outcome.phases.get("swap")
    if swap is not None:
        ax.axvspan(swap.start_s, swap.end_s, color="tab:gray", alpha=0.15, label="swap")
    for at, text in _markers(outcome):
        ax.axvline(at, color="black", linewidth=0.8, linestyle=":")
        ax.annotate(text, (at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, va="top", ha="right")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started (intended send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markers(outcome: Outcome) -> list[tuple[float, str]]:
    """The swap's moments (seconds since the load started); moments closer than 2 % of the
    run share one label, so the texts do not overprint."""
    times, origin = outcome.times, outcome.origin
    span = max((r.t_s for r in outcome.requests), default=origin) - origin or 1.0
    merged: list[tuple[float, str]] = []
    for at, text in ((times.placed_at, "candidate placed"),
                     (times.candidate_available_at, "candidate AVAILABLE"),
                     (times.baseline_end_at, "baseline unloaded")):
        if at is None:
            continue
        if merged and at - origin - merged[-1][0] < 0.02 * span:
            merged[-1] = (merged[-1][0], f"{merged[-1][1]}, {text}")
        else:
            merged.append((at - origin, text))
    return merged
