"""Hypothesis strategies for a signature's inputs: property tests and load requests alike.

    from hypothesis import given
    from pytest_tfserving.strategies import tfs_inputs

    @given(inputs=tfs_inputs(signature))
    def test_answers(inputs): ...

``tfs_inputs(signature)`` draws ``{input_key: ndarray}`` with one batch size shared by every input
(dim 0), unknown inner dims drawn per input, and values in the ranges models usually accept
(ids >= 0, floats in [-1, 1], short byte strings).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import Signature, TensorSpec

__all__ = ["tensor_values", "tfs_inputs"]


def tensor_values(spec: TensorSpec) -> st.SearchStrategy[Any]:
    """Element strategy for one input's dtype."""
    dtype = spec.numpy_dtype
    if spec.is_string:
        return st.binary(max_size=16)
    if dtype == "bool":
        return st.booleans()
    if dtype.startswith("uint") or dtype.startswith("int"):
        info = np.iinfo(np.dtype(dtype))
        return st.integers(min_value=0, max_value=min(int(info.max), 1_000_000))
    if dtype in ("float16", "float32", "float64", "bfloat16"):
        if dtype == "float16":
            return st.floats(min_value=-1.0, max_value=1.0, width=16, allow_nan=False)
        if dtype == "float64":
            return st.floats(min_value=-1.0, max_value=1.0, width=64, allow_nan=False)
        return st.floats(min_value=-1.0, max_value=1.0, width=32, allow_nan=False)
    raise ConfigError(f"No strategy for input {spec.key!r} of dtype {spec.dtype}; pass "
                      f"overrides={{'{spec.key}': <strategy of arrays>}} to tfs_inputs.")


def _shape(spec: TensorSpec, batch: int, free: st.SearchStrategy[int],
           draw: Any) -> tuple[int, ...]:
    if spec.shape is None:
        return (batch,)
    return tuple((batch if i == 0 else draw(free)) if d is None else d
                 for i, d in enumerate(spec.shape))


def tfs_inputs(signature: Signature, batch_size: int | st.SearchStrategy[int] | None = None,
               max_free_dim: int = 4,
               overrides: dict[str, st.SearchStrategy[Any]] | None = None
               ) -> st.SearchStrategy[dict[str, np.ndarray[Any, Any]]]:
    """Inputs for ``signature``: a dict of arrays, one batch size across inputs.

    ``batch_size``: a fixed int, a strategy, or None (1..8). ``overrides`` replaces the strategy
    of individual inputs (each must draw a whole array).
    """
    if isinstance(batch_size, int):
        if batch_size < 1:
            raise ConfigError(f"tfs_inputs(batch_size={batch_size!r}): must be >= 1")
        batches: st.SearchStrategy[int] = st.just(batch_size)
    elif batch_size is None:
        batches = st.integers(min_value=1, max_value=8)
    else:
        batches = batch_size
    if max_free_dim < 1:
        raise ConfigError(f"tfs_inputs(max_free_dim={max_free_dim!r}): must be >= 1")
    free = st.integers(min_value=1, max_value=max_free_dim)
    extra = dict(overrides or {})
    unknown = sorted(set(extra) - set(signature.inputs))
    if unknown:
        raise ConfigError(f"tfs_inputs overrides name unknown input(s) {unknown}; signature "
                          f"{signature.name!r} has {sorted(signature.inputs)}.")

    @st.composite
    def draw_inputs(draw: Any) -> dict[str, np.ndarray[Any, Any]]:
        batch = draw(batches)
        out: dict[str, np.ndarray[Any, Any]] = {}
        for key, spec in signature.inputs.items():
            if key in extra:
                out[key] = np.asarray(draw(extra[key]))
                continue
            dtype = "float32" if spec.numpy_dtype == "bfloat16" else spec.numpy_dtype
            shape = _shape(spec, batch, free, draw)
            out[key] = draw(hnp.arrays(np.dtype(dtype), shape, elements=tensor_values(spec)))
        return out

    return draw_inputs()
