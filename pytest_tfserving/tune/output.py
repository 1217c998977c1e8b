"""The tuner's output: the table of every config tried, the recommended config as a TF Serving
batching parameters file plus its flags line, the JSON details, and the throughput-vs-p99 plot
with the Pareto front marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tune.search import Outcome, Tried
from pytest_tfserving.tune.space import Candidate

HEADER = ("stage", "qps@p99", "p99@sla_ms", "batch", "padding", "queue_ms", "cpu_s/1k",
          "config")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(outcome: Outcome) -> list[str]:
    """One line per trial, aligned; the recommended config marked with '*'."""
    rows = [HEADER]
    for t in outcome.tried:
        r = t.result
        mark = "*" if outcome.recommended is t else ""
        note = f" [{r.disqualified or r.error}]" if r.disqualified or r.error else ""
        rows.append((t.stage + mark, f"{r.qps:.0f}", _num(r.p99_at_sla_ms, ".2f"),
                     _num(r.mean_batch_size, ".2f"), _num(r.padding_share, ".1%"),
                     _num(r.queue_delay_ms, ".2f"), _num(r.cpu_s_per_1k, ".3f"),
                     t.candidate.label() + note[:160]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows]


def batching_text(candidate: Candidate) -> str:
    """The batching parameters file for ``candidate`` (TF Serving's text format; ours reads it
    too). Batching off: a comment only (serve without --enable_batching)."""
    if candidate.batching is None:
        return "# batching off: serve without --enable_batching\n"
    return candidate.batching.to_text()


def flags_line(candidate: Candidate, batching_file: str) -> str:
    return " ".join(["tensorflow_model_server", *candidate.flags(batching_file)])


def write_recommended(outcome: Outcome, path: Path) -> str:
    """Write the recommended config's batching file at ``path``; return its flags line."""
    if outcome.recommended is None:
        raise ConfigError("No config met the SLA, so there is no batching file to write; relax "
                          "the p99 budget or the SLA rate, or widen the search space.")
    cand = outcome.recommended.candidate
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(batching_text(cand))
    return flags_line(cand, str(path))


def _brief(t: Tried | None) -> dict[str, Any] | None:
    return t.as_dict() if t is not None else None


def details(outcome: Outcome, out_file: Path | None = None) -> dict[str, Any]:
    """The gate's JSON details: ``configs[]``, ``recommended``, ``current``, ``off``."""
    rec = outcome.recommended
    out: dict[str, Any] = {
        "configs": [t.as_dict() for t in outcome.tried],
        "recommended": _brief(rec), "current": _brief(outcome.current),
        "off": _brief(outcome.off),
        "gap": None if (g := outcome.gap()) is None else round(g, 4),
        "budget_s": outcome.plan.budget_s, "spent_s": round(outcome.spent_s, 1),
        "stop_reason": outcome.stop_reason,
        "duel": outcome.duel.as_dict() if outcome.duel is not None else None,
    }
    if rec is not None:
        out["recommended_batching_text"] = batching_text(rec.candidate)
        out["recommended_flags"] = flags_line(rec.candidate, str(out_file or
                                                                 "batching_parameters.txt"))
    if out_file is not None:
        out["out_file"] = str(out_file)
    return out


def pareto(tried: list[Tried]) -> list[Tried]:
    """The configs no other beats on both higher QPS at the p99 budget and lower p99 at the SLA
    rate (usable, measured ones only), by QPS."""
    pts = [t for t in tried if t.result.usable and t.result.p99_at_sla_ms is not None]

    def dominated(a: Tried) -> bool:
        ra = a.result
        return any(b.result.qps >= ra.qps and (b.result.p99_at_sla_ms or 0) <= (
            ra.p99_at_sla_ms or 0) and (b.result.qps > ra.qps or (b.result.p99_at_sla_ms or 0)
                                        < (ra.p99_at_sla_ms or 0)) for b in pts)

    return sorted((t for t in pts if not dominated(t)), key=lambda t: t.result.qps)


def plot(outcome: Outcome, path: Path) -> Path:
    """Throughput (QPS at the p99 budget) against p99 at the SLA rate, one point per trial,
    the Pareto front joined, the recommended config circled."""
    from pytest_tfserving.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for stage, marker in (("screen", "o"), ("confirm", "s")):
        pts = [t for t in outcome.tried if t.stage == stage and t.result.usable
               and t.result.p99_at_sla_ms is not None]
        ax.scatter([t.result.p99_at_sla_ms or 0.0 for t in pts], [t.result.qps for t in pts],
                   marker=marker, alpha=0.6, label=f"{stage} runs")
    front = pareto(outcome.tried)
    if front:
        ax.plot([t.result.p99_at_sla_ms or 0.0 for t in front], [t.result.qps for t in front],
                "r--",
                label="Pareto front")
    rec = outcome.recommended
    if rec is not None and rec.result.p99_at_sla_ms is not None:
        ax.scatter([rec.result.p99_at_sla_ms], [rec.result.qps], s=200, facecolors="none",
                   edgecolors="k", label=f"recommended: {rec.candidate.label()}")
    ax.set_xlabel("p99 at the SLA rate (ms)")
    ax.set_ylabel("QPS at the p99 budget (req/s)")
    ax.set_title("TF Serving config search")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
