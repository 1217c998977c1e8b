"""A TF Serving warmup file's records: reading and writing them as PredictionLog protos, and the
reads of one record that validation, making and the report share.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` when it loads a model
(``--enable_model_warmup``, on by default): a TFRecord file of ``PredictionLog`` protos, of kinds
predict/classify/regress/multi_inference (``session_run_log`` fails the load); the record limit
and the line the server logs after the replay are in :mod:`pytest_tfserving.warmup_contract`.

TensorFlow (through the ``tensorflow_serving.apis`` protos) is imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import DEFAULT_SIGNATURE

SUPPORTED_KINDS = ("predict_log", "classify_log", "regress_log", "multi_inference_log")


def read_prediction_logs(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, PredictionLog) for each record; raises ConfigError for framing/parse errors."""
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    from pytest_tfserving.tfrecord import read_records

    for index, raw in enumerate(read_records(path)):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(raw)
        except DecodeError as exc:
            raise ConfigError(
                f"{path}: record {index} ({len(raw)} bytes) is not a PredictionLog protobuf "
                f"({exc}). Write records with PredictionLog.SerializeToString(), e.g. via "
                "`python -m pytest_tfserving warmup make`."
            ) from None
        yield index, log


def write_prediction_logs(path: Path | str, logs: Sequence[Any]) -> int:
    """Write PredictionLog protos (any you built yourself) as a warmup file."""
    from pytest_tfserving.tfrecord import write_records

    return write_records(Path(path), (bytes(log.SerializeToString()) for log in logs))


def tensor_text(proto: Any) -> tuple[str, tuple[int, ...]]:
    """A TensorProto's dtype and shape as text ("int64[4,8]") and its shape."""
    from pytest_tfserving.tensors import dtype_name

    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    name = dtype_name(proto.dtype).removeprefix("DT_").lower()
    return f"{name}[{','.join(str(d) for d in shape)}]", shape


def example_count(model_input: Any) -> int:
    """How many tf.Examples a Classify/Regress/MultiInference ``Input`` holds."""
    which = model_input.WhichOneof("kind")
    if which == "example_list":
        return len(model_input.example_list.examples)
    if which == "example_list_with_context":
        return len(model_input.example_list_with_context.examples)
    return 0


def record_signatures(log: Any) -> list[str]:
    """The signatures a PredictionLog calls (empty for a log type warmup does not support)."""
    kind = log.WhichOneof("log_type")
    if kind == "multi_inference_log":
        return [t.model_spec.signature_name or DEFAULT_SIGNATURE
                for t in log.multi_inference_log.request.tasks]
    if kind in ("predict_log", "classify_log", "regress_log"):
        return [getattr(log, kind).request.model_spec.signature_name or DEFAULT_SIGNATURE]
    return []

