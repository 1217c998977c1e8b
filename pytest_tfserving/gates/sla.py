"""The ``sla`` gate: P99 latency and QPS under dynamic batching, measured open loop.

"At ``min_qps`` req/s, p99 <= ``p99_ms``": the generator offers ``min_qps`` requests per second on
its own schedule (latency from each request's intended send time, so a stalled server cannot slow
the client down and hide itself), windows repeat until three agree, and the server's own metrics
(batch sizes, queue delay, server-side latency) are read from its Prometheus page before and after.
With ``--tfs-baseline-model`` the same load runs against the production model in the same session
and the gate also limits the p99 and throughput regression.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.load.result import LoadResult

ALLOWED = {"p99_ms", "min_qps", "max_error_rate", "duration", "concurrency", "batching",
           "arrival", "warmup", "batch_size", "signature", "stability_pct", "require_stable",
           "workers", "timeout", "max_p99_regression_pct", "max_qps_regression_pct",
           "baseline"}
ANSWERED_MIN_SHARE = 0.95
_BATCHING_FIELDS = {f.name for f in dataclasses.fields(BatchingParameters)}


def _number(ctx: GateContext, name: str, option: str, *, minimum: float = 0.0,
            strict: bool = True, integer: bool = False, maximum: float | None = None) -> Any:
    raw = ctx.option(option) if name not in ctx.overrides else ctx.overrides[name]
    where = (f"{ctx.origin} argument {name}" if name in ctx.overrides
             else f"option --tfs-{option.replace('_', '-')}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (
            isinstance(raw, float) and math.isnan(raw)):
        raise ConfigError(f"{where}={raw!r} is not a number; give e.g. {name}=20.")
    if integer and int(raw) != raw:
        raise ConfigError(f"{where}={raw!r} must be a whole number.")
    if (strict and not raw > minimum) or raw < minimum or (maximum is not None and raw > maximum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        if maximum is not None:
            bound += f" and <= {maximum:g}"
        raise ConfigError(f"{where}={raw!r} is out of range: it must be {bound}.")
    return int(raw) if integer else float(raw)


def batching_override(ctx: GateContext) -> tuple[bool, BatchingParameters | None]:
    """(given, parameters): the marker's ``batching={...}`` on top of the session's batching;
    ``batching=False`` (or None) serves without batching."""
    if "batching" not in ctx.overrides:
        return False, None
    raw = ctx.overrides["batching"]
    if raw is None or raw is False:
        return True, None
    if not isinstance(raw, dict):
        raise ConfigError(f"{ctx.origin}: batching={raw!r} must be a dict of BatchingParameters "
                          "fields (e.g. batching={'max_batch_size': 16, "
                          "'batch_timeout_micros': 500}) or False for no batching.")
    unknown = sorted(set(raw) - _BATCHING_FIELDS)
    if unknown:
        raise ConfigError(f"{ctx.origin}: unknown batching field(s) {unknown}; known: "
                          f"{', '.join(sorted(_BATCHING_FIELDS))}.")
    from pytest_tfserving.settings import PLAYBOOK_BATCHING

    base = ctx.session.settings.batching or PLAYBOOK_BATCHING
    values = dict(raw)
    if "allowed_batch_sizes" in values:
        values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])
    try:
        return True, base.with_overrides(**values)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{ctx.origin}: batching={raw!r}: {exc}") from None


def _describe_batching(params: BatchingParameters | None) -> str:
    if params is None:
        return "batching off"
    return (f"batching max_batch_size {params.max_batch_size}, batch_timeout_micros "
            f"{params.batch_timeout_micros}")


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.load.runner import LoadRunner, spec_from_options, terminal_progress

    ctx.check_overrides(ALLOWED)
    p99_ms = _number(ctx, "p99_ms", "sla_p99_ms")
    min_qps = _number(ctx, "min_qps", "sla_min_qps")
    max_error_rate = _number(ctx, "max_error_rate", "sla_max_error_rate", strict=False,
                             maximum=1.0)
    duration = _number(ctx, "duration", "sla_duration")
    warmup = _number(ctx, "warmup", "sla_warmup", strict=False)
    concurrency = _number(ctx, "concurrency", "sla_concurrency", strict=False, integer=True)
    stability_pct = _number(ctx, "stability_pct", "sla_stability_pct", strict=False)
    workers = _number(ctx, "workers", "sla_workers", strict=False, integer=True)
    timeout = _number(ctx, "timeout", "sla_timeout")
    batch_size = _number(ctx, "batch_size", "sla_batch_size", strict=False, integer=True)
    p99_regr = _number(ctx, "max_p99_regression_pct", "sla_max_p99_regression_pct", strict=False)
    qps_regr = _number(ctx, "max_qps_regression_pct", "sla_max_qps_regression_pct", strict=False)
    arrival = ctx.option("sla_arrival") if "arrival" not in ctx.overrides else \
        ctx.overrides["arrival"]
    require_stable = bool(ctx.overrides.get("require_stable",
                                            ctx.option("sla_require_stable")))
    signature = ctx.overrides.get("signature") or ctx.option("sla_signature")
    baseline_path = ctx.overrides.get("baseline", ctx.option("baseline_model"))
    spec = spec_from_options(
        ctx.config, rate=min_qps, mode="closed" if concurrency else "open",
        concurrency=concurrency or 1, arrival=arrival, duration_s=duration, warmup_s=warmup,
        stability_pct=stability_pct, workers=workers, timeout_s=timeout)

    given, batching = batching_override(ctx)
    session = ctx.session
    if not given:
        batching = session.settings.batching
    signature, why_not = _applicable_signature(ctx, signature, batching)
    if signature is None:
        return GateResult(name="sla", passed=False, skipped=True, message=why_not,
                          threshold={"p99_ms": p99_ms, "min_qps": min_qps,
                                     "max_error_rate": max_error_rate})
    if given:
        label = f"sla {_describe_batching(batching)}"
        server = ctx.server(session.serve_config(batching=batching, label=label))
    else:
        server = ctx.server()
    user_requests = None
    if ctx.request is not None:
        user_requests = ctx.request.getfixturevalue("tfs_requests")
    runner = LoadRunner(ctx.config, ctx.model, server, user_requests,
                        progress=terminal_progress(ctx.config))
    payloads, source = runner.payloads(signature, batch_size or None)

    from pytest_tfserving.load.driver import run_load

    baseline: LoadResult | None = None
    baseline_info: dict[str, Any] = {}
    if baseline_path:
        baseline, baseline_info = _run_baseline(ctx, runner, Path(baseline_path), spec,
                                                batching, signature, batch_size or None)
    result = run_load(server.grpc_address, payloads, spec, metrics_url=server.endpoint.metrics_url,
                      model_name=server.model_name, progress=runner.progress, label="candidate")

    failures = _verdict(result, spec, p99_ms, min_qps, max_error_rate, require_stable)
    if failures and result.requests and result.stats.ok == 0:
        failures += _unknown_rank_hint(ctx, signature)
    if baseline is not None:
        failures += _compare(result, baseline, p99_regr, qps_regr)

    plots: list[str] = []
    plot_dir = ctx.option("plot")
    if plot_dir:
        plots = _plots(Path(plot_dir), runner, result, baseline, p99_ms, ctx.origin, spec)

    measured = _measured(result)
    if baseline is not None:
        measured["baseline_p99_ms"] = round(baseline.p99_ms, 3)
        measured["baseline_qps"] = round(baseline.qps, 1)
        measured["p99_change_pct"] = round(_change_pct(result.p99_ms, baseline.p99_ms), 1)
        measured["qps_change_pct"] = round(_change_pct(result.qps, baseline.qps), 1)
    threshold: dict[str, Any] = {"p99_ms": p99_ms, "min_qps": min_qps,
                                 "max_error_rate": max_error_rate}
    if concurrency:
        threshold["concurrency"] = concurrency
    if baseline is not None:
        threshold["max_p99_regression_pct"] = p99_regr
        threshold["max_qps_regression_pct"] = qps_regr
    head = (f"{spec.describe()}, {_describe_batching(batching)}, requests: {source}; "
            f"{_line('candidate', result)}")
    if baseline is not None:
        head += f"; {_line('baseline', baseline)}"
    message = (("; ".join(failures) + ". ") if failures else "") + head
    if result.generator_behind and not failures:
        message += f". Note: {result.generator_note}; the p99 is an upper bound and still passed"
    message += f". Client vs server: {result.server.summary()}"
    if plots:
        message += f". Plots: {', '.join(plots)}"
    details: dict[str, Any] = {"candidate": result.as_dict(), "spec": spec.as_dict(),
                               "requests": source, "batching": batching.as_dict() if batching
                               else None, "server_label": server.config.label or "default"}
    if baseline is not None:
        details["baseline"] = {**baseline.as_dict(), **baseline_info}
        details["table"] = _side_by_side(result, baseline)
    if plots:
        details["plots"] = plots
    return GateResult(name="sla", passed=not failures, threshold=threshold, measured=measured,
                      message=message, details=details)


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


def _verdict(r: LoadResult, spec: Any, p99_ms: float, min_qps: float, max_error_rate: float,
             require_stable: bool) -> list[str]:
    failures: list[str] = []
    if not r.requests:
        failures.append("no request was measured (nothing was sent or answered in the "
                        f"measurement windows): {r.generator_note or 'see the load log above'}; "
                        "a gate cannot pass on no evidence")
        return failures
    if r.requests and r.stats.ok == 0:
        codes = ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items()))
        first = "; ".join(f"{k}: {v}" for k, v in r.error_details.items())
        failures.append(f"every request failed ({codes}; {first})")
        return failures
    if r.rate_not_offered:
        failures.append(f"the load generator could not offer {spec.rate:g} req/s, so the "
                        f"server was not tested at that rate: {r.generator_note}")
    if r.p99_ms > p99_ms:
        # Latency is measured from the intended send time, so a late generator can only make
        # it worse: a pass stands, a failure says how much of it may be the client's.
        late = (f" (the generator itself was late: {r.generator_note})"
                if r.generator_behind and not r.rate_not_offered else "")
        failures.append(f"p99 {r.p99_ms:.2f} ms > target {p99_ms:g} ms{late}")
    if spec.mode == "open":
        # Poisson arrivals send about min_qps, not exactly: compare with what was sent
        if r.qps < ANSWERED_MIN_SHARE * r.offered_qps:
            failures.append(f"the server answered {r.qps:.0f} req/s successfully of the "
                            f"{r.offered_qps:.0f} sent (needs >= {ANSWERED_MIN_SHARE:.0%})")
    elif r.qps < min_qps:
        failures.append(f"achieved {r.qps:.0f} req/s < required {min_qps:g} req/s at "
                        f"concurrency {spec.concurrency}")
    if r.error_rate > max_error_rate:
        codes = ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items()))
        failures.append(f"error rate {r.error_rate:.3%} > limit {max_error_rate:.3%} ({codes}; "
                        f"first: {r.error_details})")
    if require_stable and not r.stable:
        failures.append(f"the measurement never became stable ({r.stability_reason})")
    return failures


def _change_pct(new: float, old: float) -> float:
    return (new - old) / old * 100.0 if old > 0 else 0.0


def _compare(r: LoadResult, base: LoadResult, p99_regr: float, qps_regr: float) -> list[str]:
    failures = []
    p99_change = _change_pct(r.p99_ms, base.p99_ms)
    if p99_change > p99_regr:
        failures.append(f"p99 {r.p99_ms:.2f} ms is {p99_change:.1f}% above the baseline's "
                        f"{base.p99_ms:.2f} ms (limit +{p99_regr:g}%)")
    qps_change = _change_pct(r.qps, base.qps)
    if -qps_change > qps_regr:
        failures.append(f"throughput {r.qps:.0f} req/s is {-qps_change:.1f}% below the "
                        f"baseline's {base.qps:.0f} req/s (limit -{qps_regr:g}%)")
    return failures


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
                     "change_pct": round(_change_pct(cand, old), 1)})
    return rows


def _run_baseline(ctx: GateContext, runner: Any, path: Path, spec: Any,
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
                      progress=runner.progress, label="baseline")
    return result, {"model": str(model.version_dir), "requests": source}


def _plots(directory: Path, runner: Any, result: LoadResult, baseline: LoadResult | None,
           p99_ms: float, origin: str, spec: Any) -> list[str]:
    """Percentile plot of the gate's run(s), plus a short rate sweep for the throughput curve."""
    from pytest_tfserving.load.plots import percentile_plot, throughput_plot

    stem = "sla" if origin == "default suite" else "sla-" + "".join(
        c if c.isalnum() else "_" for c in origin.split(" on ")[-1])[-60:]
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
