"""MultiInference on the bundled server (real subprocess, digits model), as TF Serving does."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from server_helpers import ServerProcess, metric_samples

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


@pytest.fixture(scope="module")
def server(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("multi")
    (tmp / "monitoring.txt").write_text(MONITORING)
    with ServerProcess(digits, f"--monitoring_config_file={tmp / 'monitoring.txt'}",
                       model_name="digits") as srv:
        srv.wait_available()
        yield srv


def pixels(n: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


def example(row: np.ndarray[Any, Any]) -> Any:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist()))}))


def request(rows: np.ndarray[Any, Any] | None,
            *tasks: tuple[str, str, str]) -> Any:
    """A MultiInferenceRequest; each task is (model name, signature name, method)."""
    from tensorflow_serving.apis import inference_pb2

    req = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = req.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    if rows is not None:
        req.input.example_list.examples.extend(example(r) for r in rows)
    return req


def serialized(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.array([example(r).SerializeToString() for r in rows], dtype=object)


def error(srv: ServerProcess, req: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        srv.stub().MultiInference(req, timeout=20)
    return info.value.code(), info.value.details()


def test_classify_and_regress_in_request_order(server: ServerProcess, digits_fns: Any) -> None:
    rows = pixels(5, seed=1)
    want_c = digits_fns["classify"](inputs=serialized(rows))
    want_r = digits_fns["regress"](inputs=serialized(rows))["outputs"].numpy()
    # regress first: the results follow the tasks' order, not a fixed classify-then-regress one
    resp = server.stub().MultiInference(
        request(rows, ("digits", "regress", REGRESS), ("digits", "classify", CLASSIFY)),
        timeout=20)
    assert [r.WhichOneof("result") for r in resp.results] == ["regression_result",
                                                              "classification_result"]
    reg, cls = resp.results
    for result, sig in ((reg, "regress"), (cls, "classify")):
        assert result.model_spec.name == "digits"
        assert result.model_spec.signature_name == sig
        assert result.model_spec.version.value == 1
    np.testing.assert_allclose([r.value for r in reg.regression_result.regressions], want_r,
                               rtol=1e-6)
    got = cls.classification_result.classifications
    assert len(got) == 5
    labels = [[b.decode() for b in row] for row in want_c["classes"].numpy()]
    scores = want_c["scores"].numpy()
    for i in range(5):
        assert [c.label for c in got[i].classes] == labels[i]
        np.testing.assert_allclose([c.score for c in got[i].classes], scores[i], rtol=1e-5,
                                   atol=1e-7)


def test_same_results_as_separate_classify_and_regress(server: ServerProcess) -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    rows = pixels(3, seed=2)
    multi = server.stub().MultiInference(
        request(rows, ("digits", "classify", CLASSIFY), ("digits", "regress", REGRESS)),
        timeout=20)
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name, creq.model_spec.signature_name = "digits", "classify"
    creq.input.example_list.examples.extend(example(r) for r in rows)
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name, rreq.model_spec.signature_name = "digits", "regress"
    rreq.input.example_list.examples.extend(example(r) for r in rows)
    assert multi.results[0].classification_result == server.stub().Classify(creq, timeout=20).result
    assert multi.results[1].regression_result == server.stub().Regress(rreq, timeout=20).result


def test_single_task_and_example_list_with_context(server: ServerProcess,
                                                   digits_fns: Any) -> None:
    import tensorflow as tf

    row = pixels(1, seed=3)
    req = request(None, ("digits", "regress", REGRESS))
    ctx = req.input.example_list_with_context
    ctx.context.CopyFrom(example(row[0]))
    ctx.examples.extend(tf.train.Example() for _ in range(4))  # every feature from the context
    resp = server.stub().MultiInference(req, timeout=20)
    assert len(resp.results) == 1
    values = [r.value for r in resp.results[0].regression_result.regressions]
    want = digits_fns["regress"](inputs=serialized(row))["outputs"].numpy()[0]
    assert values == [pytest.approx(float(want))] * 4


def test_version_pinned_in_first_task(server: ServerProcess) -> None:
    req = request(pixels(2, 4), ("digits", "classify", CLASSIFY))
    req.tasks[0].model_spec.version.value = 1
    assert server.stub().MultiInference(req, timeout=20).results[0].model_spec.version.value == 1
    req.tasks[0].model_spec.version.value = 9
    code, msg = error(server, req)
    assert code == grpc.StatusCode.NOT_FOUND and msg == \
        "Servable not found for request: Specific(digits, 9)"


def test_errors_as_tf_serving_gives_them(server: ServerProcess) -> None:
    rows = pixels(2, seed=5)
    inv = grpc.StatusCode.INVALID_ARGUMENT

    assert error(server, request(rows)) == (inv, "ModelSpec has no name specified.")
    assert error(server, request(rows, ("digits", "classify", CLASSIFY),
                                 ("other", "regress", REGRESS))) == (
        inv, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    assert error(server, request(rows, ("digits", "classify", CLASSIFY),
                                 ("", "regress", REGRESS))) == (
        inv, "Found ModelSpec with an empty model name.")
    assert error(server, request(rows, ("digits", "regress", REGRESS),
                                 ("digits", "regress", REGRESS))) == (
        inv, "Duplicate evaluation of signature: regress")
    # an empty signature_name means serving_default (digits' predict signature), and each task
    # is pre-checked before the next one is looked at, as in TF Serving's loop
    code, msg = error(server, request(rows, ("digits", "", CLASSIFY),
                                      ("digits", "serving_default", CLASSIFY)))
    # no method-name check unless --enable_signature_method_name_check (TF Serving's default):
    # the predict signature fails on its outputs, which are no classes/scores
    assert code == inv and "'serving_default'" in msg and "at least one of" in msg
    assert error(server, request(rows, ("digits", "nope", CLASSIFY))) == (
        inv, "Requested signature not found in model graph: nope")
    # TF Serving answers an unsupported method with UNIMPLEMENTED (multi_inference.cc)
    assert error(server, request(rows, ("digits", "serving_default",
                                        "tensorflow/serving/predict"))) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict")
    # a supported method on a signature of another method: the classify/regress pre-check
    code, msg = error(server, request(rows, ("digits", "regress", CLASSIFY)))
    assert code == inv and "'regress'" in msg and \
        "Expected classification signature outputs to contain at least one of" in msg
    # tasks are checked before the input: a bad task wins over an empty input
    assert error(server, request(None, ("digits", "nope", CLASSIFY)))[1].startswith(
        "Requested signature not found")
    code, msg = error(server, request(None, ("digits", "classify", CLASSIFY)))
    assert code == inv and "Input is empty" in msg
    code, msg = error(server, request(rows, ("other", "classify", CLASSIFY)))
    assert code == grpc.StatusCode.NOT_FOUND and msg == \
        "Servable not found for request: Latest(other)"
    # and the server still answers after all of that
    ok = server.stub().MultiInference(request(rows, ("digits", "classify", CLASSIFY)), timeout=20)
    assert len(ok.results[0].classification_result.classifications) == 2


def test_example_count_recorded_once_no_request_count(server: ServerProcess) -> None:
    def page() -> str:
        url = f"{server.rest_url}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return str(r.read().decode())

    total = ":tensorflow:serving:request_example_count_total"
    before_text = page()
    before = metric_samples(before_text, total).get('{model="digits"}', 0.0)
    before_req = sum(metric_samples(before_text, ":tensorflow:serving:request_count").values())
    server.stub().MultiInference(
        request(pixels(7, 6), ("digits", "classify", CLASSIFY), ("digits", "regress", REGRESS)),
        timeout=20)
    after_text = page()
    # the shared input is counted once (7 examples), not once per task
    assert metric_samples(after_text, total)['{model="digits"}'] - before == 7
    # TF Serving's MultiInference handler records no request_count
    assert sum(metric_samples(after_text, ":tensorflow:serving:request_count").values()) == \
        before_req


# --- warmup replay of multi_inference_log records ----------------------------------------

def warmup_model(digits: Path, tmp_path: Path, requests: list[Any]) -> Path:
    """A copy of digits whose warmup file holds one PredictionLog per request.

    A request is a MultiInferenceRequest (multi_inference_log) or None (an empty PredictionLog).
    """
    import shutil

    from tensorflow_serving.apis import prediction_log_pb2

    from pytest_tfserving.model import WARMUP_RELATIVE_PATH
    from pytest_tfserving.tfrecord import write_records

    base = tmp_path / "digits"
    shutil.copytree(digits, base)
    logs = []
    for req in requests:
        log = prediction_log_pb2.PredictionLog()
        if req is not None:
            log.multi_inference_log.request.CopyFrom(req)
        logs.append(log.SerializeToString())
    path = base / "1" / WARMUP_RELATIVE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(path, logs)
    return base


def test_warmup_replays_multi_inference_records(digits: Path, tmp_path: Path) -> None:
    both = request(pixels(3, 10), ("digits", "classify", CLASSIFY), ("digits", "regress", REGRESS))
    # the warmup replays against the version being loaded: as in TF Serving, the task's model
    # name must only be set and the same across tasks, not be the served model's
    other_name = request(pixels(2, 11), ("anything", "regress", REGRESS))
    base = warmup_model(digits, tmp_path, [both, other_name, None])
    with ServerProcess(base, "--num_request_iterations_for_warmup=2", model_name="digits",
                       rest=False) as srv:
        st = srv.wait_available()
        assert st.state == 30  # AVAILABLE
        log = srv.log()
        assert "Finished reading warmup data for model at " in log
        assert ". Number of warmup records read: 3. Elapsed time (microseconds): " in log
        resp = srv.stub().MultiInference(both, timeout=20)
        assert [r.model_spec.signature_name for r in resp.results] == ["classify", "regress"]


def test_warmup_multi_inference_with_bad_task_fails_the_load(digits: Path,
                                                              tmp_path: Path) -> None:
    good = request(pixels(2, 12), ("digits", "classify", CLASSIFY))
    bad = request(pixels(2, 13), ("digits", "classify", CLASSIFY), ("digits", "nope", REGRESS))
    base = warmup_model(digits, tmp_path, [good, bad])
    with ServerProcess(base, model_name="digits", rest=False) as srv:
        st = srv.wait_state("END")
        assert st.state == 50  # END
        message = st.status.error_message
        assert "Warmup record 1 (multi_inference_log)" in message
        assert "INVALID_ARGUMENT: Requested signature not found in model graph: nope" in message
        assert "Number of warmup records read" not in srv.log()
