"""Metrics on predictions (numpy only) and TFMA-style change thresholds.

Every metric is ``fn(target, predictions) -> float``. With labels, ``target`` is the labels and
the float and INT8 models are each scored against them. Without labels (label-free agreement),
``target`` is the float model's output: the float side then scores against itself (agreement
1.0, difference 0.0) and the INT8 side measures how far quantization moved the output.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pytest_tfserving.errors import ConfigError

Array = np.ndarray[Any, Any]
Direction = Literal["higher", "lower"]
MetricFn = Callable[[Array, Array], float]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    direction: Direction
    labels: bool  # True: scored against labels; False: INT8 output against the float output
    default_max_delta: float | None = None
    default_max_rel_delta: float | None = None

    def __call__(self, target: Array, predictions: Array) -> float:
        return float(self.fn(target, predictions))


# --- helpers -------------------------------------------------------------------------------

def _as_2d_scores(predictions: Array, what: str) -> Array:
    if predictions.ndim != 2 or predictions.shape[1] < 2:
        raise ConfigError(
            f"{what} needs class scores shaped [batch, classes>=2]; the output has shape "
            f"{list(predictions.shape)}. Pick a scores/probabilities output with "
            "--tfs-int8-output=NAME or another metric (--tfs-int8-metric=...)."
        )
    return predictions


def _class_ids(values: Array) -> Array:
    """Class ids from class scores [N,C], one-hot labels, or ids [N] / [N,1]."""
    if values.ndim == 2 and values.shape[1] > 1:
        return np.asarray(np.argmax(values, axis=1))
    flat = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values
    if flat.dtype.kind == "f":
        if np.all((flat >= 0) & (flat <= 1)):
            return (flat >= 0.5).astype(np.int64)  # one binary probability per row
        return np.rint(flat).astype(np.int64)
    return flat.astype(np.int64)


def _column(values: Array, what: str) -> Array:
    """One value per row: [N], [N,1], or the positive-class column of [N,2]."""
    if values.ndim == 1:
        return values.astype(np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0].astype(np.float64)
    if values.ndim == 2 and values.shape[1] == 2:
        return values[:, 1].astype(np.float64)
    raise ConfigError(f"{what} needs one value per row ([batch], [batch,1] or a binary "
                      f"[batch,2]); got shape {list(values.shape)}.")


def _same_rows(target: Array, predictions: Array) -> None:
    if len(target) != len(predictions):
        raise ConfigError(f"labels have {len(target)} rows but the model returned "
                          f"{len(predictions)}; the eval arrays must have one row per example.")


# --- labelled metrics ----------------------------------------------------------------------

def accuracy(labels: Array, predictions: Array) -> float:
    _same_rows(labels, predictions)
    return float(np.mean(_class_ids(labels) == _class_ids(predictions)))


def top_k_accuracy(k: int) -> MetricFn:
    def fn(labels: Array, predictions: Array) -> float:
        _same_rows(labels, predictions)
        scores = _as_2d_scores(predictions, f"top_k_accuracy (k={k})")
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.mean(np.any(top == _class_ids(labels)[:, None], axis=1)))
    return fn


def auc(labels: Array, predictions: Array) -> float:
    """Binary ROC AUC (Mann-Whitney U with tie correction)."""
    _same_rows(labels, predictions)
    y = _column(labels, "auc labels")
    scores = _column(predictions, "auc")
    if not np.all((y == 0) | (y == 1)):
        raise ConfigError(f"auc needs binary labels 0/1; found values {np.unique(y)[:10]}. "
                          "Use accuracy/top_k_accuracy for multi-class models.")
    positives = int(np.sum(y == 1))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ConfigError(f"auc needs both classes in the labels; found {positives} positive "
                          f"and {negatives} negative rows. Use a larger eval set.")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(sorted_scores):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = float(np.sum(ranks[y == 1])) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def _regression_pair(target: Array, predictions: Array) -> tuple[Array, Array]:
    _same_rows(target, predictions)
    t = target.reshape(len(target), -1).astype(np.float64)
    p = predictions.reshape(len(predictions), -1).astype(np.float64)
    if t.shape != p.shape:
        raise ConfigError(f"labels have shape {list(target.shape)} but the output has shape "
                          f"{list(predictions.shape)}; they must match element for element.")
    return t, p


def mae(labels: Array, predictions: Array) -> float:
    t, p = _regression_pair(labels, predictions)
    return float(np.mean(np.abs(t - p)))


def rmse(labels: Array, predictions: Array) -> float:
    t, p = _regression_pair(labels, predictions)
    return float(math.sqrt(np.mean((t - p) ** 2)))


# --- label-free: INT8 output against the float output ---------------------------------------

def agreement(reference: Array, predictions: Array) -> float:
    """Top-1 agreement: the share of rows where both models pick the same class."""
    _same_rows(reference, predictions)
    return float(np.mean(_class_ids(reference) == _class_ids(predictions)))


def max_abs_diff(reference: Array, predictions: Array) -> float:
    t, p = _regression_pair(reference, predictions)
    return float(np.max(np.abs(t - p), initial=0.0))


def mean_abs_diff(reference: Array, predictions: Array) -> float:
    return mae(reference, predictions)


def cosine(reference: Array, predictions: Array) -> float:
    """Mean per-row cosine similarity (rows that are zero in both count as 1)."""
    t, p = _regression_pair(reference, predictions)
    dot = np.sum(t * p, axis=1)
    norms = np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1)
    both_zero = norms == 0
    sims = np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))
    return float(np.mean(sims))


# --- the table -------------------------------------------------------------------------------

LABELLED = ("accuracy", "top_k_accuracy", "auc", "mae", "rmse")
LABEL_FREE = ("agreement", "max_abs_diff", "mean_abs_diff", "cosine")


def builtin(name: str, top_k: int = 5) -> Metric:
    table: dict[str, Metric] = {
        "accuracy": Metric("accuracy", accuracy, "higher", True, default_max_delta=0.01),
        "top_k_accuracy": Metric(f"top_{top_k}_accuracy", top_k_accuracy(top_k), "higher", True,
                                 default_max_delta=0.01),
        "auc": Metric("auc", auc, "higher", True, default_max_delta=0.01),
        "mae": Metric("mae", mae, "lower", True, default_max_rel_delta=0.05),
        "rmse": Metric("rmse", rmse, "lower", True, default_max_rel_delta=0.05),
        "agreement": Metric("agreement", agreement, "higher", False, default_max_delta=0.01),
        "cosine": Metric("cosine", cosine, "higher", False, default_max_delta=0.01),
        "max_abs_diff": Metric("max_abs_diff", max_abs_diff, "lower", False),
        "mean_abs_diff": Metric("mean_abs_diff", mean_abs_diff, "lower", False),
    }
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"Unknown INT8 metric {name!r}. Use one of {', '.join(LABELLED + LABEL_FREE)}, "
            "'auto', 'module:function' (a callable fn(target, predictions) -> float), or pass "
            "a callable as metric= to @pytest.mark.tfs_int8_delta."
        ) from None


def auto_metric(has_labels: bool, sample_output: Array) -> str:
    """accuracy for class scores / class ids, auc for one binary probability, rmse otherwise;
    without labels: agreement for classifiers, cosine otherwise."""
    classifier = (sample_output.ndim == 2 and sample_output.shape[1] > 1
                  and sample_output.dtype.kind == "f")
    if not has_labels:
        return "agreement" if classifier or sample_output.dtype.kind in "iub" else "cosine"
    if classifier or sample_output.dtype.kind in "iub":
        return "accuracy"
    return "rmse"


def load_callable(spec: str) -> MetricFn:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"Custom metric {spec!r} must be 'module:function'.")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot load custom metric {spec!r}: {exc}. Give an importable "
                          "'module:function' (the module on sys.path, e.g. in conftest's dir).")\
            from None
    if not callable(fn):
        raise ConfigError(f"Custom metric {spec!r} is not callable.")
    return fn  # type: ignore[no-any-return]


def resolve_metric(choice: str | MetricFn, has_labels: bool, sample_output: Array,
                   top_k: int = 5, direction: str = "auto") -> Metric:
    """The metric for a marker argument / option value; custom callables take ``direction``
    (default higher) and count as labelled when labels exist."""
    if callable(choice) or (isinstance(choice, str) and ":" in choice):
        fn = choice if callable(choice) else load_callable(choice)
        name = getattr(fn, "__name__", "custom")
        chosen: Direction = "lower" if direction == "lower" else "higher"
        return Metric(name, fn, chosen, has_labels)
    name = auto_metric(has_labels, sample_output) if choice == "auto" else choice
    metric = builtin(name, top_k)
    if metric.labels and not has_labels:
        raise ConfigError(
            f"Metric {metric.name!r} needs labels but the eval data has none. Add a 'labels' "
            f"array to the eval data, or use a label-free metric: {', '.join(LABEL_FREE)}."
        )
    if direction in ("higher", "lower") and direction != metric.direction:
        metric = Metric(metric.name, metric.fn, direction, metric.labels,  # type: ignore[arg-type]
                        metric.default_max_delta, metric.default_max_rel_delta)
    return metric


# --- change thresholds (TFMA GenericChangeThreshold semantics) -------------------------------

@dataclass(frozen=True)
class ChangeThreshold:
    """Allowed worsening from float to INT8. ``max_delta``: absolute, in metric units;
    ``max_rel_delta``: relative to the float value. Both must hold when both are set."""

    direction: Direction
    max_delta: float | None = None
    max_rel_delta: float | None = None

    def worsening(self, baseline: float, candidate: float) -> tuple[float, float]:
        """(absolute, relative) worsening; negative means INT8 is better."""
        worse = baseline - candidate if self.direction == "higher" else candidate - baseline
        if baseline != 0:
            rel = worse / abs(baseline)
        else:
            rel = 0.0 if worse <= 0 else math.inf
        return worse, rel

    def violations(self, baseline: float, candidate: float) -> list[str]:
        worse, rel = self.worsening(baseline, candidate)
        eps = 1e-12
        out: list[str] = []
        if self.max_delta is not None and worse > self.max_delta + eps:
            out.append(f"worse by {worse:.4g} (absolute), allowed {self.max_delta:g}")
        if self.max_rel_delta is not None and rel == math.inf:
            out.append(f"worse by {worse:.4g} from a float value of 0, which no relative bound "
                       f"(allowed {self.max_rel_delta:.2%}) can admit; bound it in the "
                       "metric's units instead: --tfs-int8-max-delta (max_delta= on the marker)")
        elif self.max_rel_delta is not None and rel > self.max_rel_delta + eps:
            out.append(f"worse by {rel:.2%} (relative), allowed {self.max_rel_delta:.2%}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"direction": f"{self.direction}_is_better", "max_delta": self.max_delta,
                "max_rel_delta": self.max_rel_delta}


def make_threshold(metric: Metric, max_delta: float | None,
                   max_rel_delta: float | None) -> ChangeThreshold:
    for name, value in (("max_delta", max_delta), ("max_rel_delta", max_rel_delta)):
        if value is not None and (not isinstance(value, (int, float)) or value < 0
                                  or math.isnan(value)):
            raise ConfigError(f"{name}={value!r} must be a number >= 0 (the allowed worsening "
                              f"of {metric.name} from float to INT8).")
    if max_delta is None and max_rel_delta is None:
        max_delta, max_rel_delta = metric.default_max_delta, metric.default_max_rel_delta
    if max_delta is None and max_rel_delta is None:
        raise ConfigError(
            f"Metric {metric.name!r} has no default bound: set --tfs-int8-max-delta (absolute, "
            "in the metric's units) and/or --tfs-int8-max-rel-delta (fraction of the float "
            "value), or max_delta=/max_rel_delta= on the marker."
        )
    return ChangeThreshold(metric.direction,
                           None if max_delta is None else float(max_delta),
                           None if max_rel_delta is None else float(max_rel_delta))
