"""The ``tune`` gate: search TF Serving's batching and thread-pool config for the highest QPS
within the p99 budget, write the recommended batching file, and fail the release when the
shipped config is more than ``max_gap`` below the best found (or no config meets the SLA).

Off unless asked (``--tfs-tune`` or ``--tfs-gates=tune``): a search serves many configs.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.tune.runner import TuneSettings
from pytest_tfserving.tune.search import Outcome, Tried

# marker keywords (``@pytest.mark.tfs_tune(budget_s=120)``): TuneSettings' fields
ALLOWED = {f.name for f in fields(TuneSettings)}


def settings_for(ctx: GateContext) -> TuneSettings:
    """The search's settings: the SLA from the ``--tfs-sla-*`` options, the rest from the
    gate's options (``--tfs-tune-budget``, ``--tfs-tune-out``, ``--tfs-tune-max-gap``) and the
    marker's keywords on top."""
    values: dict[str, Any] = {"p99_ms": ctx.option("sla_p99_ms"),
                              "sla_qps": ctx.option("sla_min_qps")}
    for key, option in (("budget_s", "tune_budget"), ("out", "tune_out"),
                        ("max_gap", "tune_max_gap"), ("plot_dir", "plot"),
                        ("signature", "sla_signature")):
        try:
            value = ctx.option(option)
        except KeyError:  # an option this build does not declare: the default stands
            continue
        if value is not None:
            values[key] = value
    batch = ctx.option("sla_batch_size")
    if batch:
        values["batch_size"] = int(batch)
    ctx.check_overrides(ALLOWED)
    values.update(ctx.overrides)
    for key in ("out", "plot_dir"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    try:
        settings = replace(TuneSettings(), **values)
        settings.plan()
    except (TypeError, ConfigError) as exc:
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
    from pytest_tfserving.load.runner import terminal_progress
    from pytest_tfserving.tune.output import details, plot, table, write_recommended
    from pytest_tfserving.tune.runner import tune_session

    settings = settings_for(ctx)
    requests = None
    if ctx.request is not None:
        requests = ctx.request.getfixturevalue("tfs_requests")
    progress = terminal_progress(ctx.config)
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
