"""The ``int8_delta`` gate: full-integer post-training quantization keeps the metric within
TFMA-style change bounds, with the size and CPU latency ratios measured beside it.

Skipped (with the reason) when no eval data is configured. A model the converter cannot
quantize fully fails with the converter's reason in one paragraph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving.core_options import SignatureSelection
from pytest_tfserving.errors import ConfigError, GateError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.int8.int8_options import Int8Options
from pytest_tfserving.model import ModelInfo, Signature

if TYPE_CHECKING:
    import numpy as np

NAME = "int8_delta"
PLAYBOOK_SIZE_RATIO = 0.25  # "model size -75 %"
PLAYBOOK_SPEEDUP = (2.0, 3.0)  # "CPU inference 2-3x faster"


def signature_choice(ctx: GateContext, model: ModelInfo) -> tuple[Signature | None, str]:
    """--tfs-int8-signature / signature=, else the first of --tfs-signatures, else
    serving_default, else the only served signature; (None, why) when it cannot tell."""
    from pytest_tfserving.servability import load_signature_choice

    name = ctx.params(Int8Options).signature or next(
        iter(ctx.params(SignatureSelection).signatures), None)
    chosen, why = load_signature_choice(
        model, str(name) if name else None,
        "--tfs-int8-signature=NAME (or signature= on the marker)")
    return (model.signature(chosen), "") if chosen else (None, why)


def choose_signature(ctx: GateContext, model: ModelInfo) -> Signature:
    signature, why = signature_choice(ctx, model)
    if signature is None:
        raise ConfigError(f"Cannot tell which signature of {model.version_dir} to quantize: "
                          f"{why}.")
    return signature


def not_applicable(ctx: GateContext, signature: Signature) -> str | None:
    """Why INT8 post-training quantization cannot be measured on ``signature``, or None."""
    from pytest_tfserving.gates.string_ops import model_graph
    from pytest_tfserving.servability import signature_traits

    traits = signature_traits(signature, model_graph(ctx))
    if traits.stateful:
        return (f"{traits.state_problem()}; its answers depend on the served state, and TFLite "
                "does not convert variable updates, so there is no INT8 model to compare. "
                "Quantize a read-only signature: --tfs-int8-signature=NAME")
    if not signature.inputs:
        return (f"signature {signature.name!r} takes no inputs, so there are no eval rows to "
                "feed it; quantize a signature with inputs: --tfs-int8-signature=NAME")
    if traits.scalar_inputs:
        names = ", ".join(repr(k) for k in traits.scalar_inputs)
        return (f"signature {signature.name!r} takes scalar input(s) {names} (shape []): eval "
                "data needs one row per example along a batch dimension, which this signature "
                "does not have. Give its inputs a batch dimension, or quantize another "
                "signature: --tfs-int8-signature=NAME")
    return None


def choose_output(requested: str | None, outputs: dict[str, np.ndarray[Any, Any]],
                  signature: Signature) -> str:
    """The output the metric reads: the requested one, else class scores ([N, C>1] float),
    else any float output, else the first output (all by name)."""
    if requested:
        if requested not in outputs:
            raise ConfigError(f"Output {requested!r} is not an output of signature "
                              f"{signature.name!r}; it has {sorted(outputs)}. Fix "
                              "--tfs-int8-output / output=.")
        return requested
    names = sorted(outputs)
    scores = [n for n in names if outputs[n].dtype.kind == "f" and outputs[n].ndim == 2
              and outputs[n].shape[1] > 1]
    floats = [n for n in names if outputs[n].dtype.kind == "f"]
    return (scores or floats or names)[0]


def load_eval_data(ctx: GateContext, label_key: str) -> Any:
    """The eval set: marker eval_data=, else the tfs_eval_data fixture (so conftest overrides
    apply), else --tfs-eval-data."""
    from pytest_tfserving.int8.eval_data import default_eval_data, from_value

    params = ctx.params(Int8Options)
    if "eval_data" in ctx.keywords:
        return from_value(params.eval_data, label_key, f"eval_data= of {ctx.origin}")
    if ctx.fixture is not None:
        value = ctx.fixture_value("tfs_eval_data")
        return from_value(value, label_key, "tfs_eval_data fixture")
    return default_eval_data(params)


def _artifacts(ctx: GateContext, model: ModelInfo, signature: Signature, eval_data: Any,
               calibration: str, samples: int, int8_model: Path | None) -> dict[str, Any]:
    """Float and INT8 flatbuffers (cached in the session: the default suite and markers share
    them). INT8 failures raise QuantizationError; a float failure is kept as a reason."""
    from pytest_tfserving.int8.quantize import QuantizationError, convert, representative_samples

    key = ("int8", str(model.version_dir), signature.name, calibration, samples,
           str(int8_model), eval_data.source if eval_data is not None else None)
    cache_key = "int8:" + repr(key)
    if cache_key in ctx.session.cache:
        cached: dict[str, Any] = ctx.session.cache[cache_key]
        return cached
    out: dict[str, Any] = {}
    started = time.monotonic()
    if int8_model is not None:
        try:
            out["int8"] = Path(int8_model).read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read --tfs-int8-model {str(int8_model)!r}: {exc}. Pass "
                              "an existing .tflite file.") from None
        out["int8_source"] = f"user-supplied {int8_model}"
    else:
        reps, described = representative_samples(calibration, samples, signature,
                                                  model.version_dir, eval_data)
        out["int8"] = convert(model.version_dir, signature, representative=reps)
        out["int8_source"] = f"full-integer PTQ calibrated on {described}"
    out["quantize_s"] = round(time.monotonic() - started, 3)
    try:
        out["float"] = convert(model.version_dir, signature, representative=None)
    except QuantizationError as exc:
        out["float"] = None
        out["float_error"] = str(exc)
    ctx.session.cache[cache_key] = out
    return out


def _label_free(reference: np.ndarray[Any, Any],
                candidate: np.ndarray[Any, Any]) -> dict[str, float]:
    from pytest_tfserving.int8 import metrics

    found: dict[str, float] = {}
    for name in metrics.LABEL_FREE:
        try:
            found[name] = round(metrics.builtin(name)(reference, candidate), 6)
        except (ConfigError, ValueError):
            continue
    return found


@dataclass
class Int8Run:
    """What one int8_delta run measured: both models' outputs on the eval rows."""

    signature: Signature
    data: Any
    art: dict[str, Any]
    output: str
    float_out: dict[str, np.ndarray[Any, Any]]
    int8_out: dict[str, np.ndarray[Any, Any]]
    int8_tfl: Any


@dataclass
class Int8Judgement:
    """The metric on both models and the bounds it was judged against."""

    metric: Any
    threshold: Any
    float_value: float
    int8_value: float
    rel: float
    violations: list[str]


def check(ctx: GateContext) -> GateResult:
    from pytest_tfserving.int8.quantize import QuantizationError

    params = ctx.params(Int8Options)
    resolved = resolve(ctx, params)
    if isinstance(resolved, GateResult):
        return resolved
    signature, data = resolved
    try:
        art = _artifacts(ctx, ctx.model, signature, data, params.calibration, params.samples,
                         params.int8_model)
    except QuantizationError as exc:
        return GateResult(name=NAME, passed=False, message=str(exc),
                          measured={"error": "QuantizationError"},
                          threshold={"signature": signature.name},
                          details={"signature": signature.name})
    run = measure(ctx, params, signature, data, art)
    return render(ctx, params, run, judge(params, run))


def resolve(ctx: GateContext, params: Int8Options) -> GateResult | tuple[Signature, Any]:
    """The signature to quantize and the validated eval data, or the skipped result saying
    why the gate cannot run."""
    from pytest_tfserving.int8.eval_data import validate

    model = ctx.model
    label_key = params.label_key
    raw = load_eval_data(ctx, label_key)
    chosen, why = signature_choice(ctx, model)
    if chosen is None and raw is None:
        return GateResult(name=NAME, passed=False, skipped=True,
                          message=f"no eval data configured, and no signature to quantize: "
                                  f"{why}")
    signature = choose_signature(ctx, model)
    reason = not_applicable(ctx, signature)
    if reason is not None:
        return GateResult(name=NAME, passed=False, skipped=True, message=reason,
                          details={"signature": signature.name})
    if raw is None:
        wanted = ", ".join(s.describe() for s in signature.inputs.values())
        return GateResult(
            name=NAME, passed=False, skipped=True,
            message=(f"no eval data configured: pass --tfs-eval-data=FILE.npz (arrays {wanted}"
                     f" plus {label_key!r}) or override the tfs_eval_data fixture in conftest.py"),
        )
    return signature, validate(raw, signature)


def measure(ctx: GateContext, params: Int8Options, signature: Signature, data: Any,
            art: dict[str, Any]) -> Int8Run:
    """Run the SavedModel and the INT8 model on the eval rows; pick the output to compare."""
    from pytest_tfserving.int8.evaluate import TFLiteModel, run_savedmodel

    batch_size = params.batch_size
    float_out = run_savedmodel(ctx.model.version_dir, signature.name, data, batch_size)
    int8_tfl = TFLiteModel(art["int8"], signature.name, "INT8 model")
    int8_out = int8_tfl.run(data, batch_size)
    output = choose_output(params.output, float_out, signature)
    if output not in int8_out:
        raise GateError(f"The INT8 model has outputs {sorted(int8_out)} but the SavedModel's "
                        f"signature {signature.name!r} has {sorted(float_out)}; the metric "
                        f"reads {output!r}. Convert the INT8 model from this SavedModel.")
    return Int8Run(signature=signature, data=data, art=art, output=output,
                   float_out=float_out, int8_out=int8_out, int8_tfl=int8_tfl)


def judge(params: Int8Options, run: Int8Run) -> Int8Judgement:
    """The metric on the float and INT8 outputs, and which bounds the change breaks."""
    from pytest_tfserving.int8 import metrics

    data, output = run.data, run.output
    metric = metrics.resolve_metric(params.metric, data.labels is not None,
                                    run.float_out[output], params.top_k, params.direction)
    threshold = metrics.make_threshold(metric, params.max_delta, params.max_rel_delta)
    target = data.labels if metric.labels and data.labels is not None else run.float_out[output]
    float_value = metric(target, run.float_out[output])
    int8_value = metric(target, run.int8_out[output])
    _worse, rel = threshold.worsening(float_value, int8_value)
    violations = threshold.violations(float_value, int8_value)
    return Int8Judgement(metric=metric, threshold=threshold, float_value=float_value,
                         int8_value=int8_value, rel=rel, violations=violations)


def render(ctx: GateContext, params: Int8Options, run: Int8Run,
           verdict: Int8Judgement) -> GateResult:
    data, output, art = run.data, run.output, run.art
    metric, float_value, int8_value = verdict.metric, verdict.float_value, verdict.int8_value
    details: dict[str, Any] = {
        "signature": run.signature.name, "output": output, "rows": data.rows,
        "labels": data.labels is not None, "eval_data": data.source,
        "int8_model": art["int8_source"],
        "float_reference": "SavedModel called in-process (TensorFlow)",
        "label_free": _label_free(run.float_out[output], run.int8_out[output]),
        "quantize_s": art["quantize_s"],
    }
    if data.ignored:
        details["ignored_arrays"] = list(data.ignored)
    measured: dict[str, Any] = {
        "metric": metric.name, "float": round(float_value, 6), "int8": round(int8_value, 6),
        "delta": round(int8_value - float_value, 6),
    }
    if verdict.rel != float("inf"):
        rel = verdict.rel
        measured["rel_delta"] = round(-rel if metric.direction == "higher" else rel, 6)
    _float_tflite(params, run, metric, measured, details)
    details["int8_tflite_bytes"] = len(art["int8"])
    details["savedmodel_bytes"] = ctx.model.size_bytes
    details["playbook"] = {"size_ratio": PLAYBOOK_SIZE_RATIO,
                           "speedup": f"{PLAYBOOK_SPEEDUP[0]:g}-{PLAYBOOK_SPEEDUP[1]:g}x"}

    message = _message(metric.name, float_value, int8_value, verdict.threshold,
                       verdict.violations, measured, details)
    return GateResult(name=NAME, passed=not verdict.violations,
                      threshold={"metric": metric.name, **verdict.threshold.as_dict()},
                      measured=measured, message=message, details=details)


def _float_tflite(params: Int8Options, run: Int8Run, metric: Any, measured: dict[str, Any],
                  details: dict[str, Any]) -> None:
    """Size and CPU latency of the INT8 model against the float TFLite model (when the float
    conversion worked), into ``measured`` and ``details``."""
    from pytest_tfserving.int8.evaluate import TFLiteModel, compare_latency

    art, data, batch_size = run.art, run.data, params.batch_size
    if art["float"] is not None:
        float_tfl = TFLiteModel(art["float"], run.signature.name, "float TFLite model")
        measured["size_ratio"] = round(len(art["int8"]) / len(art["float"]), 4)
        details["float_tflite_bytes"] = len(art["float"])
        if metric.labels and data.labels is not None:
            details["float_tflite_metric"] = round(
                metric(data.labels, float_tfl.run(data, batch_size)[run.output]), 6)
        latency = compare_latency(float_tfl, run.int8_tfl, data, batch_size)
        measured["latency_ratio"] = round(latency.ratio, 4)
        details["latency"] = latency.as_dict()
    else:
        details["float_tflite_error"] = art["float_error"]


def _message(metric: str, float_value: float, int8_value: float, threshold: Any,
             violations: list[str], measured: dict[str, Any], details: dict[str, Any]) -> str:
    bounds = []
    if threshold.max_delta is not None:
        bounds.append(f"max drop {threshold.max_delta:g}")
    if threshold.max_rel_delta is not None:
        bounds.append(f"max relative drop {threshold.max_rel_delta:.2%}")
    verdict = ("within bounds" if not violations
               else "OUT OF BOUNDS: " + "; ".join(violations))
    text = (f"{metric} float {float_value:.4f} -> INT8 {int8_value:.4f} "
            f"(delta {int8_value - float_value:+.4f}; {', '.join(bounds)} "
            f"{threshold.direction} is better) {verdict}.")
    if "size_ratio" in measured:
        latency = details["latency"]
        text += (f" Size INT8/float TFLite {measured['size_ratio']:.2f}x "
                 f"({details['int8_tflite_bytes']} vs {details['float_tflite_bytes']} bytes; "
                 f"playbook claims {PLAYBOOK_SIZE_RATIO:.2f}x). CPU latency INT8/float "
                 f"{latency['latency_ratio']:.2f}x = {latency['speedup']:.2f}x speedup "
                 f"({latency['int8_tflite_us_per_example']:.3g} vs "
                 f"{latency['float_tflite_us_per_example']:.3g} us/example, LiteRT 1 thread, "
                 f"batch {latency['batch_size']}; playbook claims "
                 f"{PLAYBOOK_SPEEDUP[0]:g}-{PLAYBOOK_SPEEDUP[1]:g}x).")
    else:
        text += f" (no float TFLite for size/latency ratios: {details['float_tflite_error']})"
    return text
