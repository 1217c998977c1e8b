"""The REST front end (TF Serving's HTTP API) on a stdlib ThreadingHTTPServer thread.

``GET /v1/models/<name>[/versions/N]`` status, ``GET .../metadata``,
``POST /v1/models/<name>[/versions/N]:predict`` with row (``instances``) or columnar
(``inputs``) bodies, ``POST ...:classify`` / ``...:regress`` with
``{"signature_name": ..., "context": {...}, "examples": [{...}, ...]}`` (tf.Examples as JSON, read
as TF Serving's json_tensor.cc reads them), and the Prometheus page when monitoring enables it.
Errors are ``{"error": "..."}`` with TF Serving's HTTP status for the gRPC code.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server import classify
from pytest_tfserving.bundled_server.convert import check_input_keys, output_keys
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.grpc_service import status_response
from pytest_tfserving.bundled_server.servable import Arrays, TensorInfo
from pytest_tfserving.bundled_server.state import STATE_NAMES
from pytest_tfserving.bundled_server.status import ServingError, invalid
from pytest_tfserving.model import CLASSIFY_METHOD, REGRESS_METHOD

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<sub>metadata))?(?::(?P<verb>predict|classify|regress))?$"
)


def _to_array(info: TensorInfo, value: Any) -> np.ndarray[Any, Any]:
    if info.numpy_dtype == np.dtype(object):
        def enc(v: Any) -> Any:
            if isinstance(v, dict) and "b64" in v:
                return base64.b64decode(v["b64"])
            if isinstance(v, list):
                return [enc(x) for x in v]
            return str(v).encode("utf-8")

        encoded = enc(value)
        arr = np.empty(np.shape(encoded), dtype=object)
        arr[...] = encoded
        return arr
    try:
        return np.asarray(value, dtype=info.numpy_dtype)
    except (TypeError, ValueError, OverflowError) as exc:  # Overflow: 10**40 for an int64
        raise invalid(f"input '{info.key}': cannot convert JSON value to "
                      f"{info.numpy_dtype}: {exc}") from None


def _jsonable(arr: np.ndarray[Any, Any]) -> Any:
    if arr.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace")
                            if isinstance(b, bytes) else b, otypes=[object])(arr).tolist()
    return arr.tolist()


def parse_predict_body(body: dict[str, Any], inputs: dict[str, TensorInfo]) -> tuple[Arrays,
                                                                                       bool]:
    """Arrays from a row or columnar body; returns (arrays, row_format)."""
    if ("instances" in body) == ("inputs" in body):
        raise invalid("JSON body must have exactly one of 'instances' (row format) or 'inputs' "
                      "(columnar format)")
    single = next(iter(inputs)) if len(inputs) == 1 else None
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise invalid("'instances' must be a non-empty list")
        if all(isinstance(r, dict) and not ("b64" in r and len(r) == 1) for r in rows):
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise invalid("every instance must have the same named inputs")
            check_input_keys(inputs, keys)
            return {k: _to_array(inputs[k], [r[k] for r in rows]) for k in keys}, True
        if single is None:
            raise invalid(f"instances must be objects naming the inputs {sorted(inputs)}")
        return {single: _to_array(inputs[single], rows)}, True
    cols = body["inputs"]
    if isinstance(cols, dict) and not ("b64" in cols and len(cols) == 1):
        check_input_keys(inputs, cols.keys())
        return {k: _to_array(inputs[k], v) for k, v in cols.items()}, False
    if single is None:
        raise invalid(f"'inputs' must be an object naming the inputs {sorted(inputs)}")
    return {single: _to_array(inputs[single], cols)}, False


def format_predictions(outputs: Arrays, keys: tuple[str, ...], row: bool) -> dict[str, Any]:
    if row:
        if len(keys) == 1:
            return {"predictions": _jsonable(outputs[keys[0]])}
        n = len(next(iter(outputs.values())))
        cols = {k: _jsonable(outputs[k]) for k in keys}
        return {"predictions": [{k: cols[k][i] for k in keys} for i in range(n)]}
    if len(keys) == 1:
        return {"outputs": _jsonable(outputs[keys[0]])}
    return {"outputs": {k: _jsonable(outputs[k]) for k in keys}}


# -- :classify / :regress -------------------------------------------------------------------
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_JSON_TYPE = {type(None): "Null", bool: "Boolean", dict: "Object", list: "Array", str: "String",
              int: "Number", float: "Number"}


def _show(value: Any, limit: int = 200) -> str:
    """``value`` as JSON for an error message, cut at ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _kind_error(name: str, kind: str | None, value: Any) -> ServingError:
    return invalid(f"Unexpected element type in feature: {name} expecting type: "
                   f"{kind or 'UNKNOWN'}; got {_show(value)}")


def _element(name: str, value: Any) -> tuple[str, Any]:
    """One JSON element of feature ``name`` as (list kind, value for that list).

    TF Serving's rules: a JSON string -> bytes_list (UTF-8), ``{"b64": "..."}`` -> bytes_list
    (decoded), a number written with a fraction or exponent -> float_list, an integer or a
    boolean -> int64_list; null, nested lists and other objects are errors.
    """
    item: Any
    if isinstance(value, bool):
        want, item = "int64", int(value)
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            want, item = "int64", value
        elif 0 < value < (1 << 64):
            raise invalid(f"Feature: {name} has uint64_t element {value}. Only int64_t is "
                          "supported.")
        else:  # beyond 64 bits a JSON parser reads a double
            want, item = "float", float(value)
    elif isinstance(value, float):
        want, item = "float", value
    elif isinstance(value, str):
        want, item = "bytes", value.encode("utf-8")
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        want, text = "bytes", value["b64"]
        try:
            item = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise invalid(f"Feature: {name}: unable to base64 decode {_show(value)}") from None
    else:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: "
                      f"{_JSON_TYPE.get(type(value), type(value).__name__)}; got {_show(value)}"
                      + (" (a feature's value is a scalar or a flat list)"
                         if isinstance(value, list) else ""))
    return want, item


def json_example(obj: Any, where: str) -> Any:
    """A tf.train.Example from one JSON object of features (``where`` names it in errors)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise invalid(f"Example must be JSON object but got JSON "
                      f"{_JSON_TYPE.get(type(obj), type(obj).__name__)} at {where}: {_show(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        values: list[Any] = []
        kind: str | None = None  # one feature holds one kind
        for value in content if isinstance(content, list) else [content]:
            want, item = _element(name, value)
            if kind is not None and want != kind:
                raise _kind_error(name, kind, value)
            kind = want
            values.append(item)
        feature = example.features.feature[name]  # an empty list leaves the kind unset
        if kind == "int64":
            feature.int64_list.value.extend(values)
        elif kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "bytes":
            feature.bytes_list.value.extend(values)
    return example


def fill_examples_request(body: Any, request: Any, verb: str) -> None:
    """Fill a Classification/RegressionRequest's signature and Input from a REST body."""
    if not isinstance(body, dict):
        raise invalid(f"JSON Value: {_show(body)} Is not object")
    if "signature_name" in body:
        if not isinstance(body["signature_name"], str):
            raise invalid(f"JSON Value: {_show(body['signature_name'])} not formatted correctly."
                          " 'signature_name' key must be a string value.")
        request.model_spec.signature_name = body["signature_name"]
    inp = request.input
    has_context = "context" in body
    if has_context:
        inp.example_list_with_context.context.CopyFrom(json_example(body["context"], "'context'"))
    if "examples" not in body:
        raise invalid(f"JSON Value: {_show(body)} When method is {verb}, key 'examples' is "
                      "expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {_show(examples)} Expecting 'examples' value to be an "
                      "list/array")
    if not examples:
        raise invalid("JSON Value: [] 'examples' value is an empty array")
    target = (inp.example_list_with_context.examples if has_context
              else inp.example_list.examples)
    for i, obj in enumerate(examples):
        target.add().CopyFrom(json_example(obj, f"'examples'[{i}]"))


def _decimal(value: float) -> float:
    """A float32 result as its shortest round-trip decimal (TF Serving's WriteDecimal: 0.2, not
    0.20000000298023224)."""
    return float(str(np.float32(value)))


def classification_json(result: Any) -> dict[str, Any]:
    return {"results": [[[c.label, _decimal(c.score)] for c in row.classes]
                        for row in result.classifications]}


def regression_json(result: Any) -> dict[str, Any]:
    return {"results": [_decimal(r.value) for r in result.regressions]}


CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),  # http_rest_api_util.cc AddCORSHeaders
                ("Access-Control-Allow-Methods", "POST, GET"),
                ("Access-Control-Allow-Headers", "Content-Type"))


class RestApi:
    def __init__(self, core: Core, metrics_path: str | None, timeout_s: float,
                 threads: int = 64, cors: bool = False) -> None:
        self.core = core
        self.metrics_path = metrics_path
        self.timeout_s = timeout_s
        self.cors = cors
        self.slots = threading.BoundedSemaphore(max(1, threads))  # --rest_api_num_threads

    def preflight(self, origin: str) -> tuple[int, str, str]:
        """OPTIONS: TF Serving answers OK when the Origin header is an http(s) URL."""
        if re.search(r"https?://", origin):
            return 200, "application/json", ""
        return 400, "application/json", json.dumps(
            {"error": "Origin header is missing in CORS preflight"})

    def _spec(self, m: re.Match[str]) -> Any:
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=m.group("name"))
        if m.group("version"):
            spec.version.value = int(m.group("version"))
        if m.group("label"):
            spec.version_label = m.group("label")
        return spec

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        """(http status, content type, body)."""
        path = path.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, "text/plain; version=0.0.4", self.core.metrics.render()
        m = _PATH.match(path)
        if not m or (method == "GET") == bool(m.group("verb")):
            return 404 if not m else 400, "application/json", json.dumps(
                {"error": f"Malformed request: {method} {path}"})
        t0 = time.monotonic()
        verb = m.group("verb") or ("metadata" if m.group("sub") else "status")
        try:
            payload = self._dispatch(verb, m, body)
        except ServingError as exc:
            if verb in ("predict", "classify", "regress"):
                self.core.metrics.record_request(m.group("name"), verb, "REST", exc.code_name, 0)
            return exc.http_status, "application/json", json.dumps({"error": exc.message})
        if verb in ("predict", "classify", "regress"):
            self.core.metrics.record_request(m.group("name"), verb, "REST", "OK",
                                             (time.monotonic() - t0) * 1e6)
        return 200, "application/json", json.dumps(payload)

    def _dispatch(self, verb: str, m: re.Match[str], body: bytes) -> Any:

        spec = self._spec(m)
        if verb == "status":
            resp = status_response(self.core, spec)
            out = []
            for mvs in resp.model_version_status:
                code = ServingError(_code(mvs.status.error_code), "").code_name
                out.append({"version": str(mvs.version),
                            "state": STATE_NAMES.get(mvs.state, "UNKNOWN"),
                            "status": {"error_code": code,
                                       "error_message": mvs.status.error_message}})
            return {"model_version_status": out}
        if verb == "metadata":
            from tensorflow_serving.apis import get_model_metadata_pb2

            req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            req.model_spec.CopyFrom(spec)
            resp = self.core.metadata(req)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            resp.metadata["signature_def"].Unpack(sig_map)
            return {"model_spec": proto_json(resp.model_spec),
                    "metadata": {"signature_def": proto_json(sig_map)}}
        if not body.strip():
            raise invalid("JSON Parse error: The document is empty")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested too deep
            raise invalid(f"JSON Parse error: {exc}") from None
        if verb in ("classify", "regress"):
            return self._classify_regress(verb, spec, data)
        if not isinstance(data, dict):
            raise invalid("JSON body must be an object")
        servable = self.core.resolve(spec)
        runner = self.core.signature(servable, data.get("signature_name", ""))
        arrays, row = parse_predict_body(data, runner.inputs)
        keys = output_keys(runner, data.get("output_filter", []))
        outputs = self.core.submit(runner, arrays, keys).result(self.timeout_s)
        return format_predictions(outputs, keys, row)

    def _classify_regress(self, verb: str, spec: Any, data: Any) -> dict[str, Any]:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        request: Any = (classification_pb2.ClassificationRequest() if verb == "classify"
                        else regression_pb2.RegressionRequest())
        request.model_spec.CopyFrom(spec)
        fill_examples_request(data, request, verb)
        method = CLASSIFY_METHOD if verb == "classify" else REGRESS_METHOD
        api = verb.capitalize()
        servable, runner, key, examples = classify.prepare(self.core, request, method)
        outputs = classify.submit(self.core, runner, key, examples, api).result(self.timeout_s)
        if verb == "classify":
            return classification_json(
                classify.classification(servable, runner, outputs, len(examples)).result)
        return regression_json(
            classify.regression(servable, runner, outputs, len(examples)).result)


def proto_json(message: Any) -> Any:
    """A message as TF Serving's REST API prints it: proto field names, defaults included."""
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf < 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)


def _code(value: int) -> Any:
    import grpc

    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


class _Handler(BaseHTTPRequestHandler):
    api: RestApi
    protocol_version = "HTTP/1.1"

    def _reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            with self.api.slots:
                if method == "OPTIONS":
                    status, ctype, text = self.api.preflight(self.headers.get("Origin") or "")
                else:
                    status, ctype, text = self.api.handle(method, self.path, body)
        except Exception as exc:  # noqa: BLE001 - never kill the server thread
            status, ctype, text = 500, "application/json", json.dumps(
                {"error": f"{type(exc).__name__}: {exc}"})
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.api.cors:
            for name, value in CORS_HEADERS:
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._reply("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._reply("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._reply("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


class RestServer:
    def __init__(self, api: RestApi, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"api": api})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:  # name the address: the launcher retries on bind failures
            raise OSError(exc.errno, f"Failed to bind REST to {host}:{port}: {exc.strerror}"
                          ) from None
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
