"""The int8_delta gate end to end (pytester subprocesses against models built here).

A small digits MLP (scikit-learn weights exported as a SavedModel) passes with a small measured
delta; the same network with one planted outlier unit (constant activation 10,000 whose outgoing
weights are zero: the float output is unchanged, but the layer's per-tensor INT8 scale becomes
so coarse that every ordinary activation rounds to zero) fails with the numbers; a model with
string ops fails with the converter's reason; bad eval data fails with a clear message.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

OUTLIER = 10_000.0


def _export(path: Path, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> None:
    import tensorflow as tf

    class Mlp(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.b1 = tf.Variable(w1), tf.Variable(b1)
            self.w2, self.b2 = tf.Variable(w2), tf.Variable(b2)

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
        def serve(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            hidden = tf.nn.relu(tf.matmul(pixels, self.w1) + self.b1)
            probs = tf.nn.softmax(tf.matmul(hidden, self.w2) + self.b2)
            return {"probabilities": probs,
                    "class_id": tf.argmax(probs, axis=1, output_type=tf.int64)}

    module = Mlp()
    tf.saved_model.save(module, str(path / "1"), signatures={"serving_default": module.serve})


def _export_string_model(path: Path) -> None:
    import tensorflow as tf

    class Stringy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
        def serve(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            back = tf.strings.to_number(tf.strings.as_string(pixels))
            return {"probabilities": tf.nn.softmax(back[:, :10])}

    module = Stringy()
    tf.saved_model.save(module, str(path / "1"), signatures={"serving_default": module.serve})


@pytest.fixture(scope="session")
def int8_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=300, random_state=0, stratify=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few hundred steps are plenty
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
        clf.fit(x_tr, y_tr)
    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    root = tmp_path_factory.mktemp("int8")
    out = {"digits": root / "digits", "fragile": root / "fragile", "strings": root / "strings"}
    _export(out["digits"], w1, b1, w2, b2)
    # the planted outlier unit: zero in, bias OUTLIER, zero out
    _export(out["fragile"], np.concatenate([w1, np.zeros((64, 1), np.float32)], axis=1),
            np.concatenate([b1, [OUTLIER]]).astype(np.float32),
            np.concatenate([w2, np.zeros((1, 10), np.float32)], axis=0), b2)
    _export_string_model(out["strings"])
    out["eval"] = root / "eval.npz"
    np.savez(out["eval"], pixels=x_te, labels=y_te.astype(np.int64))
    out["eval_nolabels"] = root / "eval_nolabels.npz"
    np.savez(out["eval_nolabels"], pixels=x_te)
    return out


def _gate(report: Path) -> dict[str, Any]:
    gates = json.loads(report.read_text())["gates"]
    found = [g for g in gates if g["name"] == "int8_delta"]
    assert len(found) == 1, gates
    return found[0]


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rsf",
                                           f"--tfs-report={report}", *args)
    return result, report


def test_digits_passes_with_small_measured_delta(pytester, int8_models):
    result, report = _run(pytester, f"--tfs-model={int8_models['digits']}",
                          f"--tfs-eval-data={int8_models['eval']}", "--tfs-gates=int8_delta")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*int8_delta*PASS*", "*release gate PASSED*"])
    gate = _gate(report)
    measured = gate["measured"]
    assert gate["passed"] and measured["metric"] == "accuracy"
    assert measured["float"] > 0.9 and abs(measured["delta"]) <= 0.01
    assert 0 < measured["size_ratio"] < 0.6  # INT8 weights: well under the float flatbuffer
    assert measured["latency_ratio"] > 0
    assert gate["threshold"] == {"metric": "accuracy", "direction": "higher_is_better",
                                 "max_delta": 0.01, "max_rel_delta": None}
    details = gate["details"]
    assert details["float_tflite_metric"] == pytest.approx(measured["float"], abs=0.01)
    assert details["latency"]["threads"] == 1 and details["rows"] == 300
    assert "Size INT8/float TFLite" in gate["message"]
    assert "playbook claims 2-3x" in gate["message"]


def test_planted_outliers_fail_with_the_numbers(pytester, int8_models):
    result, report = _run(pytester, f"--tfs-model={int8_models['fragile']}",
                          f"--tfs-eval-data={int8_models['eval']}", "--tfs-gates=int8_delta")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gate int8_delta FAILED: accuracy float 0.9* -> INT8 0.* "
                                 "OUT OF BOUNDS: worse by *", "*release gate FAILED*"])
    measured = _gate(report)["measured"]
    assert measured["float"] > 0.9 and measured["delta"] < -0.05


def test_label_free_mode_with_bounds_and_user_artifact(pytester, int8_models, tmp_path):
    from pytest_tfserving.int8.eval_data import load_npz
    from pytest_tfserving.int8.quantize import convert
    from pytest_tfserving.model import inspect_model

    model = inspect_model(int8_models["digits"])
    signature = model.signature("serving_default")
    data = load_npz(int8_models["eval"])
    artifact = tmp_path / "digits_int8.tflite"
    artifact.write_bytes(convert(model.version_dir, signature,
                                 representative=data.rows_as_samples(50)))
    result, report = _run(pytester, f"--tfs-model={int8_models['digits']}",
                          f"--tfs-eval-data={int8_models['eval_nolabels']}",
                          f"--tfs-int8-model={artifact}", "--tfs-int8-metric=cosine",
                          "--tfs-int8-max-delta=0.001", "--tfs-gates=int8_delta")
    result.assert_outcomes(passed=1)
    gate = _gate(report)
    assert gate["measured"]["metric"] == "cosine" and gate["measured"]["float"] == 1.0
    assert 0.999 <= gate["measured"]["int8"] <= 1.0
    assert gate["details"]["labels"] is False
    assert gate["details"]["int8_model"] == f"user-supplied {artifact}"
    assert set(gate["details"]["label_free"]) == {"agreement", "max_abs_diff", "mean_abs_diff",
                                                  "cosine"}


def test_string_ops_fail_with_converter_reason_not_traceback(pytester, int8_models):
    result, report = _run(pytester, f"--tfs-model={int8_models['strings']}",
                          f"--tfs-eval-data={int8_models['eval_nolabels']}",
                          "--tfs-gates=int8_delta")
    result.assert_outcomes(failed=1)
    message = _gate(report)["message"]
    assert message.startswith("The TFLite converter cannot quantize signature "
                              "'serving_default'")
    assert "tf.AsString" in message and "tf.StringToNumber" in message
    assert "--tfs-int8-model=FILE.tflite" in message and "\n" not in message
    assert "Traceback" not in result.stdout.str()


def test_markers_conftest_fixture_custom_metric_and_bad_eval_data(pytester, int8_models):
    """One run: conftest overrides tfs_eval_data, marker thresholds and a callable metric, and
    three marked tests with broken eval data that fail with clear messages."""
    pytester.makeconftest(f"""
import numpy as np
import pytest

@pytest.fixture(scope="session")
def tfs_eval_data():
    with np.load({str(int8_models['eval'])!r}) as data:
        return {{"pixels": data["pixels"][:120], "labels": data["labels"][:120]}}
""")
    pytester.makepyfile(test_int8_user="""
import numpy as np
import pytest

def brier(labels, probabilities):
    return float(np.mean(np.sum((np.eye(10)[labels] - probabilities) ** 2, axis=1)))

@pytest.mark.tfs_int8_delta(metric=brier, direction="lower", max_delta=0.05)
def test_custom_metric():
    pass

@pytest.mark.tfs_int8_delta(metric="top_k_accuracy", top_k=2, max_delta=0.0)
def test_top2_must_not_drop():
    pass

@pytest.mark.tfs_int8_delta(eval_data={"image": np.zeros((4, 64), np.float32)})
def test_missing_input():
    pass

@pytest.mark.tfs_int8_delta(eval_data={"pixels": np.zeros((4, 8, 8), np.float32)})
def test_wrong_shape():
    pass

@pytest.mark.tfs_int8_delta(eval_data={"pixels": np.zeros((4, 64), np.int32)})
def test_wrong_dtype():
    pass

@pytest.mark.tfs_int8_delta(max_dleta=0.1)
def test_typo_in_marker():
    pass
""")
    result, report = _run(pytester, f"--tfs-model={int8_models['digits']}", "--tfs-gates=none",
                          "-v")
    outcomes = result.parseoutcomes()
    # the four broken ones fail (as a failure, or as an error if the plugin runs marker gates
    # in fixture teardown); the two good ones pass
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 4, outcomes
    result.stdout.fnmatch_lines_random(["*::test_custom_metric PASSED*",
                                        "*::test_top2_must_not_drop PASSED*"])
    out = result.stdout.str()
    for expected in (
        "lacks input(s) ['pixels'] of signature 'serving_default' (it has ['image']). Name "
        "the arrays after the signature's inputs: pixels: float[-1,64]",
        "input 'pixels' has shape [4, 8, 8] (rank 3) but the signature wants rank 2",
        "input 'pixels' has dtype int32 but the signature wants float32 (save it with "
        ".astype('float32'))",
        "Unknown argument(s) max_dleta in marker tfs_int8_delta",
    ):
        assert expected in out
    assert "Traceback" not in out
    gates = json.loads(report.read_text())["gates"]
    custom = [g for g in gates if g.get("target", "").endswith("test_custom_metric")][0]
    assert custom["measured"]["metric"] == "brier" and custom["details"]["rows"] == 120
    assert custom["threshold"]["direction"] == "lower_is_better"
    top2 = [g for g in gates if g.get("target", "").endswith("test_top2_must_not_drop")][0]
    assert top2["measured"]["metric"] == "top_2_accuracy"


def test_gate_skips_with_reason_without_eval_data(pytester, int8_models):
    result, report = _run(pytester, f"--tfs-model={int8_models['digits']}",
                          "--tfs-gates=int8_delta")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*gate int8_delta: no eval data configured: pass "
                                 "--tfs-eval-data=FILE.npz (arrays pixels: float[[]-1,64[]] "
                                 "plus 'labels')*"])
    assert _gate(report)["skipped"] is True


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "fixtures" / "data"
                         / "digits_eval.npz").is_file(), reason="fixture models not built")
def test_fixture_digits_model_passes(pytester, models_dir):
    data = models_dir.parent / "data" / "digits_eval.npz"
    result, report = _run(pytester, f"--tfs-model={models_dir / 'digits'}",
                          f"--tfs-eval-data={data}", "--tfs-gates=int8_delta")
    result.assert_outcomes(passed=1)
    measured = _gate(report)["measured"]
    assert measured["float"] > 0.9 and abs(measured["delta"]) <= 0.01
