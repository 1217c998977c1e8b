"""Load failures (END with the reason), TF1 models, warmup failure, SIGTERM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from server_helpers import ServerProcess, predict_request, write_warmup

from pytest_tfserving.tensors import to_numpy


def test_corrupt_model_ends_with_error_and_sigterm_stops(tmp_path: Path) -> None:
    (tmp_path / "m" / "3").mkdir(parents=True)
    (tmp_path / "m" / "3" / "saved_model.pb").write_bytes(b"\x0bnot a protobuf at all")
    with ServerProcess(tmp_path / "m", rest=False) as srv:
        st = srv.wait_state("END")
        assert st.state == 50 and st.version == 3
        assert st.status.error_code != 0 and "corrupt" in st.status.error_message
        assert "Loading servable: {name: m version: 3} failed" in srv.log()
        assert srv.status() is not None, "status is still answered after a failed load"
        assert srv.terminate() == 0
        assert srv.proc.poll() == 0


def test_tf1_model_and_failing_warmup(tf1_linear: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    want = tf.saved_model.load(str(tf1_linear / "1")).signatures["serving_default"](
        x=tf.constant(x))["y"].numpy()
    base = tmp_path / "tf1"
    shutil.copytree(tf1_linear, base)
    with ServerProcess(base, rest=False) as srv:
        srv.wait_available()
        from tensorflow_serving.apis import prediction_service_pb2_grpc as ps

        resp = ps.PredictionServiceStub(srv.channel()).Predict(
            predict_request("m", {"x": x}), timeout=10)
        np.testing.assert_allclose(to_numpy(resp.outputs["y"]), want, rtol=1e-6)

    bad = predict_request("m", {"x": x})
    write_warmup(base / "1/assets.extra/tf_serving_warmup_requests",
                 [predict_request("m", {"x": x}), predict_request("m", {"wrong": x}), bad])
    with ServerProcess(base, rest=False) as srv:
        st = srv.wait_state("END")
        assert st.state == 50
        assert "Warmup record 1 (predict_log)" in st.status.error_message
        assert "Missing but required: {x}" in st.status.error_message
