"""The ``serving`` gate: the model loads in the server, every signature under gate answers, the
served predictions equal an in-process call of the same SavedModel, and, when the server
batches, answers do not change when examples are coalesced into batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.model import Signature
from pytest_tfserving.option_spec import option
from pytest_tfserving.servability import SignatureTraits
from pytest_tfserving.session import RunningServer

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ServingParams:
    """How closely served answers must match an in-process call, and the request size."""

    rtol: float = option("serving_rtol", 1e-4, p.non_negative_float, "serving gate: relative "
                         "tolerance between served and in-process predictions.", metavar="RTOL")
    atol: float = option("serving_atol", 1e-5, p.non_negative_float, "serving gate: absolute "
                         "tolerance between served and in-process predictions.", metavar="ATOL")
    batch_size: int = option("serving_batch_size", 4, p.positive_int, "serving gate: examples "
                             "per synthesized request.", metavar="N")


Inputs = dict[str, Any]


def request_candidates(ctx: GateContext, signature: Signature, batch_size: int,
                       traits: SignatureTraits | None = None
                       ) -> tuple[list[tuple[Inputs, str]], str]:
    """Requests to try, best first, and why there are none when the list is empty: a warmup
    record (what the team says real traffic looks like), else inputs synthesized from the
    signature. A classify/regress signature that parses tf.Example gets a [batch] vector of
    them, as the Classify/Regress APIs feed it (whatever dtype or shape it declares); an input
    without a shape in the SignatureDef gets a batch vector, then a scalar (the two shapes
    such placeholders usually take)."""
    from pytest_tfserving.predict_requests import synthesize_inputs, warmup_inputs

    recorded = warmup_inputs(ctx.model.version_dir, signature.name, limit=50)
    if recorded:
        return [(recorded[0], "warmup record")], ""
    if traits is not None and traits.takes_examples:
        from pytest_tfserving.examples import synthesize_example_inputs

        inputs = synthesize_example_inputs(ctx.model, signature, batch_size,
                                           as_examples_api=True)
        if inputs is not None:
            return [(inputs, "tf.Example built from the graph's parse spec, fed as the "
                             "Classify/Regress APIs do")], ""
    if any(spec.is_string for spec in signature.inputs.values()):
        from pytest_tfserving.examples import synthesize_example_inputs

        inputs = synthesize_example_inputs(ctx.model, signature, batch_size)
        if inputs is None:
            return [], ("string input with no warmup record to copy and no tf.Example parse "
                        "spec found in the graph")
        return [(inputs, "tf.Example built from the graph's parse spec")], ""
    candidates = [(synthesize_inputs(signature, batch_size=batch_size, seed=7), "synthesized")]
    unknown = [k for k, spec in signature.inputs.items() if spec.shape is None]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        candidates[0] = (candidates[0][0], f"synthesized, {names} of unknown rank sent as "
                                           f"[{batch_size}]")
        candidates.append((synthesize_inputs(signature, batch_size=batch_size, seed=7,
                                              unknown_rank_scalar=True),
                           f"synthesized, {names} of unknown rank sent as a scalar"))
    return candidates, ""


def request_inputs(ctx: GateContext, signature: Signature, batch_size: int) -> tuple[
        Inputs | None, str]:
    """The first request to try for ``signature`` and where it came from (None: why not)."""
    candidates, why = request_candidates(ctx, signature, batch_size)
    if not candidates:
        return None, why
    return candidates[0]


def compare(served: dict[str, np.ndarray[Any, Any]], expected: dict[str, np.ndarray[Any, Any]],
            rtol: float, atol: float) -> tuple[list[str], float]:
    import numpy as np

    problems: list[str] = []
    worst = 0.0
    for key, want in expected.items():
        got = served.get(key)
        if got is None:
            problems.append(f"output {key!r} missing from the served response")
            continue
        if got.shape != want.shape:
            problems.append(f"output {key!r} has shape {list(got.shape)}, in-process "
                            f"{list(want.shape)}")
            continue
        if want.dtype.kind in "fc":
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)),
                                initial=0.0))
            worst = max(worst, diff)
            if not np.allclose(got, want, rtol=rtol, atol=atol):
                problems.append(f"output {key!r} differs from the in-process call by up to "
                                f"{diff:.3g} (rtol {rtol}, atol {atol})")
        elif not np.array_equal(got, want):
            problems.append(f"output {key!r} differs from the in-process call")
    return problems, worst


def _error_text(exc: Exception) -> str:
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return str(details).strip().splitlines()[0] if str(details).strip() else type(exc).__name__


def _predict(client: Any, signature_name: str, candidates: list[tuple[Inputs, str]]
             ) -> tuple[Inputs, str, dict[str, np.ndarray[Any, Any]] | None, list[str]]:
    """Send the candidates in order until one is answered: (inputs, source, outputs or None,
    the rejections as "source: error")."""

    rejected: list[str] = []
    for inputs, source in candidates:
        try:
            return inputs, source, client.predict(inputs, signature_name=signature_name), \
                rejected
        except Exception as exc:  # grpc.RpcError and conversion errors alike
            rejected.append(f"{source}: {_error_text(exc)}")
    inputs, source = candidates[-1]
    return inputs, source, None, rejected


def _why_rejected(traits: SignatureTraits, batching: str) -> list[str]:
    """The known reasons a signature's requests fail, each with its fix (no signature name,
    so that signatures failing for one reason share one line)."""
    reasons: list[str] = []
    no_batch = traits.batching_reason()
    if no_batch and batching:
        reasons.append(f"{no_batch}; {batching}. {traits.batching_fix()}")
    if traits.dtype_problems:
        reasons.append(f"{'; '.join(traits.dtype_problems)}, so no request fits both the "
                       "declaration (what clients build from the model metadata) and the graph "
                       "(what TF runs); the direct_tensor_inputs gate reports it. Fix: "
                       "re-export the signature declaring the tensor's own dtype")
    if traits.unknown_rank_inputs and not reasons:
        names = ", ".join(repr(k) for k in traits.unknown_rank_inputs)
        reasons.append(f"input(s) {names} have no shape in the SignatureDef, so the request "
                       "shape could only be guessed. Fix: declare the shape when exporting, or "
                       "add a warmup record with a real request for this signature")
    return reasons


def _rejection_lines(rejections: dict[str, tuple[str, list[str]]]) -> list[str]:
    """One line per reason shared by signatures: "a, b: Predict failed (...). Why: ..."."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, (_tried, reasons) in rejections.items():
        groups.setdefault(tuple(reasons) or (f"unexplained:{name}",), []).append(name)
    lines = []
    for why, names in groups.items():
        tried = rejections[names[0]][0]
        line = f"{', '.join(names)}: Predict failed ({tried})"
        if not why[0].startswith("unexplained:"):
            subject = "each" if len(names) > 1 else "it"
            line += ". Why: " + "; and ".join(
                f"{subject} {r}" if r.startswith("takes ") else r for r in why)
        lines.append(line)
    return lines


def _batching_state(ctx: GateContext, server: RunningServer) -> str:
    if server.backend == "remote":
        return "if the remote server runs with --enable_batching"
    if server.config.batching is None:
        return ""
    return f"batching is on in this run: {ctx.session.settings.batching_source}"


def _traits(ctx: GateContext, names: list[str]) -> dict[str, SignatureTraits]:
    from pytest_tfserving.gates.string_ops import model_graph
    from pytest_tfserving.servability import signature_traits

    graph = model_graph(ctx)
    return {n: signature_traits(ctx.model.signature(n), graph) for n in names}


@dataclass
class ServingRun:
    """What one serving gate run measured: the server and each signature's answer."""

    server: RunningServer
    start_s: float
    per_signature: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rejections: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    stateful: list[str] = field(default_factory=list)
    worst: float = 0.0
    asked: dict[str, tuple[Inputs, str]] = field(default_factory=dict)  # answered requests
    invariance: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check(ctx: GateContext) -> GateResult:
    params = ctx.params(ServingParams)
    names, traits = resolve(ctx)
    run = measure(ctx, params, names, traits)
    passed, notes = judge(run)
    return render(ctx, params, run, passed, notes)


def resolve(ctx: GateContext) -> tuple[list[str], dict[str, SignatureTraits]]:
    """The signatures under gate, those that write variables last (the others then see the
    state a fresh load has), with their traits."""
    names = ctx.signatures_under_gate()
    traits = _traits(ctx, names)
    names.sort(key=lambda n: traits[n].stateful)
    return names, traits


def measure(ctx: GateContext, params: ServingParams, names: list[str],
            traits: dict[str, SignatureTraits]) -> ServingRun:
    """Start the server and send each signature a request, comparing the answer with an
    in-process call; then check batching invariance."""
    started = time.monotonic()
    server = ctx.server()
    run = ServingRun(server=server, start_s=time.monotonic() - started)
    client = server.client()
    batching = _batching_state(ctx, server)
    for name in names:
        _measure_signature(ctx, params, run, client, name, traits[name], batching)
    _check_invariance(ctx, params, run, client, traits)
    return run


def _measure_signature(ctx: GateContext, params: ServingParams, run: ServingRun, client: Any,
                       name: str, traits: SignatureTraits, batching: str) -> None:
    from pytest_tfserving.inprocess import call_signature, call_tflite_signature

    signature = ctx.model.signature(name)
    candidates, why = request_candidates(ctx, signature, params.batch_size, traits)
    if not candidates:
        run.per_signature[name] = {"checked": False, "reason": why}
        run.failures.append(f"{name}: cannot build a request ({why}); add a warmup file")
        return
    t0 = time.perf_counter()
    inputs, source, served, rejected = _predict(client, name, candidates)
    if served is None:
        tried = "; ".join(rejected)
        run.rejections[name] = (tried, _why_rejected(traits, batching))
        run.per_signature[name] = {"checked": True, "answered": False, "error": tried}
        return
    latency_ms = (time.perf_counter() - t0) * 1e3
    entry: dict[str, Any] = {"checked": True, "answered": True, "request": source,
                             "first_request_ms": round(latency_ms, 3),
                             "outputs": sorted(served)}
    run.per_signature[name] = entry
    if traits.stateful:
        entry["compared"] = False
        run.stateful.append(f"{name} ({traits.writes_text()})")
        run.invariance[name] = {"skipped": "the signature writes variables"}
        return
    run.asked[name] = (inputs, source)
    server = run.server
    try:
        if server.config.prefer_tflite:  # the INT8 model is served: compare with LiteRT
            expected = call_tflite_signature(server.config.version_dir, name, inputs)
        else:
            expected = call_signature(ctx.model.version_dir, name, inputs)
    except Exception as exc:  # the reference could not run what the server answered
        run.failures.append(f"{name}: the server answered, but the in-process reference call "
                            f"failed on the same request ({_error_text(exc)})")
        entry["compared"] = False
        return
    problems, diff = compare(served, expected, params.rtol, params.atol)
    run.worst = max(run.worst, diff)
    run.failures += [f"{name}: {p}" for p in problems]
    entry.update(compared=True, max_abs_diff=diff)


def _invariance_pool(ctx: GateContext, name: str, traits: SignatureTraits, inputs: Inputs,
                     source: str, rows: int) -> list[Inputs]:
    """Requests to take the invariance check's examples from: the answered one when it is big
    enough, else it and the other warmup records, else the same kind rebuilt at ``rows``."""
    from pytest_tfserving.gates.batching_invariance import batch_rows
    from pytest_tfserving.predict_requests import warmup_inputs

    if (batch_rows(inputs) or 0) >= rows:
        return [inputs]
    if source == "warmup record":
        return [inputs, *warmup_inputs(ctx.model.version_dir, name, limit=50)[1:]]
    candidates, _ = request_candidates(ctx, ctx.model.signature(name), rows, traits)
    return [c for c, _ in candidates] + [inputs]


def _check_invariance(ctx: GateContext, params: ServingParams, run: ServingRun, client: Any,
                      traits: dict[str, SignatureTraits]) -> None:
    """Batching invariance for each answered signature that does not write variables, when
    the server batches: a change fails the gate, a check that cannot run is a note."""
    from pytest_tfserving.gates import batching_invariance as bi

    if run.server.config.batching is None:
        run.invariance.update({n: {"skipped": "batching off"} for n in run.asked})
        return
    rows = bi.wanted_examples(params.batch_size)
    for name, (inputs, source) in run.asked.items():
        pool = _invariance_pool(ctx, name, traits[name], inputs, source, rows)
        examples, why = bi.examples_from(inputs, pool, rows)
        if examples is None:
            run.invariance[name] = {"skipped": why}
            run.notes.append(f"{name}: batching invariance not checked ({why})")
            continue
        entry, failure, note = bi.check_signature(client, name, examples, params.rtol,
                                                  params.atol, ctx.settings.batching_source)
        run.invariance[name] = entry
        run.failures += [failure] if failure else []
        run.notes += [note] if note else []


def judge(run: ServingRun) -> tuple[bool, list[str]]:
    """Pass when nothing failed and a signature answered; the rejections go first among the
    failures, and signatures not compared become notes."""
    notes: list[str] = list(run.notes)
    run.failures[:0] = _rejection_lines(run.rejections)
    if run.stateful:
        notes.append(f"{', '.join(run.stateful)} answered but not compared with an in-process "
                     "call: these signatures write variables, so every call changes the served "
                     "state and each answer depends on what ran before (they ran after the "
                     "others)")
    answered = [n for n, v in run.per_signature.items() if v.get("answered")]
    passed = not run.failures and bool(answered)
    if not run.per_signature:
        run.failures.append("no signature under gate (the model has no predict/classify/regress "
                            "signature)")
    return passed, notes


def render(ctx: GateContext, params: ServingParams, run: ServingRun, passed: bool,
           notes: list[str]) -> GateResult:
    server, per_signature, worst = run.server, run.per_signature, run.worst
    answered = [n for n, v in per_signature.items() if v.get("answered")]
    compared = [n for n, v in per_signature.items() if v.get("compared")]
    artifact = "INT8 model.tflite" if server.config.prefer_tflite else "SavedModel"
    if passed:
        message = (f"model {ctx.model.name!r} v{ctx.model.version} ({artifact}) served by "
                   f"{server.backend}; {len(answered)} signature(s) answered, {len(compared)} "
                   f"matched the in-process call (max abs diff {worst:.3g})")
        held = [v["examples"] for v in run.invariance.values() if v.get("ok")]
        if held:
            message += (f"; answers unchanged under batching for {len(held)} signature(s) "
                        f"(up to {max(held)} examples alone, coalesced and in one request)")
    else:
        message = "\n".join(run.failures)
    if notes:
        message += "\nNote: " + "\nNote: ".join(notes)
    return GateResult(
        name="serving",
        passed=passed,
        threshold={"rtol": params.rtol, "atol": params.atol, "signatures": "all served",
                   "reference": "LiteRT model.tflite" if server.config.prefer_tflite
                   else "in-process SavedModel"},
        measured={"signatures_answered": len(answered), "signatures": len(per_signature),
                  "signatures_compared": len(compared), "max_abs_diff": worst,
                  "server_start_s": round(run.start_s, 3)},
        message=message,
        details={"per_signature": per_signature, "invariance": run.invariance},
    )
