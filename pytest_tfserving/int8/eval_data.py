"""The evaluation set: arrays named after the signature's inputs, plus optional labels.

It comes from ``--tfs-eval-data=FILE.npz`` or from a ``tfs_eval_data`` fixture the user
overrides in ``conftest.py`` (returning an ``EvalData`` or a mapping of arrays). ``validate``
checks it against the signature: every input present, dtypes of the same kind, shapes that fit,
one row per example everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import Signature, TensorSpec

if TYPE_CHECKING:
    from pytest_tfserving.int8.int8_options import Int8Options

Array = np.ndarray[Any, Any]
DEFAULT_LABEL_KEY = "labels"


@dataclass(frozen=True)
class EvalData:
    inputs: dict[str, Array]
    labels: Array | None = None
    source: str = "tfs_eval_data fixture"
    ignored: tuple[str, ...] = field(default=())  # arrays that are neither inputs nor labels

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def batches(self, batch_size: int) -> Iterator[dict[str, Array]]:
        for start in range(0, self.rows, batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.inputs.items()}

    def rows_as_samples(self, count: int) -> list[dict[str, Array]]:
        """The first ``count`` rows, one batch-of-1 dict each (a representative dataset)."""
        return [{k: v[i:i + 1] for k, v in self.inputs.items()}
                for i in range(min(count, self.rows))]


def load_npz(path: Path, label_key: str = DEFAULT_LABEL_KEY) -> EvalData:
    """Read a .npz; arrays other than ``label_key`` are inputs (checked by ``validate``)."""
    from pytest_tfserving.predict_requests import read_npz

    arrays = read_npz(Path(path), "eval data",
                      "Save it with numpy.savez(path, <input name>=array, ..., labels=array)")
    labels = arrays.pop(label_key, None)
    return EvalData(inputs=arrays, labels=labels, source=str(path))


def from_value(value: Any, label_key: str = DEFAULT_LABEL_KEY,
               source: str = "tfs_eval_data fixture") -> EvalData | None:
    """Normalise what a ``tfs_eval_data`` fixture returned: None, an EvalData, a path to a
    .npz, or a mapping of arrays (``label_key`` being the labels)."""
    if value is None or isinstance(value, EvalData):
        return value
    if isinstance(value, (str, Path)):
        return load_npz(Path(value), label_key)
    if isinstance(value, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in value.items()}
        labels = arrays.pop(label_key, None)
        return EvalData(inputs=arrays, labels=labels, source=source)
    raise ConfigError(
        f"The {source} returned a {type(value).__name__}; return None, a path to a .npz, "
        "an EvalData, or a dict of numpy arrays named after the signature's inputs plus "
        f"{label_key!r}."
    )


def _kind_ok(array: Array, spec: TensorSpec) -> bool:
    want = np.dtype(spec.numpy_dtype) if not spec.is_string else np.dtype(object)
    have: str = array.dtype.kind
    if spec.is_string:
        return have in "OSU"
    if want.kind in "iu":
        return have in "iu"
    if want.kind in "fb":
        return have == want.kind
    return bool(array.dtype == want)


def _cast(name: str, array: Array, spec: TensorSpec) -> Array:
    if spec.is_string:
        return array
    want = np.dtype(spec.numpy_dtype)
    if want.kind in "iu" and array.size:
        info = np.iinfo(want)
        if array.min() < info.min or array.max() > info.max:
            raise ConfigError(f"Eval input {name!r} has values in [{array.min()}, "
                              f"{array.max()}] that do not fit {want}; fix the data.")
    return array.astype(want, copy=False)


def validate(data: EvalData, signature: Signature) -> EvalData:
    """Check ``data`` against the signature; returns it with inputs cast to the exact dtypes."""
    wanted = ", ".join(s.describe() for s in signature.inputs.values())
    missing = sorted(set(signature.inputs) - set(data.inputs))
    if missing:
        raise ConfigError(
            f"Eval data from {data.source} lacks input(s) {missing} of signature "
            f"{signature.name!r} (it has {sorted(data.inputs) or 'no arrays'}). Name the arrays "
            f"after the signature's inputs: {wanted}; labels go in 'labels'."
        )
    inputs: dict[str, Array] = {}
    problems: list[str] = []
    for key, spec in signature.inputs.items():
        array = data.inputs[key]
        if not _kind_ok(array, spec):
            problems.append(f"input {key!r} has dtype {array.dtype} but the signature wants "
                            f"{spec.numpy_dtype} (save it with .astype('{spec.numpy_dtype}'))")
            continue
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                problems.append(f"input {key!r} has shape {list(array.shape)} (rank "
                                f"{array.ndim}) but the signature wants rank {len(spec.shape)}: "
                                f"{spec.describe()}")
                continue
            bad = [i for i, d in enumerate(spec.shape)
                   if d is not None and i > 0 and array.shape[i] != d]
            if bad:
                problems.append(f"input {key!r} has shape {list(array.shape)} but the signature "
                                f"wants {spec.describe()} (dimension {bad[0]} differs)")
                continue
        if array.ndim == 0:
            problems.append(f"input {key!r} is a scalar; it needs one row per example")
            continue
        try:
            inputs[key] = _cast(key, array, spec)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"Eval data from {data.source} does not fit signature "
                          f"{signature.name!r}: " + "; ".join(problems) + ".")
    rows = {k: len(v) for k, v in inputs.items()}
    if data.labels is not None:
        rows[DEFAULT_LABEL_KEY] = len(data.labels) if data.labels.ndim else 0
    if len(set(rows.values())) > 1:
        raise ConfigError(f"Eval data from {data.source} has arrays with different row counts "
                          f"{rows}; every input and the labels need one row per example.")
    if not rows or next(iter(rows.values())) == 0:
        raise ConfigError(f"Eval data from {data.source} has no rows; give at least one "
                          "example.")
    ignored = tuple(sorted(set(data.inputs) - set(signature.inputs)))
    return EvalData(inputs=inputs, labels=data.labels, source=data.source, ignored=ignored)


def default_eval_data(int8: Int8Options) -> EvalData | None:
    """What the default ``tfs_eval_data`` fixture returns: --tfs-eval-data loaded, or None."""
    if not isinstance(int8.eval_data, (str, Path)):
        return None
    return load_npz(Path(int8.eval_data), int8.label_key)
