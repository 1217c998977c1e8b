"""The INT8 options: eval data, quantization and calibration, the metric and its change bounds,
and whether the served gates serve the INT8 model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.core_options import require_signatures
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.option_spec import option

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo


def _metric_marker(value: Any) -> Any:
    """A marker's ``metric=``: a name (parsed like the flag) or a callable as is."""
    return value if callable(value) else p.text(str(value))


def _eval_data_marker(value: Any) -> Any:
    """A marker's ``eval_data=``: a path (parsed like the flag) or arrays / an EvalData as is."""
    if isinstance(value, (str, Path)):
        return p.path(str(value))
    return value


@dataclass(frozen=True)
class Int8Options:
    """How the int8_delta gate quantizes, calibrates and judges; ``serve`` for served gates."""

    eval_data: Any = option(
        "eval_data", None, p.path, "Eval set for the int8_delta gate: .npz with arrays named "
        "after the signature's inputs plus labels (or override the tfs_eval_data fixture).",
        metavar="FILE.npz", from_marker=_eval_data_marker)
    int8_model: Path | None = option(
        "int8_model", None, p.existing_file, "int8_delta gate: use this INT8 .tflite instead "
        "of quantizing the SavedModel.", metavar="FILE.tflite")
    metric: Any = option(
        "int8_metric", "auto", p.text, "int8_delta gate metric: auto, accuracy, top_k_accuracy, "
        "auc, mae, rmse; label-free: agreement, max_abs_diff, mean_abs_diff, cosine; or "
        "module:function (fn(target, predictions) -> float).", metavar="NAME",
        from_marker=_metric_marker)
    max_delta: float | None = option(
        "int8_max_delta", None, p.non_negative_float, "int8_delta gate: largest allowed "
        "absolute worsening of the metric from float to INT8 (default 0.01 for accuracy-like "
        "metrics).", metavar="DELTA")
    max_rel_delta: float | None = option(
        "int8_max_rel_delta", None, p.non_negative_float, "int8_delta gate: largest allowed "
        "relative worsening (fraction of the float value; default 0.05 for mae/rmse).",
        metavar="FRACTION")
    direction: str = option(
        "int8_direction", "auto", p.choice("auto", "higher", "lower"), "int8_delta gate: "
        "whether higher or lower metric values are better (auto: the metric's own; custom "
        "metrics: higher).")
    samples: int = option("int8_samples", 200, p.positive_int, "int8_delta gate: "
                          "representative (calibration) samples.", metavar="N")
    calibration: str = option(
        "int8_calibration", "auto", p.choice("auto", "eval", "warmup", "synthesized"),
        "int8_delta gate: calibration data: auto (eval data, else warmup records, else "
        "synthesized), eval, warmup, synthesized.")
    batch_size: int = option("int8_batch_size", 32, p.positive_int, "int8_delta gate: batch "
                             "size for evaluation and timing.", metavar="N")
    signature: str | None = option("int8_signature", None, p.text, "int8_delta gate: signature "
                                   "to quantize (default serving_default).", metavar="NAME")
    output: str | None = option(
        "int8_output", None, p.text, "int8_delta gate: output the metric reads (default: class "
        "scores, else the first float output).", metavar="NAME")
    top_k: int = option("int8_top_k", 5, p.positive_int, "int8_delta gate: k for "
                        "top_k_accuracy.", metavar="K")
    label_key: str = option("int8_label_key", "labels", p.text, "int8_delta gate: name of the "
                            "labels array in the eval data.", metavar="NAME")
    serve: bool = option(
        "int8_serve", False, p.boolean, "Serve the INT8 model (model.tflite in a staged copy, "
        "--prefer_tflite_model) for the served gates.", metavar="BOOL", marker="")

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        """The signature and output exist; eval data has the signature's inputs, shaped."""
        from pytest_tfserving.servability import load_signature_choice

        require_signatures(model, [self.signature], "--tfs-int8-signature",
                           sources.get("int8_signature", "default"))
        name, _ = load_signature_choice(model, self.signature)
        if name is None:
            return
        signature = model.signature(name)
        if self.output and self.output not in signature.outputs:
            raise ConfigError(
                f"--tfs-int8-output={self.output}: signature {name!r} has no such output (from "
                f"{sources.get('int8_output')}); it has: {', '.join(sorted(signature.outputs))}.")
        if isinstance(self.eval_data, Path):
            from pytest_tfserving.int8.eval_data import load_npz, validate

            if not self.eval_data.is_file():
                raise ConfigError(f"--tfs-eval-data={self.eval_data}: no such file (from "
                                  f"{sources.get('eval_data')}); give a .npz with arrays named "
                                  "after the signature's inputs plus labels.")
            validate(load_npz(self.eval_data, self.label_key), signature)
