"""Malformed PredictRequests (gRPC) and :predict bodies (REST) against a real bundled server.

Hypothesis draws one fault per request: a wrong dtype, shape or rank; ``tensor_content`` that
does not fit the shape; missing or unknown inputs; huge or negative dims; a bad dtype enum;
inputs of different batch sizes; an empty or unknown model name; an unknown signature or output.
Each answer must carry TF Serving's code for that fault (INVALID_ARGUMENT for what
``GetInputValues``/``Tensor::FromProto``/the graph refuse, NOT_FOUND for an unknown model,
FAILED_PRECONDITION for an unknown signature), never UNKNOWN or INTERNAL from a Python exception,
and afterwards the same process answers a valid request and has not grown by hundreds of MB.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import ServerProcess, ctr_inputs, predict_request

from pytest_tfserving.tensors import DT_FLOAT, DT_INT64, DT_STRING

INVALID = grpc.StatusCode.INVALID_ARGUMENT
OK = grpc.StatusCode.OK
RSS_GROWTH_LIMIT = 300 << 20  # bytes: a leak per request, or a huge-dims allocation, shows


IMAGE_MODELS = ("img", "img_lite")  # image_cnn as a SavedModel, and converted to TFLite


def _tflite_copy(image_cnn: Path, base: Path) -> Path:
    """image_cnn's version 1 plus its TFLite conversion (served by LiteRT with
    --prefer_tflite_model; the SavedModels beside it have no model.tflite and stay TF)."""
    import tensorflow as tf

    shutil.copytree(image_cnn / "1", base / "1")
    model = tf.lite.TFLiteConverter.from_saved_model(str(image_cnn / "1")).convert()
    (base / "1" / "model.tflite").write_bytes(model)
    return base


@pytest.fixture(scope="module")
def server(ctr_direct: Path, models_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("malformed")
    bases = {"ctr": ctr_direct, "img": models_dir / "image_cnn",
             "img_lite": _tflite_copy(models_dir / "image_cnn", tmp / "img_lite")}
    (tmp / "models.config").write_text("model_config_list {\n" + "".join(
        f"  config {{ name: '{name}' base_path: '{base}' model_platform: 'tensorflow' }}\n"
        for name, base in bases.items()) + "}\n")
    with ServerProcess(None, f"--model_config_file={tmp / 'models.config'}",
                       "--prefer_tflite_model=true", model_name="ctr") as srv:
        for name in bases:
            srv.wait_for(f"{name} AVAILABLE",
                         lambda n=name: srv.statuses(n).get(1, ("",))[0] == "AVAILABLE")
        yield srv


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@dataclass(frozen=True)
class Case:
    fault: str
    request: Any
    codes: frozenset[grpc.StatusCode]  # what TF Serving answers for this fault


def _set_shape(proto: Any, shape: list[int]) -> None:
    del proto.tensor_shape.dim[:]
    for d in shape:
        proto.tensor_shape.dim.add().size = d


@st.composite
def ctr_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 6))
    inputs = ctr_inputs(n, seed=n)
    key = draw(st.sampled_from(sorted(inputs)))
    fault = draw(st.sampled_from([
        "dtype", "content_size", "missing", "extra", "huge", "negative", "bad_enum",
        "batch_mismatch", "rank", "few_values", "model_name", "signature", "output"]))
    codes = frozenset({INVALID})
    if fault == "dtype":
        other = draw(st.sampled_from(["<f8", "<i4", "<f2", "u1", "?", "<f4", "<i8", "S"]))
        if np.dtype(other) == inputs[key].dtype:
            other = "S"
        inputs[key] = inputs[key].astype(other)
    elif fault == "missing":
        drop = draw(st.lists(st.sampled_from(sorted(inputs)), min_size=1, unique=True))
        inputs = {k: v for k, v in inputs.items() if k not in drop}
    elif fault == "extra":
        inputs[draw(st.sampled_from(["bogus", "user", "dense_2", ""]))] = np.zeros(n, "i8")
    elif fault == "batch_mismatch":
        inputs[key] = ctr_inputs(n + draw(st.integers(1, 4)))[key]
    elif fault == "rank":  # TF Serving checks no shapes: the graph takes it or refuses it
        inputs[key] = inputs[key].reshape(draw(st.sampled_from([(1, -1), (-1, 1), (-1,)])))
        codes = frozenset({INVALID, OK})
    request = predict_request("ctr", inputs)
    proto = request.inputs[key] if key in request.inputs else None
    if proto is not None:
        _break_tensor(draw, fault, proto)
    if fault == "few_values":  # FromProto pads with the last value (or zeros): TF accepts it
        codes = frozenset({OK})
    elif fault == "model_name":
        request.model_spec.name = draw(st.sampled_from(["", "nosuch"]))
        codes = frozenset({INVALID if not request.model_spec.name else
                           grpc.StatusCode.NOT_FOUND})
    elif fault == "signature":
        request.model_spec.signature_name = draw(st.sampled_from(["nope", "__saved_model_init_op"]))
        codes = frozenset({grpc.StatusCode.FAILED_PRECONDITION})
    elif fault == "output":
        request.output_filter.extend(draw(st.sampled_from([["nope"], ["probability"] * 2])))
    return Case(fault, request, codes)


def _break_tensor(draw: st.DrawFn, fault: str, proto: Any) -> None:
    """Damage one input's TensorProto in place as ``fault`` says (other faults: no change)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if fault == "content_size" and proto.dtype != DT_STRING:
        delta = draw(st.sampled_from([-1, 1, -len(proto.tensor_content) + 1, 7]))
        proto.tensor_content = b"\x01" * (len(proto.tensor_content) + delta)
    elif fault == "huge":
        _set_shape(proto, draw(st.sampled_from(
            [[2**40, 1], [2**31, 2**31], [2**62] + shape[1:], [2**63 - 1, 2], [2**33, 8]])))
        if draw(st.booleans()):  # typed values (splat) instead of raw content
            proto.ClearField("tensor_content")
            proto.float_val.append(1.0)
            proto.int64_val.append(1)
    elif fault == "negative":
        _set_shape(proto, [draw(st.integers(-(2**40), -1))] + shape[1:])
    elif fault == "bad_enum":
        proto.dtype = draw(st.sampled_from([0, 20, 21, 99, 14, 101]))
    elif fault == "few_values" and proto.dtype in (DT_FLOAT, DT_INT64):
        values = np.frombuffer(proto.tensor_content, DT_NUMPY[proto.dtype])
        proto.ClearField("tensor_content")
        field = proto.float_val if proto.dtype == DT_FLOAT else proto.int64_val
        field.extend(values[:draw(st.integers(0, values.size))].tolist())


DT_NUMPY = {DT_FLOAT: np.dtype("<f4"), DT_INT64: np.dtype("<i8")}


@st.composite
def image_cases(draw: st.DrawFn) -> Case:
    shape = draw(st.sampled_from([[1, 32, 32, 3], [2, 16, 16, 3], [1, 32, 32, 1], [1, 32, 32],
                                  [3072], [1, 0, 32, 3]]))
    image = np.ones(shape, np.float32)
    codes = frozenset({INVALID, OK} if shape != [1, 32, 32, 3] else {OK})
    request = predict_request(draw(st.sampled_from(IMAGE_MODELS)), {"image": image})
    if draw(st.booleans()) and image.size:  # FromProto ignores the content of an empty shape
        request.inputs["image"].tensor_content += b"\x00" * draw(st.integers(1, 5))
        codes = frozenset({INVALID})
    return Case(request.model_spec.name, request, codes)


def _summary(case: Case) -> str:
    """The request without its tensor bytes (a failure message stays readable)."""
    request = type(case.request)()
    request.CopyFrom(case.request)
    for proto in request.inputs.values():
        proto.tensor_content = proto.tensor_content[:16]
    return str(request)


def _answer(srv: ServerProcess, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        srv.stub().Predict(request, timeout=20)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def test_malformed_predict_requests_get_tf_serving_codes(server: ServerProcess) -> None:
    valid = predict_request("ctr", ctr_inputs(3))
    assert server.stub().Predict(valid, timeout=20).outputs["probability"].tensor_shape.dim
    rss_before = rss_bytes(server.proc.pid)
    seen: dict[str, set[str]] = {}

    @settings(max_examples=90, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(ctr_cases(), image_cases()))
    def check(case: Case) -> None:
        code, message = _answer(server, case.request)
        seen.setdefault(case.fault, set()).add(code.name)
        assert code in case.codes, f"{case.fault}: {code.name} {message}\n{_summary(case)}"
        assert "Traceback" not in message and "Error: " not in message[:40], message

    started = time.monotonic()
    check()
    assert time.monotonic() - started < 90, "the malformed-request battery took too long"
    assert server.proc.poll() is None, server.log()[-3000:]
    assert server.stub().Predict(valid, timeout=20).outputs["probability"].tensor_shape.dim
    growth = rss_bytes(server.proc.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"server RSS grew {growth >> 20} MiB over the battery"
    assert {"huge", "content_size", "missing", "dtype", *IMAGE_MODELS} <= set(seen), seen
    assert "Internal error in" not in server.log()  # the gRPC front end's catch-all


def test_model_spec_faults_get_tf_serving_codes(server: ServerProcess) -> None:
    request = predict_request("nosuch", ctr_inputs(1))
    assert _answer(server, request) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nosuch)")
    request.ClearField("model_spec")  # TF Serving: no ModelSpec, or an empty name
    assert _answer(server, request) == (INVALID, "ModelSpec has no name specified.")
    request = predict_request("ctr", ctr_inputs(1))
    request.inputs["user_id"].tensor_shape.dim[0].size = 2**40
    code, message = _answer(server, request)
    assert code == INVALID and message.startswith("tensor parsing error: user_id"), message
    assert "[1099511627776]" in message and "limit" in message


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode())


REST_CASES = [
    ("not json", b'{"instances": [1, 2', 400),
    ("empty body", b"", 400),
    ("a list, not an object", b"[1, 2, 3]", 400),
    ("neither instances nor inputs", b'{"examples": []}', 400),
    ("both formats", b'{"instances": [{"user_id": 1}], "inputs": {"user_id": [1]}}', 400),
    ("string for int64", json.dumps({"inputs": {"user_id": ["x"], "ad_id": [1],
                                               "category_id": [1], "dense": [[0.0] * 8]}}), 400),
    ("missing input", json.dumps({"instances": [{"user_id": 1, "ad_id": 1,
                                                "category_id": 1}]}), 400),
    ("ragged rows", json.dumps({"inputs": {"user_id": [1, 2], "ad_id": [1, 2],
                                          "category_id": [1, 2], "dense": [[0.0] * 8, [0.0]]}}),
     400),
    ("deep nesting", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("huge number", json.dumps({"inputs": {"user_id": [10**40], "ad_id": [1],
                                          "category_id": [1], "dense": [[0.0] * 8]}}), 400),
]


@pytest.mark.parametrize(("what", "body", "status"), REST_CASES, ids=[c[0] for c in REST_CASES])
def test_malformed_rest_predict_bodies_get_400_error_json(
        server: ServerProcess, what: str, body: bytes | str, status: int) -> None:
    raw = body.encode() if isinstance(body, str) else body
    code, answer = _post(f"{server.rest_url}/v1/models/ctr:predict", raw)
    assert code == status, (what, answer)
    assert list(answer) == ["error"] and isinstance(answer["error"], str) and answer["error"]
    assert "Traceback" not in answer["error"]
    ok, good = _post(f"{server.rest_url}/v1/models/ctr:predict",
                     json.dumps({"instances": [{"user_id": 1, "ad_id": 2, "category_id": 3,
                                                "dense": [0.5] * 8}]}).encode())
    assert ok == 200 and len(good["predictions"]) == 1


def _proto(dtype: int, shape: list[int], **fields: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    _set_shape(proto, shape)
    return proto


def test_inputs_are_read_as_tensor_from_proto_reads_them() -> None:
    """TF's FromProto (measured with tf.io.parse_tensor): short typed fields repeat their last
    value, empty ones are zeros, long ones are cut; an empty shape ignores its content."""
    from pytest_tfserving.bundled_server.tensor_parse import parse_input

    np.testing.assert_array_equal(parse_input("x", _proto(DT_FLOAT, [2, 3], float_val=[1, 2])),
                                  [[1, 2, 2], [2, 2, 2]])
    np.testing.assert_array_equal(parse_input("x", _proto(DT_INT64, [3])), [0, 0, 0])
    np.testing.assert_array_equal(parse_input("x", _proto(DT_FLOAT, [1], float_val=[4, 5])), [4])
    assert list(parse_input("s", _proto(DT_STRING, [3], string_val=[b"a"]))) == [b"a"] * 3
    assert list(parse_input("s", _proto(DT_STRING, [2]))) == [b"", b""]
    assert parse_input("x", _proto(DT_FLOAT, [0, 4], tensor_content=b"\x00" * 5)).shape == (0, 4)


@pytest.mark.parametrize(("shape", "fields", "words"), [
    ([2**40, 1], {"float_val": [1.0]}, "over the 1073741824-byte limit"),
    ([2**40, 2**40], {}, "more than 2**63-1 elements"),
    ([-3, 2], {}, "negative dimension"),
    ([2], {"tensor_content": b"\x00" * 5}, "tensor_content has 5 bytes"),
    ([1] * 255, {}, "255 dimensions"),
])
def test_unreadable_inputs_are_refused_without_allocating(
        shape: list[int], fields: dict[str, Any], words: str) -> None:
    from pytest_tfserving.bundled_server.status import ServingError
    from pytest_tfserving.bundled_server.tensor_parse import parse_input

    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        parse_input("dense", _proto(DT_FLOAT, shape, **fields))
    assert info.value.code == INVALID
    assert info.value.message.startswith("tensor parsing error: dense (input 'dense': ")
    assert words in info.value.message
    assert time.monotonic() - started < 1.0
