"""The bundled server's Session execution (servable.py): models built here with TF, loaded with
``load_servable`` into a TF1 Session and run through its prepared callables, as TF Serving runs
them. With ``TFS_TESTDATA`` pointing at TF Serving's ``servables/tensorflow/testdata`` directory,
TF Serving's own test models are loaded too."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from pytest_tfserving.bundled_server.servable import (
    LoadOptions,
    Servable,
    load_servable,
    session_config,
)
from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.errors import ModelError
from pytest_tfserving.tensors import DT_FLOAT, DT_INT64

W = np.array([[1.0], [2.0]], np.float32)
B = 0.5
X = np.array([[1.0, 1.0], [2.0, 3.0]], np.float32)
Y = X @ W + B  # [[3.5], [8.5]]


def _tf1_model(path: Path, tags: tuple[str, ...] = ("serve",)) -> Path:
    """A TF1 graph: reference variables (VariableV2), a lookup table initialized by the main op,
    and a counter whose signature outputs a reference tensor (DT_FLOAT_REF)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    build = v1.saved_model.signature_def_utils.build_signature_def
    info = v1.saved_model.utils.build_tensor_info
    with tf.Graph().as_default(), v1.Session() as sess:
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        w = v1.Variable(W, name="w", use_resource=False)
        b = v1.Variable(B, name="b", use_resource=False)
        y = tf.identity(tf.matmul(x, w) + b, name="y")
        doubled = tf.identity(y * 2.0, name="doubled")
        words = v1.placeholder(tf.string, [None], name="words")
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]),
                                                tf.constant([1, 2], tf.int64)), -1)
        ids = tf.identity(table.lookup(words), name="ids")
        counter = v1.Variable(0.0, name="counter", use_resource=False)
        incr = v1.assign_add(counter, 1.0)
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            sess, list(tags),
            signature_def_map={
                "serving_default": build({"x": info(x)}, {"y": info(y), "doubled": info(doubled)},
                                         "tensorflow/serving/predict"),
                "lookup": build({"words": info(words)}, {"ids": info(ids)},
                                "tensorflow/serving/predict"),
                "incr": build({}, {"count": info(incr)}, "tensorflow/serving/predict"),
            },
            main_op=v1.tables_initializer(),
        )
        builder.save()
    return path


def _tf2_module(path: Path) -> Path:
    """A tf.Module with a resource variable and a lookup table (TF2 SavedModel)."""
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(W)
            self.b = tf.Variable(B)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            y = tf.matmul(x, self.w) + self.b
            return {"y": y, "doubled": y * 2.0}

    module = Affine()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def _keras_model(trained: bool = True) -> Any:
    """Dense(1) on 2 features, compiled with Adam and trained one step (optimizer slots)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="score")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    if trained:
        model.fit(X, np.zeros((2, 1), np.float32), epochs=1, batch_size=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("session_models")
    return {"tf1": _tf1_model(tmp / "tf1" / "1"), "tf2": _tf2_module(tmp / "tf2" / "1")}


@pytest.fixture
def tf1(models: dict[str, Path]) -> Iterator[Servable]:
    servable = load_servable("tf1", 1, models["tf1"])
    yield servable
    servable.close()


def _code(excinfo: pytest.ExceptionInfo[ServingError]) -> grpc.StatusCode:
    return excinfo.value.code


def test_tf1_reference_variables_and_main_op(tf1: Servable) -> None:
    sig = tf1.signatures
    assert set(sig) == {"serving_default", "lookup", "incr"}
    out = sig["serving_default"].run({"x": X})
    assert set(out) == {"y", "doubled"}
    np.testing.assert_allclose(out["y"], Y)
    np.testing.assert_allclose(out["doubled"], 2 * Y)
    ids = sig["lookup"].run({"words": np.array([b"b", b"z", b"a"], object)})["ids"]
    assert ids.tolist() == [2, -1, 1] and sig["lookup"].outputs["ids"].dtype == DT_INT64
    # a reference tensor's output is described (and fetched) as its value's dtype
    assert sig["incr"].outputs["count"].dtype == DT_FLOAT
    assert [float(sig["incr"].run({})["count"]) for _ in range(3)] == [1.0, 2.0, 3.0]


def test_output_keys_fetch_only_those(tf1: Servable) -> None:
    runner = tf1.signatures["serving_default"]
    only = runner.run({"x": X}, output_keys=("doubled",))
    assert list(only) == ["doubled"]
    np.testing.assert_allclose(only["doubled"], 2 * Y)
    both = runner.run({"x": X}, output_keys=("y", "doubled"))
    assert set(both) == {"y", "doubled"}
    with pytest.raises(ServingError, match="output tensor alias not found in signature: nope") \
            as excinfo:
        runner.run({"x": X}, output_keys=("nope",))
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_tf2_module(models: dict[str, Path]) -> None:
    servable = load_servable("tf2", 1, models["tf2"], LoadOptions())
    out = servable.signatures["serving_default"].run({"x": X})
    np.testing.assert_allclose(out["y"], Y)
    np.testing.assert_allclose(out["doubled"], 2 * Y)
    servable.close()


def test_keras_export_trained_with_optimizer(tmp_path: Path) -> None:
    model = _keras_model()
    model.export(str(tmp_path / "1"), format="tf_saved_model", verbose=False)
    servable = load_servable("keras", 1, tmp_path / "1")
    runner = servable.signatures["serving_default"]
    (key,) = runner.outputs
    np.testing.assert_allclose(runner.run({"x": X})[key], model.predict(X, verbose=0), rtol=1e-6)
    servable.close()


def test_keras3_saved_model_save_fails_as_tf_serving(tmp_path: Path) -> None:
    """A Keras 3 model saved with tf.saved_model.save: its signature reads variables that the
    checkpoint restore never writes (two handles per variable), so TF Serving's Session fails
    every request with FAILED_PRECONDITION 'Could not find variable' (tensorflow/serving#2250,
    keras-team/keras#19274). tf.saved_model.load hid that; the Session shows it, as TF Serving."""
    import tensorflow as tf

    model = _keras_model(trained=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": model(x)}

    tf.saved_model.save(model, str(tmp_path / "1"), signatures={"serving_default": serve})
    servable = load_servable("keras", 1, tmp_path / "1")
    with pytest.raises(ServingError, match="Could not find variable score/") as excinfo:
        servable.signatures["serving_default"].run({"x": X})
    assert _code(excinfo) == grpc.StatusCode.FAILED_PRECONDITION
    servable.close()


def test_concurrent_calls_from_8_threads(tf1: Servable) -> None:
    runner = tf1.signatures["serving_default"]
    key_sets: list[tuple[str, ...] | None] = [None, ("y",), ("doubled",), ("doubled", "y")]
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for j in range(100):
            x = np.full((i + 1, 2), float(j), np.float32)
            keys = key_sets[(i + j) % len(key_sets)]
            out = runner.run({"x": x}, output_keys=keys)
            want = x @ W + B
            for key, value in out.items():
                expected = want if key == "y" else 2 * want
                if value.shape != expected.shape or not np.allclose(value, expected):
                    errors.append(f"thread {i} call {j} {key}: {value.tolist()}")
            if set(out) != set(keys or ("y", "doubled")):
                errors.append(f"thread {i} call {j}: keys {sorted(out)} for {keys}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_wrong_dtype_is_invalid_argument_naming_the_input(tf1: Servable) -> None:
    with pytest.raises(ServingError, match=r"input 'x' has dtype DT_INT64 but the signature "
                                           r"expects DT_FLOAT") as excinfo:
        tf1.signatures["serving_default"].run({"x": X.astype(np.int64)})
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingError, match=r"input 'words' has dtype object but the signature "
                                           r"expects DT_STRING") as excinfo:
        tf1.signatures["lookup"].run({"words": np.array([b"a", 3], object)})
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_input_is_invalid_argument(tf1: Servable) -> None:
    with pytest.raises(ServingError, match="input 'x' of signature 'serving_default' was not "
                                           "fed") as excinfo:
        tf1.signatures["serving_default"].run({})
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_tag_set_is_a_model_error(models: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"no MetaGraph tagged \{serve,gpu\} \(found tag sets "
                                         r"\[\['serve'\]\]\).*--saved_model_tags=serve"):
        load_servable("tf1", 1, models["tf1"], LoadOptions(tags=("serve", "gpu")))


def test_custom_tag_set_loads(tmp_path: Path) -> None:
    path = _tf1_model(tmp_path / "1", tags=("serve", "tpu"))
    with pytest.raises(ModelError, match=r"found tag sets \[\['serve', 'tpu'\]\]"):
        load_servable("m", 1, path)
    servable = load_servable("m", 1, path, LoadOptions(tags=("tpu", "serve")))
    np.testing.assert_allclose(servable.signatures["serving_default"].run({"x": X})["y"], Y)
    servable.close()


def test_thread_and_xla_options(models: dict[str, Path]) -> None:
    options = LoadOptions(intra_op_threads=1, inter_op_threads=2, xla_cpu_jit=True)
    config = session_config(options)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (1, 2)
    assert config.graph_options.optimizer_options.global_jit_level == 1  # ON_1
    assert session_config(LoadOptions()).graph_options.optimizer_options.global_jit_level == 0
    servable = load_servable("tf2", 1, models["tf2"], options)
    np.testing.assert_allclose(servable.signatures["serving_default"].run({"x": X})["y"], Y)
    servable.close()


def test_close_is_idempotent_and_later_calls_are_cancelled(models: dict[str, Path]) -> None:
    servable = load_servable("tf1", 1, models["tf1"])
    runner = servable.signatures["serving_default"]
    np.testing.assert_allclose(runner.run({"x": X})["y"], Y)  # its callable is built now
    servable.close()
    servable.close()
    for keys in (None, ("y",)):  # the callable built before close, and one built after it
        with pytest.raises(ServingError, match="Session has been closed") as excinfo:
            runner.run({"x": X}, output_keys=keys)
        assert _code(excinfo) == grpc.StatusCode.CANCELLED


def test_tflite_runner_takes_output_keys(models: dict[str, Path], tmp_path: Path) -> None:
    """The LiteRT runner keeps SignatureRunner's interface: run(arrays, output_keys)."""
    import tensorflow as tf

    from pytest_tfserving.bundled_server.tflite_servable import load_tflite_servable

    version_dir = tmp_path / "1"
    version_dir.mkdir()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(models["tf2"]))
    (version_dir / "model.tflite").write_bytes(converter.convert())
    runner = load_tflite_servable("lite", 1, version_dir).signatures["serving_default"]
    np.testing.assert_allclose(runner.run({"x": X})["y"], Y)
    only = runner.run({"x": X}, output_keys=("doubled",))
    assert list(only) == ["doubled"]
    np.testing.assert_allclose(only["doubled"], 2 * Y)
    with pytest.raises(ServingError, match="output tensor alias not found in signature: nope"):
        runner.run({"x": X}, output_keys=("nope",))


# -- TF Serving's own test models (read where they are; never copied) ------------------------
TESTDATA = os.environ.get("TFS_TESTDATA")
needs_testdata = pytest.mark.skipif(
    not TESTDATA, reason="set TFS_TESTDATA to TF Serving's "
                         "tensorflow_serving/servables/tensorflow/testdata directory")


def _testdata(name: str) -> Servable:
    assert TESTDATA is not None
    return load_servable(name, 123, Path(TESTDATA) / name / "00000123")


@needs_testdata
@pytest.mark.parametrize("name", ["saved_model_half_plus_two_cpu",
                                  "saved_model_half_plus_two_tf2_cpu"])
def test_tfs_half_plus_two(name: str) -> None:
    servable = _testdata(name)
    x = np.array([1.0, 2.0, 5.0], np.float32)
    if name.endswith("tf2_cpu"):  # x: float[1]
        ys = [servable.signatures["serving_default"].run({"x": x[i:i + 1]})["y"] for i in range(3)]
        np.testing.assert_allclose(np.concatenate(ys), x / 2 + 2)
    else:  # x: float[-1, 1]
        y = servable.signatures["serving_default"].run({"x": x[:, None]})["y"]
        np.testing.assert_allclose(y[:, 0], x / 2 + 2)
    servable.close()


@needs_testdata
def test_tfs_counter_reference_variables() -> None:
    servable = _testdata("saved_model_counter")
    sig = servable.signatures
    assert float(sig["reset_counter"].run({})["output"]) == 0.0
    assert float(sig["incr_counter"].run({})["output"]) == 1.0
    assert float(sig["incr_counter_by"].run({"delta": np.array(3.0, np.float32)})["output"]) == 4.0
    assert float(sig["get_counter"].run({})["output"]) == 4.0
    servable.close()


@needs_testdata
def test_tfs_half_plus_three() -> None:
    servable = _testdata("saved_model_half_plus_three")
    y = servable.signatures["serving_default"].run({"x": np.array(4.0, np.float32)})["y"]
    assert y.shape == () and float(y) == 5.0
    servable.close()
