"""Request sources for load runs: .npz rows, warmup records, user requests, synthesized inputs;
each becomes a serialized PredictRequest for the served model name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load import payloads
from pytest_tfserving.model import inspect_model

ROOT = Path(__file__).resolve().parents[1]


def decode(raw: bytes):  # noqa: ANN201 - a PredictRequest
    from tensorflow_serving.apis import predict_pb2

    return predict_pb2.PredictRequest.FromString(raw)


def test_npz_rows_become_requests_of_the_batch_size(digits: Path) -> None:
    model = inspect_model(digits)
    sig = model.signature("serving_default")
    out = payloads.from_npz(ROOT / "fixtures" / "data" / "digits_eval.npz", "served_name", sig, 4)
    assert 1 < len(out) <= payloads.MAX_REQUESTS
    request = decode(out[0])
    assert request.model_spec.name == "served_name"
    assert request.model_spec.signature_name == "serving_default"
    assert [d.size for d in request.inputs["pixels"].tensor_shape.dim] == [4, 64]
    assert set(request.inputs) == {"pixels"}  # the labels array is not an input


def test_warmup_records_recut_to_batch_and_retargeted(ctr_direct: Path) -> None:
    model = inspect_model(ctr_direct)
    out, source = payloads.for_model(model, "prod_ctr", "serving_default", batch_size=1)
    assert source.startswith("warmup records (") and "batch 1" in source
    request = decode(out[0])
    assert request.model_spec.name == "prod_ctr"
    assert all(d.size == 1 for k in request.inputs
               for d in request.inputs[k].tensor_shape.dim[:1])


def test_string_example_signature_is_synthesized_as_tf_examples(ctr_strings: Path) -> None:
    model = inspect_model(ctr_strings)
    out, source = payloads.for_model(model, "ctr_strings", "serving_default", batch_size=3)
    assert source == "synthesized from the signature (32 requests of batch 3)"
    from tensorflow.core.example import example_pb2

    request = decode(out[0])
    values = request.inputs["examples"].string_val
    assert len(values) == 3
    example = example_pb2.Example.FromString(values[0])
    assert "user_id" in example.features.feature


def test_user_requests_and_bad_items() -> None:
    rows = [{"x": np.arange(8, dtype=np.float32).reshape(2, 4)}]
    out = payloads.from_inputs("m", "serving_default", rows, batch_size=1)
    assert len(out) == 2
    assert [d.size for d in decode(out[1]).inputs["x"].tensor_shape.dim] == [1, 4]
    with pytest.raises(ConfigError, match=r"tfs_requests item of type int is not a request"):
        payloads.from_inputs("m", "serving_default", [3])
