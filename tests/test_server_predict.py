"""The bundled server answering Predict / metadata / status / REST / metrics on ctr_direct."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from server_helpers import ServerProcess, ctr_inputs, metric_samples, predict_request

from pytest_tfserving.bundled_server.warmup_replay import read_tfrecords

MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


@pytest.fixture(scope="module")
def server(ctr_direct: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("srv")
    (tmp / "monitoring.txt").write_text(MONITORING)
    base = tmp / "ctr"
    shutil.copytree(ctr_direct, base)
    with ServerProcess(base, f"--monitoring_config_file={tmp / 'monitoring.txt'}",
                       "--num_request_iterations_for_warmup=2", model_name="ctr") as srv:
        srv.wait_available()
        yield srv


@pytest.fixture(scope="module")
def in_process(ctr_direct: Path) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(ctr_direct / "1")).signatures["serving_default"]


def test_predictions_equal_in_process_call(server: ServerProcess, in_process: Any) -> None:
    from pytest_tfserving.tensors import to_numpy

    for n in (1, 7, 32):
        inputs = ctr_inputs(n, seed=n)
        resp = server.stub().Predict(predict_request("ctr", inputs), timeout=10)
        assert resp.model_spec.name == "ctr" and resp.model_spec.version.value == 1
        assert resp.model_spec.signature_name == "serving_default"
        want = in_process(**inputs)["probability"].numpy()
        np.testing.assert_allclose(to_numpy(resp.outputs["probability"]), want, rtol=1e-6)


def test_warmup_log_line_counts_records(server: ServerProcess, ctr_direct: Path) -> None:
    n = sum(1 for _ in read_tfrecords(ctr_direct / "1/assets.extra/tf_serving_warmup_requests"))
    assert n > 0
    log = server.log()
    assert "Finished reading warmup data for model at " in log
    assert f". Number of warmup records read: {n}. Elapsed time (microseconds): " in log
    assert "Successfully loaded servable version {name: ctr version: 1}" in log
    assert f"Running gRPC ModelServer at 127.0.0.1:{server.port} ..." in log


def _code(srv: ServerProcess, req: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        srv.stub().Predict(req, timeout=10)
    return info.value.code(), info.value.details()


def test_bad_requests_get_tf_serving_codes(server: ServerProcess) -> None:
    good = ctr_inputs(2)
    missing = {k: v for k, v in good.items() if k != "dense"}
    code, msg = _code(server, predict_request("ctr", missing))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Missing but required: {dense}" in msg

    extra = dict(good, bogus=np.zeros(2, np.int64))
    code, msg = _code(server, predict_request("ctr", extra))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Sent extra: {bogus}" in msg

    wrong = dict(good, user_id=good["user_id"].astype(np.float32))
    code, msg = _code(server, predict_request("ctr", wrong))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'user_id'" in msg and "DT_FLOAT" in msg and "DT_INT64" in msg

    code, msg = _code(server, predict_request("ctr", good, signature="nope"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert msg == 'Serving signature key "nope" not found.'

    code, msg = _code(server, predict_request("other", good))
    assert code == grpc.StatusCode.NOT_FOUND
    assert msg == "Servable not found for request: Latest(other)"

    req = predict_request("ctr", good)
    req.model_spec.version.value = 7
    code, msg = _code(server, req)
    assert code == grpc.StatusCode.NOT_FOUND and "Specific(ctr, 7)" in msg

    req = predict_request("ctr", good)
    req.inputs["dense"].tensor_content = b"\x00" * 5
    code, msg = _code(server, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'dense'" in msg and "5 bytes" in msg

    code, msg = _code(server, predict_request("ctr", dict(good, dense=np.zeros((2, 3), "f4"))))
    # TF Serving checks no shapes itself: the graph's own error comes back, as INVALID_ARGUMENT
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Matrix size-incompatible" in msg

    code, msg = _code(server, predict_request("ctr", good, output_filter=("nope",)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in msg
    # the server still serves after all of that
    assert server.stub().Predict(predict_request("ctr", good), timeout=10).outputs


def test_output_filter_and_metadata(server: ServerProcess) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2

    resp = server.stub().Predict(predict_request("ctr", ctr_inputs(3),
                                                output_filter=("probability",)), timeout=10)
    assert list(resp.outputs) == ["probability"]
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "ctr"
    meta = server.stub().GetModelMetadata(req, timeout=10)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sig_map)
    sd = sig_map.signature_def["serving_default"]
    assert set(sd.inputs) == {"user_id", "ad_id", "category_id", "dense"}
    assert sd.method_name == "tensorflow/serving/predict"


def _get(url: str, body: bytes | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
            raw = r.read().decode()
            return r.status, (json.loads(raw) if raw.startswith("{") else raw)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode())


def test_rest_status_predict_and_errors(server: ServerProcess, in_process: Any) -> None:
    code, body = _get(f"{server.rest_url}/v1/models/ctr")
    assert code == 200 and body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                         "error_message": ""}}]}
    inputs = ctr_inputs(2, seed=5)
    want = in_process(**inputs)["probability"].numpy()
    rows = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(2)]
    code, body = _get(f"{server.rest_url}/v1/models/ctr:predict",
                      json.dumps({"instances": rows}).encode())
    assert code == 200
    np.testing.assert_allclose(np.array(body["predictions"]), want, rtol=1e-5)
    cols = {k: v.tolist() for k, v in inputs.items()}
    code, body = _get(f"{server.rest_url}/v1/models/ctr/versions/1:predict",
                      json.dumps({"inputs": cols}).encode())
    assert code == 200
    np.testing.assert_allclose(np.array(body["outputs"]), want, rtol=1e-5)
    code, body = _get(f"{server.rest_url}/v1/models/nope:predict",
                      json.dumps({"inputs": cols}).encode())
    assert code == 404 and "Servable not found for request: Latest(nope)" in body["error"]
    code, body = _get(f"{server.rest_url}/v1/models/ctr/metadata")
    assert code == 200 and "serving_default" in body["metadata"]["signature_def"]["signature_def"]


def test_prometheus_metrics_with_tf_serving_names(server: ServerProcess) -> None:
    server.stub().Predict(predict_request("ctr", ctr_inputs(1)), timeout=10)
    bad = ctr_inputs(1)
    del bad["dense"]  # counted under status INVALID_ARGUMENT, whatever ran before on this server
    with pytest.raises(grpc.RpcError):
        server.stub().Predict(predict_request("ctr", bad), timeout=10)
    _, text = _get(f"{server.rest_url}/monitoring/prometheus/metrics")
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    counts = metric_samples(text, ":tensorflow:serving:request_count")
    assert counts['{model_name="ctr",status="OK"}'] >= 1
    assert counts['{model_name="ctr",status="INVALID_ARGUMENT"}'] >= 1
    lat = metric_samples(text, ":tensorflow:serving:request_latency_count")
    assert lat['{model_name="ctr",API="Predict",entrypoint="GRPC"}'] >= 1
    assert ':tensorflow:serving:request_latency_bucket{model_name="ctr",API="Predict",' \
           'entrypoint="GRPC",le="10"}' in text
    warm = metric_samples(text, ":tensorflow:serving:model_warmup_records_read")
    assert list(warm.values())[0] > 0
