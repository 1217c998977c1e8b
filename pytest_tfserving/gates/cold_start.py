"""The ``warmup`` gate: the warmup file is valid, the server replayed all of it, and the first
request on a fresh server is not much slower than the steady state.

1. Static: ``assets.extra/tf_serving_warmup_requests`` exists, is a TFRecord of PredictionLog,
   holds <= 1000 records, and each request fits a signature (names, dtypes, shapes).
2. Replay: the server log (process or container) has TF Serving's "Finished reading warmup
   data ... Number of warmup records read: N" line with N = the file's record count (N counts
   records, not ``--num_request_iterations_for_warmup`` replays).
3. Cold start: a fresh server of its own (its log is also the replay evidence); per signature
   the first Predict after AVAILABLE is compared with the p50 of the next requests:
   ``first / p50 <= max_cold_ratio``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.option_spec import option
from pytest_tfserving.session import RunningServer

if TYPE_CHECKING:
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.model import ModelInfo

COLD_LABEL = "warmup-cold-start"
OFF_LABEL = "warmup-off"


# Default 5x: on the fixture models (bundled server, 2 busy cores, 22 runs) first/p50 was
# 0.87-2.71x with warmup and 11-90x without; 5x sits near the geometric middle of 2.71 and 11.35.
@dataclass(frozen=True)
class WarmupParams:
    """The cold-start limit and how it is measured."""

    max_cold_ratio: float = option(
        "warmup_max_cold_ratio", 5.0, p.positive_float, "Warmup gate: the first request on a "
        "fresh server may take at most this many times the steady-state p50.", metavar="RATIO")
    steady_requests: int = option(
        "warmup_steady_requests", 50, p.positive_int, "Warmup gate: requests after the first "
        "whose p50 is the steady state.", metavar="N")
    compare_without_warmup: bool = option(
        "warmup_compare", False, p.boolean, "Warmup gate: also start a server with "
        "--enable_model_warmup=false and report its first-request ratio (the effect of the "
        "warmup file).", metavar="BOOL")


@dataclass
class WarmupRun:
    """What one warmup gate run found: the file's records, notes so far, and the servers'
    replay and cold-start measurements."""

    records: int
    signatures: list[str]
    measured: dict[str, Any]
    notes: list[str]
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    cold: dict[str, dict[str, Any]] = field(default_factory=dict)


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.warmup_contract import MAX_RECORDS

    params = ctx.params(WarmupParams)
    threshold: dict[str, Any] = {"file": "valid", "max_records": MAX_RECORDS,
                                 "replayed": "all records", "max_cold_ratio":
                                 params.max_cold_ratio}
    resolved = resolve(ctx, threshold)
    if isinstance(resolved, GateResult):
        return resolved
    run = measure(ctx, params, resolved)
    judge(ctx, params, run)
    return render(params, run, threshold)


def resolve(ctx: GateContext, threshold: dict[str, Any]) -> GateResult | WarmupRun:
    """The warmup file's record count and the signatures whose cold start can be measured,
    or the failed/skipped result when the file is missing or invalid."""
    from pytest_tfserving.tfrecord import count_records
    from pytest_tfserving.warmup_make import make_command
    from pytest_tfserving.warmup_report import inspect_warmup_file
    from pytest_tfserving.warmup_validation import validate_warmup_file

    model = ctx.model
    batching = ctx.session.default_serve_config().batching is not None
    if not model.warmup_file.is_file():
        return _no_file(model, batching, threshold)
    problems = validate_warmup_file(model, batching=batching)
    if problems:
        fix = "" if not model.warmup_file.is_file() else (
            f" Fix the writer, or regenerate: `{make_command(model)} --force`.")
        return GateResult(
            name="warmup", passed=False, threshold=threshold,
            measured={"file": str(model.warmup_file), "file_exists": model.warmup_file.is_file(),
                      "problems": len(problems)},
            message=f"warmup file invalid: {'; '.join(str(p) for p in problems)}{fix}",
            details={"problems": [str(p) for p in problems]},
        )
    records = count_records(model.warmup_file)
    measured: dict[str, Any] = {"records": records}
    notes: list[str] = []
    signatures = ctx.signatures_under_gate()
    warmed = inspect_warmup_file(model.warmup_file).signatures()
    unwarmed = [name for name in signatures if name not in warmed]
    if unwarmed:  # not a failure by itself: the cold-start check decides if it matters
        measured["unwarmed_signatures"] = unwarmed
        notes.append(f"no warmup record for signature(s) {', '.join(unwarmed)}")
    unmeasured = _unmeasurable(ctx, signatures, batching)
    if unmeasured:
        signatures = [n for n in signatures if n not in unmeasured]
        measured["unmeasured_signatures"] = sorted(unmeasured)
        notes += [f"cold start of {n} not measured: {why}" for n, why in unmeasured.items()]
    return WarmupRun(records=records, signatures=signatures, measured=measured, notes=notes)


def measure(ctx: GateContext, params: WarmupParams, run: WarmupRun) -> WarmupRun:
    """Cold start on a fresh server, the replay evidence in its log, and with
    ``compare_without_warmup`` the cold start of a server with warmup off."""
    steady, measured = params.steady_requests, run.measured
    cold = _cold_start(ctx, COLD_LABEL, run.signatures, steady, enable_warmup=True)
    # The cold-start server serves the gated config (only its label differs), so its log is
    # the replay evidence too; no other server has to start for this gate.
    replay = check_replay(ctx.server(_config(ctx, COLD_LABEL, True)), run.records)
    measured.update(replay["measured"])
    run.failures += replay["failures"]
    run.notes += replay["notes"]
    worst = max((v["ratio"] for v in cold.values() if "ratio" in v), default=None)
    measured.update(_summary(cold, worst))
    run.cold = cold
    run.details = {"cold_start": cold, "replay": replay["line"]}
    if params.compare_without_warmup:
        off = _cold_start(ctx, OFF_LABEL, run.signatures, steady, enable_warmup=False)
        off_worst = max((v["ratio"] for v in off.values() if "ratio" in v), default=None)
        run.details["without_warmup"] = off
        measured["cold_ratio_without_warmup"] = _round(off_worst)
        first_off = [v["first_ms"] for v in off.values() if "first_ms" in v]
        measured["first_ms_without_warmup"] = _round(max(first_off, default=None))
    return run


def judge(ctx: GateContext, params: WarmupParams, run: WarmupRun) -> None:
    """Add a failure for each signature whose fresh-server Predict failed or whose first
    request exceeds ``max_cold_ratio`` times its steady-state p50."""
    from pytest_tfserving.warmup_make import make_command

    max_ratio = params.max_cold_ratio
    for name, values in run.cold.items():
        if "error" in values:
            run.failures.append(f"{name}: Predict failed on the fresh server: {values['error']}")
        elif values["ratio"] > max_ratio:
            run.failures.append(
                f"{name}: the first request after AVAILABLE took {values['first_ms']:.2f} ms, "
                f"{values['ratio']:.1f}x the steady-state p50 {values['p50_ms']:.3f} ms (limit "
                f"{max_ratio:g}x). Add records for this signature and its batch sizes to the "
                f"warmup file (`{make_command(ctx.model)} --force`), or raise "
                "--tfs-warmup-max-cold-ratio if the cold cost is accepted.")


def render(params: WarmupParams, run: WarmupRun, threshold: dict[str, Any]) -> GateResult:
    records, measured, failures = run.records, run.measured, run.failures
    passed = not failures
    if passed and measured["cold_ratio"] is None:
        message = (f"{records} warmup record(s) valid and replayed; no signature's cold start "
                   "could be measured")
    elif passed:
        message = (f"{records} warmup record(s) valid and replayed; first request "
                   f"{measured['first_ms']} ms vs steady p50 {measured['p50_ms']} ms "
                   f"({measured['cold_ratio']}x, limit {params.max_cold_ratio:g}x)")
    else:
        message = "; ".join(failures)
    if run.notes:
        message += " (" + "; ".join(run.notes) + ")"
    return GateResult(name="warmup", passed=passed, threshold=threshold, measured=measured,
                      message=message, details=run.details)


def _no_file(model: ModelInfo, batching: bool, threshold: dict[str, Any]) -> GateResult:
    """No warmup file: a failure with the command that makes one for this deployment, or a
    skip when no signature can be warmed without failing the load or changing the state."""
    from pytest_tfserving.warmup_make import warmup_plan
    from pytest_tfserving.warmup_validation import missing_file_problem

    measured = {"file": str(model.warmup_file), "file_exists": False}
    try:
        names, _notes = warmup_plan(model, batching=batching)
    except ConfigError as exc:
        return GateResult(name="warmup", passed=False, skipped=True, threshold=threshold,
                          measured=measured,
                          message="no warmup file, and " + _lower_first(str(exc)))
    try:
        default, _ = warmup_plan(model)
    except ConfigError:
        default = []
    named = names if set(names) != set(default) else []
    problem = missing_file_problem(model, named)
    return GateResult(name="warmup", passed=False, threshold=threshold,
                      measured={**measured, "problems": 1},
                      message=f"warmup file invalid: {problem}", details={"problems": [problem]})


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _unmeasurable(ctx: GateContext, names: list[str], batching: bool) -> dict[str, str]:
    """Signatures whose first request cannot be timed, and why: it writes variables (timing
    it would change the served state), the batching session rejects it, or its declared dtype
    is not the graph's (both: the serving and direct_tensor_inputs gates report it)."""
    from pytest_tfserving.gates.string_ops import model_graph
    from pytest_tfserving.servability import signature_traits

    graph = model_graph(ctx)
    out: dict[str, str] = {}
    for name in names:
        traits = signature_traits(ctx.model.signature(name), graph)
        state, no_batch = traits.state_problem(), traits.batching_problem()
        if state:
            out[name] = f"{state}"
        elif no_batch and batching:
            out[name] = f"{no_batch} (the serving gate fails on it)"
        elif traits.dtype_problems:
            out[name] = (f"{'; '.join(traits.dtype_problems)} (the direct_tensor_inputs gate "
                         "fails on it)")
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _summary(cold: dict[str, dict[str, Any]], worst: float | None) -> dict[str, Any]:
    """The worst signature's numbers (the one the verdict hangs on)."""
    rated = [v for v in cold.values() if "ratio" in v]
    if not rated:
        return {"cold_ratio": None, "first_ms": None, "p50_ms": None}
    top = max(rated, key=lambda v: float(v["ratio"]))
    return {"cold_ratio": _round(worst, 2), "first_ms": _round(top["first_ms"]),
            "p50_ms": _round(top["p50_ms"])}


def check_replay(server: RunningServer, records: int) -> dict[str, Any]:
    from pytest_tfserving.warmup_contract import no_file_lines, parse_replay_lines

    out: dict[str, Any] = {"measured": {}, "failures": [], "notes": [], "line": None}
    text = server.logs()
    if not text.strip():
        out["notes"].append(f"replay not verified: the {server.backend} backend gives no "
                            "server log")
        out["measured"]["replayed_records"] = None
        return out
    lines = parse_replay_lines(text)
    for _ in range(20):  # the line precedes AVAILABLE, but a log reader may lag behind a little
        if lines or no_file_lines(text):
            break
        time.sleep(0.1)
        text = server.logs()
        lines = parse_replay_lines(text)
    if not lines:
        missing = no_file_lines(text)
        if missing:
            out["failures"].append(
                f"the server found no warmup file at {missing[-1]} although the model has one: "
                "check that the whole version dir (assets.extra included) is deployed")
        else:
            out["failures"].append(
                "the server log has no 'Finished reading warmup data' line, so the warmup was "
                "not replayed: serve with --enable_model_warmup=true (TF Serving's default) and "
                f"a server that supports warmup ({server.backend} at "
                f"{server.endpoint.image_or_binary})")
        out["measured"]["replayed_records"] = 0
        return out
    line = lines[-1]
    out["line"] = {"path": line.path, "records": line.records, "micros": line.micros}
    out["measured"].update(replayed_records=line.records, replay_ms=round(line.micros / 1e3, 3))
    if line.records != records:
        out["failures"].append(
            f"the server read {line.records} warmup record(s) but the file holds {records}: "
            f"the server replayed another or a truncated file ({line.path}); deploy the "
            "version dir as gated")
    return out


def _config(ctx: GateContext, label: str, enable_warmup: bool) -> ServeConfig:
    return ctx.session.serve_config(label=label, enable_warmup=enable_warmup)


def _cold_start(ctx: GateContext, label: str, signatures: list[str], steady: int,
                enable_warmup: bool) -> dict[str, dict[str, Any]]:
    """First-request and steady-state latency per signature on a server started for this
    measurement (measured once per session: the second caller would find it warm)."""
    config = _config(ctx, label, enable_warmup)
    key = f"warmup:cold-start:{hash(config)}:{','.join(signatures)}:{steady}"
    cached = ctx.session.cache.get(key)
    if cached is not None:
        return dict(cached)
    inputs = {name: _inputs(ctx, name) for name in signatures}
    server = ctx.server(config)
    client = server.client()
    # Connect and exercise the RPC path without touching the model (status, metadata), and
    # build each request before timing: only the model's cold cost is what warmup removes.
    client.status()
    client.metadata()
    requests: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, values in inputs.items():
        if values is None:
            results[name] = {"error": "no request could be built (string input without a "
                                      "warmup record or parse spec)"}
        else:
            requests[name] = client.predict_request(values, signature_name=name)
    for name, request in requests.items():  # every first request before any steady traffic
        try:
            results[name] = {"first_ms": _timed(client, request)}
        except Exception as exc:  # grpc.RpcError and conversion errors alike
            results[name] = {"error": exc.details() if hasattr(exc, "details") else str(exc)}
    for name, values in results.items():
        if "error" in values:
            continue
        samples = [_timed(client, requests[name]) for _ in range(steady)]
        import numpy as np

        p50 = float(np.percentile(samples, 50))
        values.update(p50_ms=p50, p99_ms=float(np.percentile(samples, 99)),
                      ratio=values["first_ms"] / p50 if p50 > 0 else float("inf"),
                      steady_requests=steady, enable_warmup=enable_warmup)
    ctx.session.cache[key] = results
    return results


def _inputs(ctx: GateContext, signature_name: str) -> dict[str, Any] | None:
    from pytest_tfserving.gates.served_answers import request_inputs

    inputs, _source = request_inputs(ctx, ctx.model.signature(signature_name), batch_size=1)
    return inputs


def _timed(client: Any, request: Any) -> float:
    started = time.perf_counter()
    client.prediction.Predict(request, timeout=60.0)
    return (time.perf_counter() - started) * 1e3
