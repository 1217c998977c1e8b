"""Call a SavedModel's signatures in this process: the reference the served answers must equal."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=4)
def load_signatures(version_dir: Path) -> Any:
    """The loaded SavedModel's ``signatures`` mapping (kept alive with its object)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir), tags=["serve"])
    signatures = loaded.signatures
    signatures._tfs_owner = loaded  # keep variables alive as long as the signatures
    return signatures


@functools.lru_cache(maxsize=4)
def load_tflite(version_dir: Path) -> Any:
    from pytest_tfserving.server.tflite_servable import load_tflite_servable

    return load_tflite_servable("reference", 1, version_dir)


def call_tflite_signature(version_dir: Path, signature_name: str,
                          inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The same call on ``version_dir/model.tflite`` in LiteRT (what --prefer_tflite serves)."""
    runner = load_tflite(version_dir).signatures[signature_name]
    result: dict[str, np.ndarray[Any, Any]] = runner.run(
        {k: np.asarray(v) for k, v in inputs.items()})
    return result


def call_signature(version_dir: Path, signature_name: str,
                   inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    import tensorflow as tf

    function = load_signatures(version_dir)[signature_name]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    outputs = function(**tensors)
    return {k: v.numpy() for k, v in outputs.items()}
