"""What the two TFLite runners share: LiteRT tensor details as the server's TensorInfo, and a
signature's name, method and model with one LiteRT interpreter per executor thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server.servable import TensorInfo
from pytest_tfserving.tensors import DTYPE_BY_NUMPY


def new_interpreter(model: bytes) -> Any:
    """A LiteRT interpreter over ``model`` (one thread: the executor threads run in parallel)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model, num_threads=1)


def tensor_info(key: str, detail: Mapping[str, Any]) -> TensorInfo:
    """A LiteRT tensor detail as the server's TensorInfo (-1 for dims the model leaves open)."""
    dtype = DTYPE_BY_NUMPY.get(np.dtype(detail["dtype"]).newbyteorder("="), 0)
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    return TensorInfo(key, dtype, tuple(int(d) for d in shape))


class LiteRTRunner:
    """What the TFLite runners share: a signature's name, method and model, and one LiteRT
    interpreter per executor thread (an interpreter is not thread-safe)."""

    def __init__(self, name: str, method_name: str, model: bytes, model_name: str = "") -> None:
        self.name = name
        self.method_name = method_name
        self.model_name = model_name
        self._model = model
        self._local = threading.local()

    def _per_thread(self, build: Callable[[Any], Any]) -> Any:
        """``build(interpreter)`` over this thread's own interpreter, made on first use."""
        value = getattr(self._local, "value", None)
        if value is None:
            value = self._local.value = build(new_interpreter(self._model))
        return value
