"""The ``rollout`` gate: p99 and errors while the server swaps the baseline for the candidate.

The production model (``--tfs-baseline-model``) is served as version N from a base dir the gate
owns; after a steady phase the candidate (``--tfs-model``) is placed there as version N+1 and the
server's own file-system poll loads it, warms it up and unloads the baseline, all under one
open-loop load built for the baseline's signature (what current clients send). The verdict's
rules are in ``rollout/verdict.py``. In the default suite when a baseline is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.errors import TFServingError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.option_spec import option

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.rollout.compat import Break
    from pytest_tfserving.rollout.run import Outcome, Plan
    from pytest_tfserving.rollout.verdict import Limits, RolloutVerdict
    from pytest_tfserving.settings import Settings


@dataclass(frozen=True)
class RolloutParams:
    """How the rollout is loaded and judged; the rate defaults to the SLA's."""

    max_p99_ratio: float = option(
        "rollout_max_p99_ratio", 3.0, p.positive_float, "Rollout gate: largest allowed p99 "
        "during the swap, as a multiple of the steady p99 before it.", metavar="RATIO")
    deadline: float = option(
        "rollout_deadline", 60.0, p.positive_float, "Rollout gate: seconds from placing the "
        "candidate until it must be AVAILABLE and the baseline unloaded.", metavar="SECONDS")
    steady: float = option(
        "rollout_steady", 3.0, p.positive_float, "Rollout gate: seconds of steady load before "
        "placing the candidate and again on the candidate alone after the swap.",
        metavar="SECONDS")
    window: float = option(
        "rollout_window", 2.0, p.positive_float, "Rollout gate: the swap phase lasts at least "
        "this many seconds after placing the candidate (what follows a swap belongs to it, and "
        "its p99 rests on enough requests).", metavar="SECONDS")
    rate: float | None = option(
        "rollout_rate", None, p.positive_float, "Rollout gate: offered open-loop rate in req/s "
        "(default: --tfs-sla-min-qps).", metavar="QPS")
    baseline: Path | None = option("", None, p.path, "the production model to roll out from "
                                   "(default: --tfs-baseline-model)", marker="baseline")
    signature: str | None = option("", None, p.text, "the signature the load sends (default "
                                   "--tfs-sla-signature)", marker="signature")

    @staticmethod
    def joins_default_suite(settings: Settings) -> bool:
        """The gate runs in the default suite when a baseline is given."""
        return settings.core.baseline_model is not None


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.load.load_options import LoadOptions
    from pytest_tfserving.rollout.run import Plan

    # the load's request options (signature, requests, batch size, timeout, arrival) are the
    # SLA's; the rollout always runs open loop at its own rate
    params, load = ctx.params(RolloutParams), ctx.settings.params(LoadOptions)
    limits = _limits(ctx, params, load.min_qps)
    threshold = _threshold(limits)
    baseline_path = params.baseline or ctx.settings.core.baseline_model
    if baseline_path is None:
        return GateResult(name="rollout", passed=False, skipped=True, threshold=threshold,
                          message="no baseline to roll out from: pass "
                                  "--tfs-baseline-model=PATH (the production model)")
    if ctx.session.backend() == "remote":
        return GateResult(
            name="rollout", passed=False, threshold=threshold,
            measured={"backend": "remote"},
            message="refused on the remote backend: the rollout places the candidate as a new "
                    "version in the served base dir, and a remote TF Serving's files are out of "
                    "reach. Run it with --tfs-backend=bundled, binary or docker (the same image "
                    "as production)")
    plan = Plan(rate=limits.rate, steady_s=params.steady, deadline_s=limits.deadline_s,
                window_s=params.window, signature=params.signature or load.signature)
    return measure_and_judge(ctx, Path(baseline_path), plan, limits)


def _limits(ctx: GateContext, params: RolloutParams, sla_rate: float) -> Limits:
    from pytest_tfserving.gates.sla import SlaParams
    from pytest_tfserving.rollout.verdict import Limits

    return Limits(max_p99_ratio=params.max_p99_ratio, deadline_s=params.deadline,
                  confidence=ctx.settings.params(SlaParams).confidence,
                  rate=params.rate or sla_rate, memory=ctx.settings.backend.memory)


def _threshold(limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {"swap_errors": 0, "max_p99_ratio": limits.max_p99_ratio,
                           "deadline_s": limits.deadline_s, "confidence": limits.confidence}
    if limits.memory:
        out["memory"] = limits.memory
    return out


def measure_and_judge(ctx: GateContext, baseline_path: Path, plan: Plan,
                      limits: Limits) -> GateResult:
    """Serve the baseline, roll the candidate out under load, judge, render."""
    from pytest_tfserving.model import inspect_model
    from pytest_tfserving.rollout.compat import signature_breaks
    from pytest_tfserving.rollout.run import finish, run_rollout, serve_baseline
    from pytest_tfserving.rollout.verdict import judge

    candidate = ctx.model
    baseline = inspect_model(baseline_path, candidate.name)
    breaks = signature_breaks(baseline, candidate, [plan.signature] if plan.signature else None)
    try:
        base, server = serve_baseline(ctx, baseline, plan)
    except TFServingError as exc:
        return _never_served(baseline, limits, exc)
    try:
        outcome = run_rollout(ctx, base, server, baseline, candidate, plan)
        verdict = judge(outcome, breaks, limits)
        identical = baseline.version_dir.resolve() == candidate.version_dir.resolve()
        return render(ctx, outcome, breaks, limits, verdict, identical)
    finally:
        finish(ctx, server, base)


def _never_served(baseline: ModelInfo, limits: Limits, exc: TFServingError) -> GateResult:
    notes = "\n".join(getattr(exc, "__notes__", []))
    return GateResult(name="rollout", passed=False, threshold=_threshold(limits),
                      measured={"error": type(exc).__name__},
                      message=f"the baseline {baseline.version_dir} (version {baseline.version}) "
                              f"never served, so nothing was rolled out: {exc}\n{notes}".rstrip())


def render(ctx: GateContext, outcome: Outcome, breaks: list[Break], limits: Limits,
           verdict: RolloutVerdict, identical: bool) -> GateResult:
    from pytest_tfserving.rollout import report

    plots = _plots(ctx, outcome, limits.rate)
    policy = ctx.settings.core.inconclusive
    lines = [stats.line() for stats in outcome.phases.values()]
    message = report.headline(outcome, limits.rate, identical) + ". Phases: " + " | ".join(lines)
    if verdict.failures:
        message = "; ".join(verdict.failures) + ". " + message
    elif verdict.inconclusive:
        message = (f"INCONCLUSIVE ({'fails' if policy == 'fail' else 'warns'}, "
                   f"--tfs-inconclusive={policy}): " + "; ".join(verdict.undecided) + ". "
                   + message)
    if plots:
        message += f". Plot: {', '.join(plots)}"
    passed = not verdict.failures and (not verdict.inconclusive or policy == "warn")
    return GateResult(name="rollout", passed=passed, inconclusive=verdict.inconclusive,
                      threshold=_threshold(limits), measured=report.measured(outcome, breaks),
                      message=message,
                      details=report.details(outcome, breaks, identical, plots))


def _plots(ctx: GateContext, outcome: Outcome, rate: float) -> list[str]:
    plot_dir = ctx.settings.core.plot
    if plot_dir is None:
        return []
    from pytest_tfserving.rollout.plot import timeline_plot

    path = timeline_plot(outcome, Path(plot_dir) / f"{ctx.file_stem()}-timeline.png",
                         f"rollout v{outcome.base.baseline_version} -> "
                         f"v{outcome.base.candidate_version} at {rate:g} req/s")
    return [str(path)]


