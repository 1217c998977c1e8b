"""Unit tests of the INT8 gate's pure parts: metrics, change thresholds, eval-data checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.int8 import metrics
from pytest_tfserving.int8.eval_data import EvalData, from_value, load_npz, validate
from pytest_tfserving.model import Signature, TensorSpec


def _signature() -> Signature:
    return Signature(
        "serving_default", "tensorflow/serving/predict",
        {"pixels": TensorSpec("pixels", "serving_default_pixels:0", "DT_FLOAT", (None, 64)),
         "ids": TensorSpec("ids", "serving_default_ids:0", "DT_INT64", (None,))},
        {"probabilities": TensorSpec("probabilities", "x:0", "DT_FLOAT", (None, 10))},
    )


# --- metrics ---------------------------------------------------------------------------------

def test_accuracy_from_scores_one_hot_and_ids():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    labels = np.array([1, 0, 0, 0])
    assert metrics.accuracy(labels, scores) == 0.75
    assert metrics.accuracy(np.eye(2)[labels], scores) == 0.75  # one-hot labels
    assert metrics.accuracy(labels, np.array([1, 0, 1, 1], np.int64)) == 0.5


def test_top_k_accuracy_counts_label_among_k_best():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])
    labels = np.array([2, 1, 1])
    assert metrics.top_k_accuracy(1)(labels, scores) == 0.0
    assert metrics.top_k_accuracy(2)(labels, scores) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(3)(labels, scores) == 1.0
    with pytest.raises(ConfigError, match=r"class scores shaped \[batch, classes>=2\]"):
        metrics.top_k_accuracy(2)(labels, scores[:, :1])


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 2)  # many ties
    assert metrics.auc(labels, scores[:, None]) == pytest.approx(roc_auc_score(labels, scores))
    two_col = np.stack([1 - scores, scores], axis=1)
    assert metrics.auc(labels, two_col) == pytest.approx(roc_auc_score(labels, scores))


def test_auc_rejects_multiclass_and_single_class_labels():
    with pytest.raises(ConfigError, match="binary labels 0/1"):
        metrics.auc(np.array([0, 1, 2]), np.array([0.1, 0.5, 0.9]))
    with pytest.raises(ConfigError, match="both classes"):
        metrics.auc(np.array([1, 1, 1]), np.array([0.1, 0.5, 0.9]))


def test_regression_metrics_and_shape_mismatch():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    preds = np.array([[1.5], [2.0], [2.0], [4.0]], np.float32)
    assert metrics.mae(labels, preds) == pytest.approx(0.375)
    assert metrics.rmse(labels, preds) == pytest.approx(math.sqrt((0.25 + 1.0) / 4))
    with pytest.raises(ConfigError, match=r"labels have shape \[4\] but the output has shape"):
        metrics.mae(labels, np.ones((4, 2)))
    with pytest.raises(ConfigError, match="labels have 4 rows but the model returned 3"):
        metrics.rmse(labels, preds[:3])


def test_label_free_metrics_compare_two_outputs():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    moved = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], np.float32)
    assert metrics.agreement(ref, ref) == 1.0
    assert metrics.agreement(ref, moved) == pytest.approx(2 / 3)
    assert metrics.max_abs_diff(ref, moved) == pytest.approx(0.2)
    assert metrics.mean_abs_diff(ref, moved) == pytest.approx((0.1 + 0.1 + 0.2) * 2 / 6)
    assert metrics.cosine(ref, ref) == pytest.approx(1.0)
    assert metrics.cosine(ref, -ref) == pytest.approx(-1.0)
    assert metrics.cosine(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0


def test_auto_metric_and_resolution():
    scores = np.zeros((4, 10), np.float32)
    assert metrics.resolve_metric("auto", True, scores).name == "accuracy"
    assert metrics.resolve_metric("auto", False, scores).name == "agreement"
    assert metrics.resolve_metric("auto", True, np.zeros((4, 1), np.float32)).name == "rmse"
    assert metrics.resolve_metric("auto", False, np.zeros((4, 1), np.float32)).name == "cosine"
    assert metrics.resolve_metric("top_k_accuracy", True, scores, top_k=3).name == \
        "top_3_accuracy"
    with pytest.raises(ConfigError, match="needs labels but the eval data has none"):
        metrics.resolve_metric("accuracy", False, scores)
    with pytest.raises(ConfigError, match="Unknown INT8 metric 'f1'"):
        metrics.resolve_metric("f1", True, scores)


def test_custom_metric_callable_and_module_path():
    def brier(labels: np.ndarray, preds: np.ndarray) -> float:
        return float(np.mean((np.eye(preds.shape[1])[labels] - preds) ** 2))

    metric = metrics.resolve_metric(brier, True, np.zeros((2, 3)), direction="lower")
    assert (metric.name, metric.direction, metric.labels) == ("brier", "lower", True)
    assert metric(np.array([0, 1]), np.eye(3)[[0, 1]]) == 0.0
    loaded = metrics.resolve_metric("numpy:dot", True, np.zeros((2, 3)))
    assert loaded.fn is np.dot and loaded.direction == "higher"
    with pytest.raises(ConfigError, match="Cannot load custom metric 'no_such_mod:fn'"):
        metrics.resolve_metric("no_such_mod:fn", True, np.zeros((2, 3)))


# --- change thresholds -----------------------------------------------------------------------

def test_change_threshold_higher_is_better_absolute_and_relative():
    t = metrics.ChangeThreshold("higher", max_delta=0.01, max_rel_delta=0.006)
    assert t.violations(0.95, 0.945) == []  # 0.005 absolute, 0.53 % relative
    assert t.worsening(0.95, 0.945) == pytest.approx((0.005, 0.005 / 0.95))
    assert t.violations(0.5, 0.4965) == ["worse by 0.70% (relative), allowed 0.60%"]
    out = t.violations(0.95, 0.90)
    assert len(out) == 2 and "absolute" in out[0] and "relative" in out[1]
    assert t.violations(0.95, 0.99) == []  # INT8 better: never a violation


def test_change_threshold_lower_is_better_and_zero_baseline():
    t = metrics.ChangeThreshold("lower", max_rel_delta=0.05)
    assert t.violations(2.0, 2.09) == []
    assert t.violations(2.0, 2.2) == ["worse by 10.00% (relative), allowed 5.00%"]
    assert t.worsening(0.0, 0.1) == (0.1, math.inf)
    assert metrics.ChangeThreshold("lower", max_delta=0.2).violations(0.0, 0.1) == []


def test_make_threshold_defaults_and_errors():
    acc = metrics.builtin("accuracy")
    assert metrics.make_threshold(acc, None, None).max_delta == 0.01
    assert metrics.make_threshold(metrics.builtin("rmse"), None, None).max_rel_delta == 0.05
    explicit = metrics.make_threshold(acc, None, 0.02)
    assert (explicit.max_delta, explicit.max_rel_delta) == (None, 0.02)
    with pytest.raises(ConfigError, match="has no default bound"):
        metrics.make_threshold(metrics.builtin("max_abs_diff"), None, None)
    with pytest.raises(ConfigError, match=r"max_delta=-0.1 must be a number >= 0"):
        metrics.make_threshold(acc, -0.1, None)


# --- eval data -------------------------------------------------------------------------------

def _good() -> dict[str, np.ndarray]:
    return {"pixels": np.zeros((5, 64), np.float64), "ids": np.arange(5, dtype=np.int32),
            "labels": np.arange(5)}


def test_validate_casts_same_kind_and_keeps_labels():
    data = validate(from_value({**_good(), "extra": np.ones(5)}), _signature())
    assert data.inputs["pixels"].dtype == np.float32 and data.inputs["ids"].dtype == np.int64
    assert data.rows == 5 and data.labels is not None and data.ignored == ("extra",)


def test_validate_missing_input_names_the_inputs():
    arrays = _good()
    del arrays["ids"]
    with pytest.raises(ConfigError, match=r"lacks input\(s\) \['ids'\].*ids: int64\[-1\]"):
        validate(from_value(arrays), _signature())


def test_validate_wrong_shape_and_rank():
    arrays = _good()
    arrays["pixels"] = np.zeros((5, 63), np.float32)
    with pytest.raises(ConfigError, match=r"'pixels' has shape \[5, 63\] but the signature "
                                          r"wants pixels: float\[-1,64\]"):
        validate(from_value(arrays), _signature())
    arrays["pixels"] = np.zeros((5, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="rank 3.*wants rank 2"):
        validate(from_value(arrays), _signature())


def test_validate_wrong_dtype_says_how_to_fix():
    arrays = _good()
    arrays["pixels"] = np.zeros((5, 64), np.int64)
    with pytest.raises(ConfigError, match=r"'pixels' has dtype int64 but the signature wants "
                                          r"float32 \(save it with .astype\('float32'\)\)"):
        validate(from_value(arrays), _signature())


def test_validate_row_mismatch_and_empty():
    arrays = _good()
    arrays["labels"] = np.arange(4)
    with pytest.raises(ConfigError, match="different row counts"):
        validate(from_value(arrays), _signature())
    empty = {"pixels": np.zeros((0, 64), np.float32), "ids": np.zeros(0, np.int64)}
    with pytest.raises(ConfigError, match="has no rows"):
        validate(from_value(empty), _signature())


def test_load_npz_and_from_value_errors(tmp_path):
    path = tmp_path / "eval.npz"
    np.savez(path, **_good())
    loaded = load_npz(path)
    assert sorted(loaded.inputs) == ["ids", "pixels"] and loaded.labels is not None
    assert from_value(str(path)).source == str(path)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="Cannot read eval data"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="returned a list"):
        from_value([1, 2])
    assert from_value(None) is None
    data = EvalData({"x": np.arange(3)})
    assert from_value(data) is data
