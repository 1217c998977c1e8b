"""The ``sla`` gate: P99 latency and QPS under dynamic batching, measured open loop.

"At ``min_qps`` req/s, p99 <= ``p99_ms``": the generator offers ``min_qps`` requests per second on
its own schedule (latency from each request's intended send time, so a stalled server cannot slow
the client down and hide itself), windows repeat until three agree, and the server's own metrics
(batch sizes, queue delay, server-side latency) are read from its Prometheus page before and after.
With ``--tfs-baseline-model`` the same load runs against the production model in the same session
and the gate also limits the p99 and throughput regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.batching_options import FIELD_NAMES, PLAYBOOK_BATCHING
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.launchers.death import abort_reason
from pytest_tfserving.load.load_options import LoadOptions
from pytest_tfserving.option_spec import option
from pytest_tfserving.sla_rules import (
    DEFAULT_CONFIDENCE,
    SlaJudgement,
    SlaLimits,
    check_confidence,
    stop_when,
)
from pytest_tfserving.sla_verdict import SlaDecision, change_pct, decide, regression_failures

if TYPE_CHECKING:
    from pytest_tfserving.load.result import LoadResult
    from pytest_tfserving.load.runner import LoadRunner
    from pytest_tfserving.load.spec import LoadSpec
    from pytest_tfserving.session import RunningServer



def confidence_level(raw: str) -> float:
    """--tfs-sla-confidence: a probability in [0.5, 1)."""
    try:
        return check_confidence(p.open_fraction(raw))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def batching_marker(value: Any) -> dict[str, Any] | bool:
    """A marker's ``batching=``: a dict of BatchingParameters fields, or False/None for none."""
    if value is None or value is False:
        return False
    if not isinstance(value, dict):
        raise ValueError("must be a dict of BatchingParameters fields (e.g. batching="
                         "{'max_batch_size': 16, 'batch_timeout_micros': 500}) or False for no "
                         "batching")
    unknown = sorted(set(value) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown batching field(s) {unknown}; known: "
                         f"{', '.join(sorted(FIELD_NAMES))}")
    return dict(value)


@dataclass(frozen=True)
class SlaParams:
    """The SLA's limits (p99, errors, stability, regression against a baseline)."""

    p99_ms: float = option(
        "sla_p99_ms", 25.0, p.positive_float, "SLA gate: p99 latency limit in ms, measured from "
        "each request's intended send time (open loop).", metavar="MS")
    max_error_rate: float = option("sla_max_error_rate", 0.001, p.fraction, "SLA gate: largest "
                                   "allowed share of failed requests.", metavar="FRACTION")
    confidence: float = option(
        "sla_confidence", DEFAULT_CONFIDENCE, confidence_level, "SLA gate: how sure a verdict "
        "must be: PASS when the true p99, error rate and throughput meet the SLA at this "
        "confidence (binomial test on the requests over the target, as MLPerf LoadGen's early "
        "stopping), FAIL when they miss it at this confidence, else the load goes on up to "
        "--tfs-sla-max-duration and the verdict is INCONCLUSIVE.", metavar="LEVEL")
    require_stable: bool = option(
        "sla_require_stable", False, p.boolean, "SLA gate: fail when the windows never agree "
        "(default: report it only).", metavar="BOOL")
    max_p99_regression_pct: float = option(
        "sla_max_p99_regression_pct", 10.0, p.non_negative_float, "SLA gate with a baseline: "
        "largest allowed p99 increase over the baseline, in %.", metavar="PCT")
    max_qps_regression_pct: float = option(
        "sla_max_qps_regression_pct", 5.0, p.non_negative_float, "SLA gate with a baseline: "
        "largest allowed drop of achieved throughput below the baseline's, in %.",
        metavar="PCT")
    baseline: Path | None = option("", None, p.path, "the production baseline for this marker "
                                   "(default: --tfs-baseline-model)", marker="baseline")
    batching: dict[str, Any] | bool | None = option(
        "", None, str, "BatchingParameters fields on top of the session's batching, or False "
        "for no batching", marker="batching", from_marker=batching_marker)


@dataclass
class SlaRun:
    """What one SLA gate run measured (and against what)."""

    spec: LoadSpec
    batching: BatchingParameters | None
    source: str
    server: RunningServer
    result: LoadResult
    baseline: LoadResult | None = None
    baseline_info: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


def marker_batching(ctx: GateContext, params: SlaParams) -> BatchingParameters | None:
    """The session's batching, or with a marker's ``batching=`` its fields on top of it."""
    if params.batching is None:
        return ctx.settings.batching
    if params.batching is False or params.batching is True:
        return None
    values = dict(params.batching)
    if "allowed_batch_sizes" in values:
        values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])
    try:
        return (ctx.settings.batching or PLAYBOOK_BATCHING).with_overrides(**values)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{ctx.origin}: batching={params.batching!r}: {exc}") from None


def _describe_batching(params: BatchingParameters | None) -> str:
    if params is None:
        return "batching off"
    return (f"batching max_batch_size {params.max_batch_size}, batch_timeout_micros "
            f"{params.batch_timeout_micros}")


def _threshold(params: SlaParams, load: LoadOptions, baseline: bool) -> dict[str, Any]:
    threshold: dict[str, Any] = {"p99_ms": params.p99_ms, "min_qps": load.min_qps,
                                 "max_error_rate": params.max_error_rate}
    if load.concurrency:
        threshold["concurrency"] = load.concurrency
    if baseline:
        threshold["max_p99_regression_pct"] = params.max_p99_regression_pct
        threshold["max_qps_regression_pct"] = params.max_qps_regression_pct
    return threshold


def check(ctx: GateContext) -> GateResult:
    params, load = ctx.params(SlaParams), ctx.params(LoadOptions)
    batching = marker_batching(ctx, params)
    signature, why_not = _applicable_signature(ctx, load.signature, batching)
    if signature is None:
        return GateResult(name="sla", passed=False, skipped=True, message=why_not,
                          threshold=_threshold(params, load, False))
    run = measure(ctx, params, load, signature, batching)
    return render(run, params, load, judge(ctx, run, params, signature),
                  ctx.settings.core.inconclusive)


def limits(params: SlaParams, spec: LoadSpec) -> SlaLimits:
    """What the confidence rules judge: the SLA's limits in this run's loop mode."""
    return SlaLimits(latency_ms=params.p99_ms, max_error_rate=params.max_error_rate,
                     min_qps=spec.rate if spec.mode == "closed" else 0.0, mode=spec.mode,
                     confidence=params.confidence, stability_pct=spec.stability_pct)


def measure(ctx: GateContext, params: SlaParams, load: LoadOptions, signature: str,
            batching: BatchingParameters | None) -> SlaRun:
    """Serve (the marker's batching gets its own server), load the baseline then the
    candidate with the same spec, and plot when asked."""
    from pytest_tfserving.load.driver import run_load
    from pytest_tfserving.load.runner import LoadRunner

    spec = load.to_spec()
    if params.batching is not None:
        label = f"sla {_describe_batching(batching)}"
        server = ctx.server(ctx.session.serve_config(batching=batching, label=label))
    else:
        server = ctx.server()
    runner = LoadRunner(load, ctx.model, server, ctx.fixture_value("tfs_requests"),
                        progress=ctx.progress)
    payloads, source = runner.payloads(signature, load.batch_size or None)
    baseline: LoadResult | None = None
    baseline_info: dict[str, Any] = {}
    baseline_path = params.baseline or ctx.settings.core.baseline_model
    if baseline_path:
        baseline, baseline_info = _run_baseline(
            ctx, runner, Path(baseline_path), spec, batching, signature, load.batch_size or None)
    result = run_load(server.grpc_address, payloads, spec,
                      metrics_url=server.endpoint.metrics_url, model_name=server.model_name,
                      progress=runner.progress, label="candidate",
                      stop_when=stop_when(limits(params, spec)), abort=abort_reason(server))
    plots: list[str] = []
    if ctx.settings.core.plot:
        plots = _plots(Path(ctx.settings.core.plot), runner, result, baseline, params.p99_ms,
                       ctx.file_stem(), spec)
    return SlaRun(spec=spec, batching=batching, source=source, server=server, result=result,
                  baseline=baseline, baseline_info=baseline_info, plots=plots)


def judge(ctx: GateContext, run: SlaRun, params: SlaParams, signature: str) -> SlaDecision:
    """The decision on the candidate's run, and the regression against the baseline."""
    result = run.result
    decision = decide(result, limits(params, run.spec), params.require_stable)
    failures = list(decision.failures)
    if failures and result.requests and result.stats.ok == 0:
        failures += _unknown_rank_hint(ctx, signature)
    if run.baseline is not None:
        failures += regression_failures(result, run.baseline, params.max_p99_regression_pct,
                                        params.max_qps_regression_pct)
    return SlaDecision(failures, decision.judgement)


def render(run: SlaRun, params: SlaParams, load: LoadOptions, decision: SlaDecision,
           inconclusive_policy: str) -> GateResult:
    result, baseline, spec = run.result, run.baseline, run.spec
    failures = decision.failures
    measured = _measured(result)
    if baseline is not None:
        measured["baseline_p99_ms"] = round(baseline.p99_ms, 3)
        measured["baseline_qps"] = round(baseline.qps, 1)
        measured["p99_change_pct"] = round(change_pct(result.p99_ms, baseline.p99_ms), 1)
        measured["qps_change_pct"] = round(change_pct(result.qps, baseline.qps), 1)
    head = (f"{spec.describe()}, {_describe_batching(run.batching)}, requests: {run.source}; "
            f"{_line('candidate', result)}")
    if baseline is not None:
        head += f"; {_line('baseline', baseline)}"
    judged = decision.judgement
    message = (("; ".join(failures) + ". ") if failures else "") + head
    if judged is not None:
        message += f". Verdict: {judged.message()}"
    if decision.inconclusive:
        need = judged.need_text() if judged else ""
        message = (f"INCONCLUSIVE ({'fails' if inconclusive_policy == 'fail' else 'warns'}, "
                   f"--tfs-inconclusive={inconclusive_policy}): {need}"
                   f". Measure longer (--tfs-sla-max-duration) or accept a lower confidence "
                   f"(--tfs-sla-confidence). {message}")
    if result.generator_behind and not failures:
        message += f". Note: {result.generator_note}; the p99 is an upper bound and still passed"
    message += f". Client vs server: {result.server.summary()}"
    if run.plots:
        message += f". Plots: {', '.join(run.plots)}"
    details = _details(run, judged)
    if judged is not None:
        measured["verdict_confidence"] = judged.confidence
    message += _death_note(run, details)
    passed = not failures and (not decision.inconclusive or inconclusive_policy == "warn")
    return GateResult(name="sla", passed=passed, inconclusive=decision.inconclusive,
                      threshold=_threshold(params, load, baseline is not None),
                      measured=measured, message=message, details=details)


def _details(run: SlaRun, judged: SlaJudgement | None) -> dict[str, Any]:
    result, baseline = run.result, run.baseline
    details: dict[str, Any] = {"candidate": result.as_dict(), "spec": run.spec.as_dict(),
                               "requests": run.source,
                               "batching": run.batching.as_dict() if run.batching else None,
                               "server_label": run.server.config.label or "default"}
    if judged is not None:
        details["judgement"] = judged.as_dict()
    if baseline is not None:
        details["baseline"] = {**baseline.as_dict(), **run.baseline_info}
        details["table"] = _side_by_side(result, baseline)
    if run.plots:
        details["plots"] = run.plots
    return details


def _death_note(run: SlaRun, details: dict[str, Any]) -> str:
    """When the server died under the load: how and when into ``details``, its log tail for
    the message."""
    death = run.server.death() if run.result.aborted else None
    if death is None:
        return ""
    details["server_death"] = {"how": death.how, "exit_code": death.exit_code,
                               "signal": death.signal, "oom_killed": death.oom_killed,
                               "at_s_into_load": run.result.aborted_at_s,
                               "log_tail": list(death.log_tail)}
    return "\nLast server log lines:\n" + "\n".join(death.log_tail[-10:])


def _applicable_signature(ctx: GateContext, chosen: str | None,
                          batching: BatchingParameters | None) -> tuple[str | None, str]:
    """The signature to load, or (None, why the SLA cannot be measured on this model).

    No load is run on a guess: without a named signature, a model with several served ones
    and no serving_default is skipped, and so is a default signature that writes variables
    (thousands of calls would change the served state). A signature TF Serving's batching
    session cannot take is skipped while batching is on: every request would fail, and the
    serving gate already fails on it."""
    from pytest_tfserving.gates.string_ops import model_graph
    from pytest_tfserving.servability import load_signature_choice, signature_traits

    name, why = load_signature_choice(ctx.model, chosen)
    if name is None:
        return None, f"no signature to load: {why}"
    traits = signature_traits(ctx.model.signature(name), model_graph(ctx))
    problem = traits.batching_problem()
    if problem and batching is not None:
        return None, (f"cannot measure under dynamic batching: {problem}, so every request "
                      "would fail (the serving gate reports it). "
                      f"{traits.batching_fix()}; or load another signature: "
                      "--tfs-sla-signature=NAME")
    if traits.stateful and not chosen:
        return None, (f"not loading {name!r} by default: {traits.state_problem()}, and a load "
                      "run would change it thousands of times. Load a read-only signature "
                      "with --tfs-sla-signature=NAME (or name this one there to load it "
                      "anyway)")
    return name, ""


def _unknown_rank_hint(ctx: GateContext, signature: str) -> list[str]:
    unknown = [k for k, spec in ctx.model.signature(signature).inputs.items()
               if spec.shape is None]
    if not unknown:
        return []
    names = ", ".join(repr(k) for k in unknown)
    return [f"input(s) {names} of {signature!r} have no shape in the SignatureDef, so the "
            "synthesized requests guessed one; give real requests (--tfs-sla-requests=FILE.npz, "
            "a warmup file or a tfs_requests fixture) or declare the shape when exporting"]


def _line(name: str, r: LoadResult) -> str:
    lo, hi = r.p99_ci_ms()
    return (f"{name} p99 {r.p99_ms:.2f} ms (95% CI {lo:.2f}-{hi:.2f}), p50 {r.p50_ms:.2f}, "
            f"p99.9 {r.p999_ms:.2f}, {r.qps:.0f} req/s answered of {r.offered_qps:.0f} sent, "
            f"errors {r.stats.error_count}, "
            f"{'stable' if r.stable else 'unstable: ' + r.stability_reason}")


def _measured(r: LoadResult) -> dict[str, Any]:
    lo, hi = r.p99_ci_ms()
    out: dict[str, Any] = {
        "p99_ms": round(r.p99_ms, 3), "p50_ms": round(r.p50_ms, 3),
        "p99_9_ms": round(r.p999_ms, 3), "max_ms": round(r.max_ms, 3),
        "p99_ci95_ms": [round(lo, 3), round(hi, 3)], "qps": round(r.qps, 1),
        "offered_qps": round(r.offered_qps, 1), "error_rate": round(r.error_rate, 6),
        "errors": r.errors, "stable": r.stable, "generator_behind": r.generator_behind,
        "send_lag_p99_ms": round(r.send_lag_p99_ms, 3),
    }
    server = r.server.as_dict()
    for key in ("latency_p99_ms", "mean_batch_size", "queue_delay_mean_ms", "batch_sizes"):
        if key in server:
            out[f"server_{key}" if not key.startswith(("mean", "batch")) else key] = server[key]
    return out


def _side_by_side(r: LoadResult, base: LoadResult) -> list[dict[str, Any]]:
    rows = []
    for key in ("p50_ms", "p99_ms", "p999_ms", "qps", "error_rate", "mean_batch_size"):
        cand, old = float(getattr(r, key)), float(getattr(base, key))
        rows.append({"metric": key, "candidate": round(cand, 4), "baseline": round(old, 4),
                     "change_pct": round(change_pct(cand, old), 1)})
    return rows


def _run_baseline(ctx: GateContext, runner: LoadRunner, path: Path, spec: LoadSpec,
                  batching: BatchingParameters | None, signature: str | None,
                  batch_size: int | None) -> tuple[LoadResult, dict[str, Any]]:
    from pytest_tfserving.load.driver import run_load
    from pytest_tfserving.model import inspect_model

    model = inspect_model(path, ctx.model.name)
    config = ctx.session.serve_config(version_dir=model.version_dir, version=model.version,
                                      batching=batching, label="baseline")
    server = ctx.server(config)
    payloads, source = runner.payloads(signature, batch_size, model=model)
    result = run_load(server.grpc_address, payloads, spec,
                      metrics_url=server.endpoint.metrics_url, model_name=server.model_name,
                      progress=runner.progress, label="baseline", abort=abort_reason(server))
    return result, {"model": str(model.version_dir), "requests": source}


def _plots(directory: Path, runner: Any, result: LoadResult, baseline: LoadResult | None,
           p99_ms: float, stem: str, spec: Any) -> list[str]:
    """Percentile plot of the gate's run(s), plus a short rate sweep for the throughput curve."""
    from pytest_tfserving.load.plots import percentile_plot, throughput_plot

    series = [("candidate", result)] + ([("baseline", baseline)] if baseline else [])
    out = [str(percentile_plot(series, directory / f"{stem}-percentiles.png",
                               title=f"latency by percentile, {spec.describe()}"))]
    if spec.mode == "open":
        sweep = [runner(rate=spec.rate * f, duration=1.5, concurrency=0, stability_pct=0,
                        warmup=0.5, arrival=spec.arrival) for f in (0.25, 0.5, 0.75, 1.25)]
        curve = sorted([*sweep, result], key=lambda r: r.spec.rate)
        out.append(str(throughput_plot([("candidate", curve)],
                                       directory / f"{stem}-throughput.png", p99_ms)))
    return out
