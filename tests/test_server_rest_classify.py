"""REST :classify and :regress on the bundled server (real subprocess, digits model)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_helpers import ServerProcess

from pytest_tfserving.bundled_server.rest_examples import json_example
from pytest_tfserving.bundled_server.status import ServingError


@pytest.fixture(scope="module")
def server(digits: Path) -> Iterator[ServerProcess]:
    with ServerProcess(digits, model_name="digits") as srv:
        srv.wait_available()
        yield srv


def post(srv: ServerProcess, path: str, body: Any) -> tuple[int, Any, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{srv.rest_url}{path}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw = r.read().decode()
            return r.status, json.loads(raw), raw
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode()
        return exc.code, json.loads(raw), raw


def pixels(n: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


def serialized(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.array([json_example({"pixels": r.tolist()}, "test").SerializeToString()
                     for r in rows], dtype=object)


# -- JSON feature encoding (pure) -------------------------------------------------------------
def test_feature_value_encoding_rules() -> None:
    ex = json_example({
        "i": 3, "il": [1, -2, 9_223_372_036_854_775_807], "b": True, "bl": [True, False],
        "f": 0.5, "fl": [1.0, 2.5e3], "s": "héllo", "sl": ["a", "b"],
        "raw": {"b64": base64.b64encode(b"\x00\xff").decode()},
        "rawl": [{"b64": "YWI"}, "c"],  # unpadded base64 is accepted; mixes with strings
        "empty": [],
    }, "test")
    f = ex.features.feature
    assert list(f["i"].int64_list.value) == [3]
    assert list(f["il"].int64_list.value) == [1, -2, 9_223_372_036_854_775_807]
    assert list(f["b"].int64_list.value) == [1]
    assert list(f["bl"].int64_list.value) == [1, 0]
    assert list(f["f"].float_list.value) == [0.5]
    assert list(f["fl"].float_list.value) == [1.0, 2500.0]
    assert list(f["s"].bytes_list.value) == ["héllo".encode()]
    assert list(f["sl"].bytes_list.value) == [b"a", b"b"]
    assert list(f["raw"].bytes_list.value) == [b"\x00\xff"]
    assert list(f["rawl"].bytes_list.value) == [b"ab", b"c"]
    assert f["empty"].WhichOneof("kind") is None


@pytest.mark.parametrize(("obj", "parts"), [
    ({"pixels": [1, 0.5]}, ["feature: pixels", "expecting type: int64", "got 0.5"]),
    ({"pixels": [0.5, "x"]}, ["feature: pixels", "expecting type: float", 'got "x"']),
    ({"pixels": None}, ["Feature: pixels", "unexpected JSON type: Null", "got null"]),
    ({"pixels": [[1.0, 2.0]]}, ["Feature: pixels", "JSON type: Array", "got [1.0, 2.0]",
                                "flat list"]),
    ({"pixels": {"x": 1}}, ["Feature: pixels", "JSON type: Object", 'got {"x": 1}']),
    ({"k": {"b64": "!!!"}}, ["Feature: k", "base64", '"!!!"']),
    ({"k": 18_446_744_073_709_551_615}, ["Feature: k", "uint64_t element 18446744073709551615",
                                         "Only int64_t"]),
    ([1, 2], ["Example must be JSON object", "Array", "at test", "[1, 2]"]),
])
def test_bad_feature_values_name_the_value(obj: Any, parts: list[str]) -> None:
    with pytest.raises(ServingError) as info:
        json_example(obj, "test")
    assert info.value.http_status == 400
    for part in parts:
        assert part in info.value.message


# -- against the server -----------------------------------------------------------------------
def test_classify_matches_in_process(server: ServerProcess, digits_fns: Any) -> None:
    rows = pixels(4, seed=1)
    code, body, raw = post(server, "/v1/models/digits:classify", {
        "signature_name": "classify", "examples": [{"pixels": r.tolist()} for r in rows]})
    assert code == 200, body
    want = digits_fns["classify"](inputs=serialized(rows))
    labels = want["classes"].numpy()
    scores = want["scores"].numpy()
    results = body["results"]
    assert len(results) == 4
    for i, row in enumerate(results):
        assert [label for label, _ in row] == [b.decode() for b in labels[i]]
        np.testing.assert_allclose([s for _, s in row], scores[i], rtol=1e-5, atol=1e-7)
        # each score is written as its shortest float32 decimal, without double noise digits
        assert all(repr(s) == str(np.float32(s)) for _, s in row)
    assert "000000" not in raw.replace("e-", "")


def test_regress_with_version_and_context(server: ServerProcess, digits_fns: Any) -> None:
    rows = pixels(3, seed=2)
    want = digits_fns["regress"](inputs=serialized(rows))["outputs"].numpy()
    code, body, _ = post(server, "/v1/models/digits/versions/1:regress", {
        "signature_name": "regress", "examples": [{"pixels": r.tolist()} for r in rows]})
    assert code == 200 and body == {"results": [float(v) for v in want]}
    # the context's features go into every example
    code, body, _ = post(server, "/v1/models/digits:regress", {
        "signature_name": "regress", "context": {"pixels": rows[0].tolist()},
        "examples": [{}, {}]})
    assert code == 200 and body == {"results": [float(want[0])] * 2}


def test_request_errors_are_400_json_naming_the_value(server: ServerProcess) -> None:
    url = "/v1/models/digits:classify"
    good = [{"pixels": pixels(1, 3)[0].tolist()}]
    cases: list[tuple[Any, int, list[str]]] = [
        (b"", 400, ["JSON Parse error: The document is empty"]),
        (b"{nope", 400, ["JSON Parse error"]),
        ([good], 400, ["Is not object"]),
        ({"signature_name": 7, "examples": good}, 400,
         ["JSON Value: 7", "'signature_name' key must be a string value"]),
        ({"signature_name": "classify"}, 400,
         ["When method is classify, key 'examples' is expected and was not found"]),
        ({"signature_name": "classify", "examples": {"pixels": [1.0]}}, 400,
         ['{"pixels": [1.0]}', "Expecting 'examples' value to be an list/array"]),
        ({"signature_name": "classify", "examples": []}, 400,
         ["'examples' value is an empty array"]),
        ({"signature_name": "classify", "examples": good + ["x"]}, 400,
         ["Example must be JSON object but got JSON String at 'examples'[1]: \"x\""]),
        ({"signature_name": "classify", "context": 3, "examples": good}, 400,
         ["Example must be JSON object", "'context'"]),
        ({"signature_name": "classify", "examples": [{"pixels": [0.5, 1]}]}, 400,
         ["feature: pixels expecting type: float; got 1"]),
        ({"signature_name": "classify", "examples": [{"pixels": [0.5, None]}]}, 400,
         ["Feature: pixels has element with unexpected JSON type: Null; got null"]),
        # valid JSON, but the model parses pixels as floats: the model's error, as INVALID_ARGUMENT
        ({"signature_name": "classify", "examples": [{"pixels": list(range(64))}]}, 400,
         ["Key: pixels", "Data types don't match. Data type: int64 but expected type: float"]),
        # serving_default is digits' predict signature
        ({"examples": good}, 400, ["'serving_default'", "at least one of \"classes\""]),
        ({"signature_name": "regress", "examples": good}, 400,
         ["Expected classification signature outputs to contain at least one of", "'regress'"]),
        ({"signature_name": "nope", "examples": good}, 400,
         ['Serving signature key "nope" not found.']),
    ]
    for body, status, parts in cases:
        code, got, _ = post(server, url, body)
        assert code == status and set(got) == {"error"}, (body, code, got)
        for part in parts:
            assert part in got["error"], (body, got)
    code, got, _ = post(server, "/v1/models/other:regress",
                        {"signature_name": "regress", "examples": good})
    assert code == 404 and got == {"error": "Servable not found for request: Latest(other)"}
    code, got, _ = post(server, "/v1/models/digits:regress",
                        {"signature_name": "regress", "examples": [{"pixels": [0.5, "x"]}]})
    assert code == 400 and "When method" not in got["error"] and 'got "x"' in got["error"]
    # and the server still answers
    code, got, _ = post(server, url, {"signature_name": "classify", "examples": good})
    assert code == 200 and len(got["results"]) == 1
