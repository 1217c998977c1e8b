"""The ``serving`` gate: the model loads in the server, every signature under gate answers, and
the served predictions equal an in-process call of the same SavedModel."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.model import Signature

ALLOWED = {"rtol", "atol", "batch_size", "signatures"}
DEFAULT_RTOL, DEFAULT_ATOL = 1e-4, 1e-5


def request_inputs(ctx: GateContext, signature: Signature, batch_size: int) -> tuple[
        dict[str, Any] | None, str]:
    """Inputs for one request and where they came from: warmup records first (they are what
    the team says real traffic looks like), then inputs synthesized from the signature."""
    from pytest_tfserving.requests import synthesize_inputs, warmup_inputs

    recorded = warmup_inputs(ctx.model.version_dir, signature.name, limit=50)
    if recorded:
        return recorded[0], "warmup record"
    if any(spec.is_string for spec in signature.inputs.values()):
        from pytest_tfserving.examples import synthesize_example_inputs

        inputs = synthesize_example_inputs(ctx.model, signature, batch_size)
        if inputs is None:
            return None, ("string input with no warmup record to copy and no tf.Example parse "
                          "spec found in the graph")
        return inputs, "tf.Example built from the graph's parse spec"
    return synthesize_inputs(signature, batch_size=batch_size, seed=7), "synthesized"


def compare(served: dict[str, np.ndarray[Any, Any]], expected: dict[str, np.ndarray[Any, Any]],
            rtol: float, atol: float) -> tuple[list[str], float]:
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


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.inprocess import call_signature, call_tflite_signature

    ctx.check_overrides(ALLOWED)
    rtol = float(ctx.overrides.get("rtol", DEFAULT_RTOL))
    atol = float(ctx.overrides.get("atol", DEFAULT_ATOL))
    batch_size = int(ctx.overrides.get("batch_size", 4))
    started = time.monotonic()
    server = ctx.server()
    start_s = time.monotonic() - started
    client = server.client()
    per_signature: dict[str, Any] = {}
    failures: list[str] = []
    worst = 0.0
    for name in ctx.signatures_under_gate():
        signature = ctx.model.signature(name)
        inputs, source = request_inputs(ctx, signature, batch_size)
        if inputs is None:
            per_signature[name] = {"checked": False, "reason": source}
            failures.append(f"{name}: cannot build a request ({source}); add a warmup file")
            continue
        t0 = time.perf_counter()
        try:
            served = client.predict(inputs, signature_name=name)
        except Exception as exc:  # grpc.RpcError and conversion errors alike
            details = exc.details() if hasattr(exc, "details") else str(exc)
            failures.append(f"{name}: Predict failed: {details}")
            per_signature[name] = {"checked": True, "answered": False, "error": details}
            continue
        latency_ms = (time.perf_counter() - t0) * 1e3
        if server.config.prefer_tflite:  # the INT8 model is served: compare with LiteRT
            expected = call_tflite_signature(server.config.version_dir, name, inputs)
        else:
            expected = call_signature(ctx.model.version_dir, name, inputs)
        problems, diff = compare(served, expected, rtol, atol)
        worst = max(worst, diff)
        failures += [f"{name}: {p}" for p in problems]
        per_signature[name] = {"checked": True, "answered": True, "request": source,
                               "first_request_ms": round(latency_ms, 3),
                               "max_abs_diff": diff, "outputs": sorted(served)}
    checked = [n for n, v in per_signature.items() if v.get("answered")]
    passed = not failures and bool(checked)
    if not per_signature:
        failures.append("no signature under gate (the model has no predict/classify/regress "
                        "signature)")
    artifact = "INT8 model.tflite" if server.config.prefer_tflite else "SavedModel"
    message = (f"model {ctx.model.name!r} v{ctx.model.version} ({artifact}) served by "
               f"{server.backend}; "
               f"{len(checked)} signature(s) answered and matched the in-process call "
               f"(max abs diff {worst:.3g})") if passed else "; ".join(failures)
    return GateResult(
        name="serving",
        passed=passed,
        threshold={"rtol": rtol, "atol": atol, "signatures": "all served",
                   "reference": "LiteRT model.tflite" if server.config.prefer_tflite
                   else "in-process SavedModel"},
        measured={"signatures_answered": len(checked), "signatures": len(per_signature),
                  "max_abs_diff": worst, "server_start_s": round(start_s, 3)},
        message=message,
        details={"per_signature": per_signature},
    )
