"""The bundled server's model management, as TF Serving's: version dirs as named, file-system
polling with the availability-preserving policy, ModelServerConfig (several models, version
policies, labels), config reload (file poll and RPC), and the start-up errors TF Serving gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_helpers import ROOT, ServerProcess, predict_request

pytestmark = pytest.mark.xdist_group("server_models")

FAST = ("--file_system_poll_wait_seconds=1", "--max_num_load_retries=0")


def _version(base: Path, name: str, source: Path) -> Path:
    target = base / name
    shutil.copytree(source / "1", target)
    return target


def _predict(srv: ServerProcess, model: str, **spec: Any) -> Any:
    req = predict_request(model, {"x": np.ones((2, 4), np.float32)})
    if "version" in spec:
        req.model_spec.version.value = spec["version"]
    if "label" in spec:
        req.model_spec.version_label = spec["label"]
    return srv.stub().Predict(req, timeout=10)


def _config(models: list[dict[str, Any]]) -> str:
    blocks = []
    for m in models:
        extra = m.get("extra", "")
        blocks.append(f'  config {{ name: "{m["name"]}" base_path: "{m["base"]}" '
                      f'model_platform: "tensorflow" {extra} }}')
    return "model_config_list {\n" + "\n".join(blocks) + "\n}\n"


def test_zero_padded_version_dir_is_served_as_its_number(tf1_linear: Path,
                                                         tmp_path: Path) -> None:
    _version(tmp_path, "00000123", tf1_linear)
    with ServerProcess(tmp_path, *FAST) as srv:
        srv.wait_available()
        assert srv.statuses() == {123: ("AVAILABLE", "")}
        response = _predict(srv, "m")
        assert response.model_spec.version.value == 123
        assert list(response.outputs["y"].tensor_shape.dim[i].size for i in range(2)) == [2, 2]
        assert len(response.outputs["y"].float_val) == 4, "typed fields, as TF Serving answers"
        assert "00000123" in srv.log()


def test_new_version_loads_then_old_unloads_and_removal_rolls_back(tf1_linear: Path,
                                                                   tmp_path: Path) -> None:
    _version(tmp_path, "1", tf1_linear)
    with ServerProcess(tmp_path, *FAST) as srv:
        srv.wait_available()
        staged = tmp_path.parent / f"{tmp_path.name}-staging"
        _version(staged, "2", tf1_linear)
        staged.joinpath("2").rename(tmp_path / "2")  # appears whole, as a deploy should do it
        srv.wait_for("version 2 serving and 1 unloaded",
                     lambda: srv.statuses() == {1: ("END", ""), 2: ("AVAILABLE", "")})
        assert _predict(srv, "m").model_spec.version.value == 2
        log = srv.log()
        assert log.index("Successfully loaded servable version {name: m version: 2}") < \
            log.index("Unloading servable version {name: m version: 1}")
        shutil.rmtree(tmp_path / "2")
        srv.wait_for("version 1 back", lambda: srv.statuses() == {1: ("AVAILABLE", ""),
                                                                  2: ("END", "")})
        assert _predict(srv, "m").model_spec.version.value == 1


def test_a_broken_new_version_leaves_the_old_one_serving(tf1_linear: Path,
                                                         tmp_path: Path) -> None:
    _version(tmp_path, "1", tf1_linear)
    with ServerProcess(tmp_path, "--file_system_poll_wait_seconds=1",
                       "--max_num_load_retries=1", "--load_retry_interval_micros=100000") as srv:
        srv.wait_available()
        broken = tmp_path / "2"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a protobuf")
        states = srv.wait_for("version 2 failed",
                              lambda: (s := srv.statuses()).get(2, ("",))[0] == "END" and s)
        assert states[1] == ("AVAILABLE", "")
        assert "saved_model.pb" in states[2][1]
        assert _predict(srv, "m").model_spec.version.value == 1
        assert "Retrying load on servable version {name: m version: 2} retry: 1" in srv.log()


def test_config_file_serves_models_with_policies_and_labels(tf1_linear: Path,
                                                            tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for v in ("1", "2", "3"):
        _version(a, v, tf1_linear)
    _version(b, "7", tf1_linear)
    config = tmp_path / "models.config"
    config.write_text(_config([
        {"name": "a", "base": a, "extra": "model_version_policy { specific { versions: 1 "
         "versions: 2 } } version_labels { key: 'stable' value: 1 } "
         "version_labels { key: 'canary' value: 2 }"},
        {"name": "b", "base": b, "extra": "model_version_policy { all {} }"},
    ]))
    with ServerProcess(None, f"--model_config_file={config}",
                       "--allow_version_labels_for_unavailable_models", *FAST) as srv:
        srv.wait_for("a 1,2 and b 7", lambda: srv.statuses("a") == {
            1: ("AVAILABLE", ""), 2: ("AVAILABLE", "")} and srv.statuses("b") == {
            7: ("AVAILABLE", "")})
        assert _predict(srv, "a").model_spec.version.value == 2
        assert _predict(srv, "a", label="stable").model_spec.version.value == 1
        assert _predict(srv, "a", label="canary").model_spec.version.value == 2
        assert _predict(srv, "b").model_spec.version.value == 7
        with pytest.raises(Exception) as info:
            _predict(srv, "a", version=3)
        assert "Servable not found for request: Specific(a, 3)" in str(info.value)
        with pytest.raises(Exception) as info:
            _predict(srv, "a", label="nope")
        assert "Unrecognized servable version label: nope" in str(info.value)
        url = f"{srv.rest_url}/v1/models/a/labels/stable:predict"
        body = json.dumps({"instances": [[1, 1, 1, 1]]}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
            assert len(json.load(r)["predictions"][0]) == 2
        with urllib.request.urlopen(f"{srv.rest_url}/v1/models/a/versions/2", timeout=10) as r:
            assert json.load(r)["model_version_status"][0]["state"] == "AVAILABLE"


def test_config_file_poll_adds_and_removes_models(tf1_linear: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _version(a, "1", tf1_linear)
    _version(b, "1", tf1_linear)
    config = tmp_path / "models.config"
    config.write_text(_config([{"name": "a", "base": a}]))
    with ServerProcess(None, f"--model_config_file={config}",
                       "--model_config_file_poll_wait_seconds=1", *FAST) as srv:
        srv.wait_for("a", lambda: srv.statuses("a") == {1: ("AVAILABLE", "")})
        config.write_text("this is not a config")
        time.sleep(2.5)
        assert srv.statuses("a") == {1: ("AVAILABLE", "")}, "a bad file keeps the old config"
        assert "Failed to read ModelServerConfig file" in srv.log()
        config.write_text(_config([{"name": "b", "base": b}]))
        srv.wait_for("b in, a out", lambda: srv.statuses("b") == {1: ("AVAILABLE", "")}
                     and srv.statuses("a") == {1: ("END", "")})
        assert _predict(srv, "b").model_spec.name == "b"


def test_reload_config_rpc_applies_a_new_config(tf1_linear: Path, tmp_path: Path) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    _version(tmp_path / "a", "1", tf1_linear)
    _version(tmp_path / "c", "5", tf1_linear)
    with ServerProcess(tmp_path / "a", *FAST, model_name="a") as srv:
        srv.wait_available()
        req = model_management_pb2.ReloadConfigRequest()
        cfg = req.config.model_config_list.config.add()
        cfg.name, cfg.base_path, cfg.model_platform = "c", str(tmp_path / "c"), "tensorflow"
        stub = model_service_pb2_grpc.ModelServiceStub(srv.channel())
        assert stub.HandleReloadConfigRequest(req, timeout=60).status.error_code == 0
        assert srv.statuses("c") == {5: ("AVAILABLE", "")}, "loaded before the answer"
        srv.wait_for("a removed", lambda: srv.statuses("a") == {1: ("END", "")})
        cfg.base_path = "relative/path"
        with pytest.raises(Exception) as info:
            stub.HandleReloadConfigRequest(req, timeout=10)
        assert "to have an absolute path or URI; got base_path()=relative/path" in str(info.value)


def _run_to_exit(*flags: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_tfserving.bundled_server", "--port=0",
                           f"--grpc_socket_path=/tmp/tfs-never-{time.monotonic_ns()}.sock", *flags],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_startup_errors_read_like_tf_servings(tf1_linear: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.config"
    bad.write_text("improperly formatted file")
    done = _run_to_exit(f"--model_config_file={bad}")
    assert done.returncode == 1
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in done.stderr
    assert str(bad) in done.stderr
    dup = tmp_path / "dup.config"
    dup.write_text(_config([{"name": "a", "base": tmp_path}, {"name": "a", "base": tmp_path}]))
    done = _run_to_exit(f"--model_config_file={dup}")
    assert "Illegal to list model a multiple times in config list" in done.stderr
    _version(tmp_path / "a", "1", tf1_linear)
    labelled = tmp_path / "labels.config"
    labelled.write_text(_config([{"name": "a", "base": tmp_path / "a",
                                  "extra": "version_labels { key: 'stable' value: 1 }"}]))
    done = _run_to_exit(f"--model_config_file={labelled}")
    assert done.returncode == 1
    assert ("Request to assign label to version 1 of model a, which is not currently available "
            "for inference") in done.stderr


@pytest.mark.parametrize("flags, needle, code", [
    (["--model_base_path=/m", "--use_alts_credentials"], "--use_alts_credentials cannot be", 2),
    (["--model_base_path=/m", "--batching_parameters_file=/b"], "without --enable_batching", 2),
    (["--model_base_path=/m", "--grpc_channel_arguments=novalue"], "is not key=value", 2),
    (["--version"], "TensorFlow ModelServer:", 0),
])
def test_flags_tf_serving_refuses_or_answers(flags: list[str], needle: str, code: int) -> None:
    done = _run_to_exit(*flags, timeout=30)
    assert done.returncode == code
    assert needle in done.stderr + done.stdout


def test_unix_socket_channel_args_health_and_ignored_flags(tf1_linear: Path,
                                                           tmp_path: Path) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    _version(tmp_path / "m", "1", tf1_linear)
    sock = tmp_path / "tfs.sock"
    with ServerProcess(tmp_path / "m", f"--grpc_socket_path={sock}", *FAST,
                       "--grpc_channel_arguments=grpc.max_connection_age_ms=60000,"
                       "grpc.lb_policy_name=grpclb",
                       "--enable_grpc_healthcheck_service", "--num_load_threads=4",
                       "--per_process_gpu_memory_fraction=0.5") as srv:
        srv.wait_available()
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            req = predict_request("m", {"x": np.ones((1, 4), np.float32)})
            assert stub.Predict(req, timeout=10).model_spec.version.value == 1
        check = srv.channel().unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=5) == b"\x08\x01"  # SERVING
        with pytest.raises(grpc.RpcError) as info:
            check(b"\x0a\x03foo", timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        log = srv.log()
        assert "--num_load_threads is accepted and has no effect" in log
        assert "--per_process_gpu_memory_fraction is accepted and has no effect" in log


def test_per_model_batching_parameters_replace_the_global_ones(tf1_linear: Path,
                                                               tmp_path: Path) -> None:
    version = _version(tmp_path / "m", "1", tf1_linear)
    (version / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }\n"
                                                   "batch_timeout_micros { value: 0 }\n")
    with ServerProcess(tmp_path / "m", *FAST, "--enable_batching",
                       "--enable_per_model_batching_parameters") as srv:
        srv.wait_available()
        req = predict_request("m", {"x": np.ones((3, 4), np.float32)})
        with pytest.raises(Exception) as info:
            srv.stub().Predict(req, timeout=10)
        assert "Task size 3 is larger than maximum input batch size 2" in str(info.value)
        req = predict_request("m", {"x": np.ones((2, 4), np.float32)})
        assert srv.stub().Predict(req, timeout=10).model_spec.version.value == 1
        assert "batches with" in srv.log() and "batching_params.pbtxt" in srv.log()


def test_method_name_check_tensor_content_and_cors(tf1_linear: Path, tmp_path: Path) -> None:
    from tensorflow_serving.apis import classification_pb2

    _version(tmp_path / "m", "1", tf1_linear)
    with ServerProcess(tmp_path / "m", *FAST, "--enable_signature_method_name_check",
                       "--enable_serialization_as_tensor_content",
                       "--rest_api_enable_cors_support") as srv:
        srv.wait_available()
        out = _predict(srv, "m").outputs["y"]
        assert len(out.tensor_content) == 2 * 2 * 4 and not out.float_val
        req = classification_pb2.ClassificationRequest()
        req.model_spec.name = "m"
        req.input.example_list.examples.add().features.feature["x"].float_list.value.extend([1])
        with pytest.raises(Exception) as info:
            srv.stub().Classify(req, timeout=10)
        assert ("Expected classification signature method_name to be "
                "tensorflow/serving/classify. Was: tensorflow/serving/predict") in str(info.value)
        with urllib.request.urlopen(f"{srv.rest_url}/v1/models/m", timeout=10) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        preflight = urllib.request.Request(f"{srv.rest_url}/v1/models/m:predict",
                                           method="OPTIONS",
                                           headers={"Origin": "https://app.example"})
        with urllib.request.urlopen(preflight, timeout=10) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Methods"] == "POST, GET"


def _signatureless_tflite(path: Path) -> None:
    """y = x / 2 + 2 as an old converter wrote it: no signature list, tensors named x and y."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 1], name="x")
        y = tf.identity(x * 0.5 + 2.0, name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            model = tf.compat.v1.lite.TFLiteConverter.from_session(session, [x], [y]).convert()
    path.mkdir(parents=True)
    (path / "model.tflite").write_bytes(model)


def test_tflite_model_without_signatures_serves_its_tensors(tmp_path: Path) -> None:
    _signatureless_tflite(tmp_path / "m" / "00000123")
    with ServerProcess(tmp_path / "m", *FAST, "--prefer_tflite_model=true") as srv:
        srv.wait_available()
        req = predict_request("m", {"x": np.array([2.0], np.float32)})
        response = srv.stub().Predict(req, timeout=10)
        assert list(response.outputs["y"].float_val) == [3.0]  # resized from [1, 1] to [1]
        assert response.model_spec.version.value == 123
        assert response.model_spec.signature_name == "serving_default"


def test_version_swap_under_load_answers_warm_and_fails_nothing(ctr_direct: Path,
                                                                tmp_path: Path) -> None:
    """A new version's first answers are warm after its warmup, and no request fails while the
    old version is unloaded (TF Serving's swap), under open-loop load. A whole-heap GC on every
    load and unload used to stall the process ~400 ms (v2's first answers 600-950 ms here); a
    request that resolved v1 just before its unload used to fail CANCELLED ("Session has been
    closed"), which the servable handles fixed."""
    from server_helpers import OpenLoop, ctr_inputs

    _version(tmp_path, "1", ctr_direct)
    with ServerProcess(tmp_path, *FAST) as srv:
        srv.wait_available()
        request = predict_request("m", ctr_inputs(1))
        with OpenLoop(srv, request, rate=100) as load:
            time.sleep(1.0)
            staged = tmp_path.parent / f"{tmp_path.name}-staging"
            _version(staged, "2", ctr_direct)
            staged.joinpath("2").rename(tmp_path / "2")
            srv.wait_for("version 2 serving and 1 unloaded",
                         lambda: srv.statuses() == {1: ("END", ""), 2: ("AVAILABLE", "")})
            time.sleep(1.0)
        assert load.errors() == [], "no request fails during the swap"
        first = load.version_answers(2)[:5]
        assert len(first) == 5 and load.version_answers(1), load.answers[-5:]
        assert sorted(first)[2] < 100.0, (
            f"v2's first answers took {[round(x) for x in first]} ms: warmup made them warm, so "
            "a stall is the server's own (GC, locks) while it loads v2 or unloads v1")
