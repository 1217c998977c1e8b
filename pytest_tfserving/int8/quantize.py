"""SavedModel -> TFLite flatbuffers: the float conversion and full-integer INT8 post-training
quantization, plus the representative (calibration) samples and a readable converter error.

INT8 keeps float32 input and output types (``inference_input_type`` / ``output_type`` left at
their float defaults): the quantized model then takes exactly the requests and eval arrays the
float model takes and returns comparable outputs, at the cost of one quantize op on the way in
and one dequantize op on the way out. Every op in between must be an INT8 builtin
(``TFLITE_BUILTINS_INT8`` only), so a model that would silently stay partly float fails here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pytest_tfserving.errors import GateError
from pytest_tfserving.int8.eval_data import EvalData
from pytest_tfserving.model import Signature

Sample = dict[str, np.ndarray[Any, Any]]
CALIBRATION_SOURCES = ("auto", "eval", "warmup", "synthesized")


class QuantizationError(GateError):
    """The converter could not produce the (fully quantized) TFLite model."""


def representative_samples(source: str, count: int, signature: Signature, version_dir: Path,
                           eval_data: EvalData | None) -> tuple[list[Sample], str]:
    """Calibration samples (batch of 1 each) and a description of where they came from.

    ``auto`` takes the eval data, else the warmup records, else inputs synthesized from the
    signature (uniform in [0, 1) for floats: only a fallback, real data calibrates better)."""
    if source not in CALIBRATION_SOURCES:
        raise GateError(f"Unknown calibration source {source!r}; use one of "
                        f"{', '.join(CALIBRATION_SOURCES)}.")
    if source in ("auto", "eval") and eval_data is not None:
        samples = eval_data.rows_as_samples(count)
        return samples, f"{len(samples)} eval rows from {eval_data.source}"
    if source == "eval":
        raise GateError("Calibration source 'eval' chosen but no eval data is configured; pass "
                        "--tfs-eval-data=FILE.npz or use --tfs-int8-calibration=auto.")
    if source in ("auto", "warmup"):
        samples = _warmup_samples(version_dir, signature, count)
        if samples:
            return samples, f"{len(samples)} warmup rows from {version_dir}"
        if source == "warmup":
            raise GateError(f"Calibration source 'warmup' chosen but {version_dir} has no "
                            f"warmup record for signature {signature.name!r}; add "
                            "assets.extra/tf_serving_warmup_requests or use 'auto'.")
    from pytest_tfserving.predict_requests import synthesize_inputs

    samples = [synthesize_inputs(signature, batch_size=1, seed=i) for i in range(count)]
    return samples, f"{len(samples)} synthesized inputs (no eval data or warmup records)"


def _warmup_samples(version_dir: Path, signature: Signature, count: int) -> list[Sample]:
    from pytest_tfserving.predict_requests import warmup_inputs

    samples: list[Sample] = []
    for request in warmup_inputs(version_dir, signature.name, limit=count):
        if set(request) != set(signature.inputs):
            continue
        rows = len(next(iter(request.values())))
        for i in range(rows):
            samples.append({k: v[i:i + 1] for k, v in request.items()})
            if len(samples) >= count:
                return samples
    return samples


def convert(version_dir: Path, signature: Signature, *,
            representative: list[Sample] | None) -> bytes:
    """Float TFLite (``representative=None``) or full-integer INT8 TFLite of one signature."""
    import tensorflow as tf

    int8 = representative is not None
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(version_dir), signature_keys=[signature.name])
        if representative is not None:
            samples = list(representative)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with warnings.catch_warnings():
            # the converter's calibrator uses tf.lite.Interpreter internally and warns about
            # its deprecation; our own inference uses LiteRT.
            warnings.simplefilter("ignore", UserWarning)
            model: bytes = converter.convert()
        return model
    except Exception as exc:  # ConverterError, ValueError, RuntimeError from MLIR passes
        raise QuantizationError(explain_converter_error(exc, version_dir, signature.name, int8))\
            from None


_LOC = re.compile(r"loc\([^:]*?\)\):\s*")
_NOT_BUILTIN = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op")
_SELECT = re.compile(r"TF Select ops: ([^\n]+)")


def converter_reasons(exc: BaseException) -> tuple[list[str], list[str]]:
    """(ops the converter could not lower, first lines of its error messages)."""
    ops: list[str] = []
    messages: list[str] = []
    for data in getattr(exc, "errors", None) or []:
        op = getattr(getattr(data, "operator", None), "name", "")
        if op and op not in ops:
            ops.append(op)
        first = str(getattr(data, "error_message", "")).split("\n", 1)[0].strip()
        code = getattr(data, "error_code", 0)
        if first:
            try:
                from tensorflow.lite.python.metrics import converter_error_data_pb2 as pb

                code_name = pb.ConverterErrorData.ErrorCode.Name(code)
            except Exception:  # older/newer protos: the message alone is enough
                code_name = ""
            text = f"{code_name}: {first}" if code_name and code_name != "UNKNOWN" else first
            if text not in messages:
                messages.append(text)
    text = str(exc)
    for op in _NOT_BUILTIN.findall(text):
        if op not in ops:
            ops.append(op)
    select = _SELECT.search(text)
    if select:
        for op in select.group(1).split(","):
            name = "tf." + op.strip()
            if op.strip() and name not in ops:
                ops.append(name)
    if not messages:
        for line in text.splitlines():
            if "error:" in line:
                cleaned = _LOC.sub("", line.split("error:", 1)[1]).strip()
                if cleaned and cleaned not in messages:
                    messages.append(cleaned)
        if not messages and text.strip():
            messages.append(text.strip().splitlines()[0][:300])
    return ops, messages


def explain_converter_error(exc: BaseException, version_dir: Path, signature_name: str,
                            int8: bool) -> str:
    """One readable paragraph: what failed, the converter's reason, and the fix."""
    ops, messages = converter_reasons(exc)
    what = "quantize" if int8 else "convert"
    target = "fully to INT8 (TFLITE_BUILTINS_INT8 only)" if int8 else "to TFLite"
    parts = [f"The TFLite converter cannot {what} signature {signature_name!r} of {version_dir} "
             f"{target}."]
    if ops:
        parts.append(f"Op(s) with no TFLite builtin kernel: {', '.join(ops)}.")
    if messages:
        reason = "; ".join(messages[:3]) + (f" (+{len(messages) - 3} more)"
                                            if len(messages) > 3 else "")
        parts.append(f"Converter said: {reason}.")
    string_ops = [op for op in ops if re.search(r"String|AsString|ParseExample|Substr|Regex|"
                                                  r"Lookup|HashTable|Decode", op)]
    if any(marker in text for text in (str(exc), *messages)
           for marker in ("VariableV2", "has a reference type")):
        parts.append("The SavedModel keeps TF1 reference variables (VariableV2, e.g. TF "
                     "Serving's saved_model_half_plus_two_cpu), which the TFLite converter "
                     "cannot freeze: re-export it with resource variables "
                     "(tf.compat.v1.enable_resource_variables() before building the graph, or "
                     "tf.saved_model.save from TF2),")
    elif string_ops:
        parts.append("Full-integer INT8 needs every op on the serving path to be a TFLite "
                     "builtin: move string handling (parsing, AsString, hashing, lookups) to "
                     "the client and take direct numeric tensors (see the no_string_ops gate),")
    else:
        parts.append("Fix the model so every op on the serving path has an INT8 TFLite builtin "
                     "kernel,")
    parts.append("or quantize it yourself and pass --tfs-int8-model=FILE.tflite.")
    return " ".join(parts)
