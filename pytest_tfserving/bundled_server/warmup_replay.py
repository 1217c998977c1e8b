"""Warmup replay at load, as TF Serving's saved_model_warmup_util.cc does it.

``<version_dir>/assets.extra/tf_serving_warmup_requests`` is a TFRecord file of
``PredictionLog``. Each predict / classify / regress / multi_inference record is replayed
``num_request_iterations_for_warmup`` times through the live request path (batching included);
a record with no log type set is counted and skipped, as TF Serving does; ``session_run_log``
(UNIMPLEMENTED), a failing record or more than ``MAX_RECORDS`` (1000) records fails the load. The
log lines (no file; finished, with the record count) are TF Serving's, from
:mod:`pytest_tfserving.warmup_contract`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from pytest_tfserving.bundled_server import classify, multi_inference
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.logs import get_logger
from pytest_tfserving.bundled_server.servable import Servable
from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import WARMUP_RELATIVE_PATH
from pytest_tfserving.tfrecord import read_records
from pytest_tfserving.warmup_contract import MAX_RECORDS, finished_line, no_file_line


class WarmupError(Exception):
    """The warmup failed; the message is what GetModelStatus reports."""


def read_tfrecords(path: Path) -> Iterator[bytes]:
    """Records of a TFRecord file (length + masked crc32c framing), checked."""
    try:
        yield from read_records(path)
    except ConfigError as exc:
        raise WarmupError(f"{exc} Please verify your warmup data is in TFRecord format.") from None


def _replay_one(core: Core, servable: Servable, log: object, kind: str | None) -> None:
    if kind == "predict_log":
        core.predict_sync(log.predict_log.request, servable)  # type: ignore[attr-defined]
    elif kind == "classify_log":
        classify.classify_sync(core, log.classify_log.request, servable)  # type: ignore[attr-defined]
    elif kind == "regress_log":
        classify.regress_sync(core, log.regress_log.request, servable)  # type: ignore[attr-defined]
    elif kind == "multi_inference_log":
        multi_inference.multi_inference_sync(
            core, log.multi_inference_log.request, servable)  # type: ignore[attr-defined]
    elif kind is None:
        return  # no log_type set: TF Serving runs nothing for it and counts the record
    else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Unsupported log_type for warmup: {kind}")


def run_warmup(core: Core, servable: Servable, iterations: int) -> int | None:
    """Replay the warmup file if there is one; returns the record count (None: no file)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = servable.version_dir / WARMUP_RELATIVE_PATH
    log = get_logger()
    if not path.is_file():
        log.info("%s", no_file_line(path))
        return None
    log.info("Starting to read warmup data for model at %s with model-warmup-options "
             "num_request_iterations: %d", path, iterations)
    t0 = time.monotonic()
    count = 0
    status = "OK"
    try:
        for index, record in enumerate(read_tfrecords(path)):
            if index >= MAX_RECORDS:
                raise WarmupError(f"Number of warmup records exceeds the maximum "
                                  f"({MAX_RECORDS}) at {path}")
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception:  # noqa: BLE001 - protobuf DecodeError and friends
                raise WarmupError(f"Failed to parse warmup record {index} from {path}") from None
            kind = entry.WhichOneof("log_type")
            for _ in range(iterations):
                try:
                    _replay_one(core, servable, entry, kind)
                except ServingError as exc:
                    raise WarmupError(f"Warmup record {index} ({kind}) in {path} failed: "
                                      f"{exc.code_name}: {exc.message}") from None
            count += 1
    except WarmupError:
        status = "FAILED"
        raise
    finally:
        elapsed = int((time.monotonic() - t0) * 1e6)
        core.metrics.record_warmup(str(servable.version_dir), status, elapsed, count)
    log.info("%s", finished_line(path, count, elapsed))
    return count


def warmup_or_raise(core: Core, servable: Servable, iterations: int) -> None:
    """Warmup as part of a load: a failing warmup fails the load with its reason."""
    try:
        run_warmup(core, servable, iterations)
    except WarmupError as exc:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
