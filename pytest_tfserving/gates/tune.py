"""The ``tune`` gate: search TF Serving's batching and thread-pool config for the highest QPS
within the p99 budget, write the recommended batching file, and fail the release when the
shipped config is more than ``max_gap`` below the best found (or no config meets the SLA).

Off unless asked (``--tfs-tune`` or ``--tfs-gates=tune``): a search serves many configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_tfserving import option_parsers as p
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.option_spec import option
from pytest_tfserving.tune.runner import DEFAULT_BUDGET_S, TuneSettings
from pytest_tfserving.tune.search import Outcome, Tried


@dataclass(frozen=True)
class TuneParams:
    """The tune gate's options; the p99 budget and SLA rate default to the SLA gate's."""

    enabled: bool = option(
        "tune", False, p.boolean, "Add the tune gate to the default suite: search batching and "
        "thread-pool configs (each served for real) for the highest QPS within the p99 budget.",
        metavar="BOOL", marker="")
    budget_s: float = option(
        "tune_budget", DEFAULT_BUDGET_S, p.positive_float, "Tune gate: seconds for the whole "
        "search (server starts included); too short for one trial is an error.",
        metavar="SECONDS")
    out: Path | None = option("tune_out", None, p.path, "Tune gate: write the recommended "
                              "TF Serving batching parameters file here.", metavar="FILE")
    max_gap: float = option(
        "tune_max_gap", 0.2, p.fraction, "Tune gate: fail when the shipped config's QPS at the "
        "p99 budget is more than this fraction below the best found.", metavar="FRACTION")
    p99_ms: float | None = option("", None, p.positive_float,
                                  "p99 budget in ms (default --tfs-sla-p99-ms)")
    sla_qps: float | None = option("", None, p.positive_float,
                                   "the SLA rate (default --tfs-sla-min-qps)")
    screen_s: float | None = option("", None, p.positive_float,
                                    "seconds per rate step while screening")
    confirm_s: float | None = option("", None, p.positive_float,
                                     "seconds per rate step while confirming")
    est_screen_cost_s: float | None = option("", None, p.positive_float,
                                             "estimated seconds of one screening trial")
    est_confirm_cost_s: float | None = option("", None, p.positive_float,
                                              "estimated seconds of one confirmation")
    leaders: int | None = option("", None, p.positive_int, "screened leaders confirmed")
    invariance_examples: int | None = option("", None, p.non_negative_int,
                                             "examples of the batching invariance check")


def settings_for(ctx: GateContext) -> TuneSettings:
    """The search's settings: the gate's options with the marker's keywords applied; the p99
    budget, SLA rate, signature and request batch size from the SLA/load options."""
    from pytest_tfserving.gates.sla import SlaParams

    params = ctx.params(TuneParams)
    load = ctx.settings.load
    values: dict[str, object] = {
        "p99_ms": ctx.settings.params(SlaParams).p99_ms, "sla_qps": load.min_qps,
        "budget_s": params.budget_s, "max_gap": params.max_gap, "out": params.out,
        "plot_dir": ctx.settings.core.plot, "signature": load.signature,
        "batch_size": load.batch_size or None}
    for name in ("p99_ms", "sla_qps", "screen_s", "confirm_s", "est_screen_cost_s",
                 "est_confirm_cost_s", "leaders", "invariance_examples"):
        if getattr(params, name) is not None:
            values[name] = getattr(params, name)
    settings = TuneSettings(**values)  # type: ignore[arg-type]
    try:
        settings.plan()
    except ConfigError as exc:
        raise ConfigError(f"{ctx.origin}: {exc}") from None
    return settings


def _side(t: Tried | None) -> str:
    if t is None:
        return "not measured"
    r = t.result
    p99 = f", p99 {r.p99_at_sla_ms:.2f} ms at the SLA rate" if r.p99_at_sla_ms else ""
    why = f" [{r.disqualified or r.error}]" if r.disqualified or r.error else ""
    return f"{r.qps:.0f} req/s{p99} ({t.candidate.label()}){why}"


def verdict(outcome: Outcome, settings: TuneSettings) -> list[str]:
    """The reasons the release fails (empty: it passes)."""
    errors = [t.result.error for t in outcome.tried if t.result.error]
    if outcome.recommended is None and errors and len(errors) == len(outcome.tried):
        return [f"no candidate could be served (the backend could not start or restart a "
                f"server): {errors[0]}"]
    if outcome.recommended is None:
        return [f"no config tried holds p99 <= {settings.p99_ms:g} ms at any rate (or every "
                "one was disqualified); relax --tfs-sla-p99-ms or fix the model's latency"]
    failures = []
    cur = outcome.current
    if cur is not None and cur.result.disqualified:
        failures.append(f"the shipped config is disqualified: {cur.result.disqualified}")
    gap = outcome.gap()
    if gap is not None and gap > settings.max_gap:
        failures.append(f"the shipped config serves {gap:.0%} less than the best found (max gap "
                        f"{settings.max_gap:.0%}); ship the recommended batching file")
    return failures


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.tune.output import details, plot, table, write_recommended
    from pytest_tfserving.tune.runner import tune_session

    settings = settings_for(ctx)
    requests = ctx.fixture("tfs_requests") if ctx.fixture is not None else None
    progress = ctx.progress
    outcome = tune_session(ctx.session, settings, requests=requests, progress=progress)
    lines = table(outcome)
    if progress is not None:
        for line in lines:
            progress(line)
    info = details(outcome, settings.out)
    flags = ""
    if settings.out is not None and outcome.recommended is not None:
        flags = write_recommended(outcome, settings.out)
    if settings.plot_dir is not None:
        info["plot"] = str(plot(outcome, settings.plot_dir / "tune_pareto.png"))
    failures = verdict(outcome, settings)
    message = ("; ".join(failures) + ". " if failures else "") + \
        f"current: {_side(outcome.current)} | recommended: {_side(outcome.recommended)} | " \
        f"off: {_side(outcome.off)}; {len(outcome.tried)} trials in {outcome.spent_s:.0f} s " \
        f"({outcome.stop_reason})"
    if outcome.duel is not None:
        message += f"; {outcome.duel.verdict()}"
    if flags:
        message += f". Serve with: {flags}"
    measured = {"trials": len(outcome.tried), "spent_s": round(outcome.spent_s, 1),
                "best_qps": round(outcome.recommended.result.qps, 1) if outcome.recommended
                else 0.0,
                "current_qps": round(outcome.current.result.qps, 1) if outcome.current else None,
                "gap": info["gap"]}
    return GateResult(name="tune", passed=not failures, message=message, measured=measured,
                      threshold={"p99_ms": settings.p99_ms, "max_gap": settings.max_gap,
                                 "budget_s": settings.budget_s},
                      details={**info, "table": lines})
