"""The REST front end (TF Serving's HTTP API) on a stdlib ThreadingHTTPServer thread.

``GET /v1/models/<name>[/versions/N]`` status, ``GET .../metadata``,
``POST /v1/models/<name>[/versions/N]:predict`` with row (``instances``) or columnar
(``inputs``) bodies, ``POST ...:classify`` / ``...:regress`` with
``{"signature_name": ..., "context": {...}, "examples": [{...}, ...]}`` (in
:mod:`~pytest_tfserving.bundled_server.rest_examples`), and the Prometheus page when monitoring
enables it.
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

from pytest_tfserving.bundled_server.convert import check_input_keys, output_keys
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.grpc_service import status_response
from pytest_tfserving.bundled_server.rest_examples import answer_examples
from pytest_tfserving.bundled_server.servable import Arrays, TensorInfo
from pytest_tfserving.bundled_server.state import STATE_NAMES
from pytest_tfserving.bundled_server.status import ServingError, invalid

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
            return answer_examples(self.core, verb, spec, data, self.timeout_s)
        if not isinstance(data, dict):
            raise invalid("JSON body must be an object")
        with self.core.held(spec) as servable:
            runner = self.core.signature(servable, data.get("signature_name", ""))
            arrays, row = parse_predict_body(data, runner.inputs)
            keys = output_keys(runner, data.get("output_filter", []))
            outputs = self.core.submit(runner, arrays, keys).result(self.timeout_s)
        return format_predictions(outputs, keys, row)



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
