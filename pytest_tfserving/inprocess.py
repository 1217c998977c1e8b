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


def call_signature(version_dir: Path, signature_name: str,
                   inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    import tensorflow as tf

    function = load_signatures(version_dir)[signature_name]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    outputs = function(**tensors)
    return {k: v.numpy() for k, v in outputs.items()}
