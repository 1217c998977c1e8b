"""What the rollout gate prints and writes: per-phase figures, swap times, warmup, memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.rollout.compat import Break
    from pytest_tfserving.rollout.run import Outcome


def measured(outcome: Outcome, breaks: list[Break]) -> dict[str, Any]:
    """The flat figures the report table shows (per phase, swap times, warmup, memory)."""
    times = outcome.times
    out: dict[str, Any] = {}
    for name, stats in outcome.phases.items():
        out[f"{name}_p50_ms"] = round(stats.p50_ms, 3)
        out[f"{name}_p99_ms"] = round(stats.p99_ms, 3)
        out[f"{name}_max_ms"] = round(stats.max_ms, 3)
        out[f"{name}_requests"] = stats.requests
        out[f"{name}_errors"] = stats.error_count
    before, swap = outcome.phases.get("before"), outcome.phases.get("swap")
    if before is not None and swap is not None and before.p99_ms > 0 and swap.ok:
        out["p99_ratio"] = round(swap.p99_ms / before.p99_ms, 2)
    for key, value in (("to_available_s", times.to_available_s()), ("swap_s", times.swap_s())):
        out[key] = None if value is None else round(value, 3)
    out["candidate_replayed_records"] = outcome.warmup.get("candidate", {}).get(
        "replayed_records")
    if outcome.candidate_first_ms:
        out["candidate_first_ms"] = [round(v, 3) for v in outcome.candidate_first_ms]
    for key in ("both_loaded_peak_mib", "before_peak_mib"):
        if outcome.memory.get(key) is not None:
            out[f"memory_{key}"] = outcome.memory[key]
    if breaks:
        out["signature_changes"] = [b.describe() for b in breaks]
    return out


def headline(outcome: Outcome, rate: float, identical: bool) -> str:
    """One sentence: versions, rate, swap times, warmup, first answers, memory."""
    old, new = outcome.base.baseline_version, outcome.base.candidate_version
    times = outcome.times
    head = (f"v{old} -> v{new} at {rate:g} req/s open loop (requests built for the baseline: "
            f"{outcome.request_source})")
    available, swapped = times.to_available_s(), times.swap_s()
    if available is not None:
        head += f"; candidate AVAILABLE {available:.2f} s after placing"
    if swapped is not None:
        head += f", baseline unloaded at {swapped:.2f} s"
    warm = outcome.warmup.get("candidate", {})
    head += f"; candidate warmup records replayed: {warm.get('replayed_records', 0)}"
    if outcome.candidate_first_ms:
        head += (f"; its first answers took "
                 f"{', '.join(f'{v:.1f}' for v in outcome.candidate_first_ms)} ms")
    memory = outcome.memory.get("both_loaded_peak_mib")
    if memory is not None:
        head += f"; memory peak with both loaded {memory:.0f} MiB ({outcome.memory['source']})"
    if identical:
        head += ("; note: baseline and candidate are the same directory, so this measures the "
                 "server reloading an identical model (copies), not a model change")
    return head


def details(outcome: Outcome, breaks: list[Break], identical: bool,
            plots: list[str]) -> dict[str, Any]:
    """The JSON report's ``details`` of the gate."""
    out: dict[str, Any] = {
        "phases": {k: v.as_dict() for k, v in outcome.phases.items()},
        "swap": outcome.swap, "warmup": outcome.warmup, "memory": outcome.memory,
        "signature_changes": [b.as_dict() for b in breaks], "identical_models": identical,
        "requests": outcome.request_source,
        "load": {"sent": len(outcome.requests), "rate": outcome.load.spec.rate,
                 "windows": len(outcome.load.windows), "generator_behind":
                 outcome.load.generator_behind, "note": outcome.load.generator_note},
    }
    if outcome.baseline_after_failure:
        out["baseline_after_failure"] = outcome.baseline_after_failure
    if plots:
        out["plots"] = plots
    return out
