"""Serve ``model.tflite`` with LiteRT (``--prefer_tflite_model``), as TF Serving does.

The signatures come from the flatbuffer's own signature defs (the TFLite converter keeps the
SavedModel's signature keys and input/output names); method names and declared shapes are taken
from the SavedModel's ``signature_def`` beside it when present. A LiteRT interpreter is not
thread-safe, so each executor thread gets its own interpreter over the same model bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.bundled_server.servable import Arrays, Servable
from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.bundled_server.tflite_runner import LiteRTRunner, new_interpreter, tensor_info
from pytest_tfserving.model import PREDICT_METHOD

TFLITE_FILE = "model.tflite"


class TFLiteSignatureRunner(LiteRTRunner):
    """The SignatureRunner interface (name, method_name, inputs, outputs, run) over LiteRT."""

    def __init__(self, name: str, method_name: str, model: bytes, probe: Any,
                 model_name: str = "") -> None:
        super().__init__(name, method_name, model, model_name)
        runner = probe.get_signature_runner(name)
        self.inputs = {k: tensor_info(k, d) for k, d in runner.get_input_details().items()}
        self.outputs = {k: tensor_info(k, d) for k, d in runner.get_output_details().items()}

    def _runner(self) -> Any:
        return self._per_thread(lambda interpreter: interpreter.get_signature_runner(self.name))

    def run(self, arrays: Mapping[str, np.ndarray[Any, Any]],
            output_keys: tuple[str, ...] | None = None) -> Arrays:
        """Every output, or only ``output_keys`` (LiteRT computes them all either way)."""
        try:
            out = self._runner()(**{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        except (ValueError, RuntimeError) as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"TFLite signature {self.name!r}: {exc}") from None
        keys = out if output_keys is None else output_keys
        try:
            return {k: np.asarray(out[k]) for k in keys}
        except KeyError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {exc.args[0]} "
                               f"Outputs expected to be in the set "
                               f"{{{','.join(sorted(out))}}}.") from None


def load_tflite_servable(name: str, version: int, version_dir: Path) -> Servable:
    """A Servable over ``version_dir/model.tflite``; metadata from saved_model.pb if present."""
    model = (version_dir / TFLITE_FILE).read_bytes()
    probe = new_interpreter(model)
    signature_defs: Any = {}
    methods: dict[str, str] = {}
    if (version_dir / "saved_model.pb").is_file():
        from pytest_tfserving.model import read_saved_model, serving_meta_graph

        mg = serving_meta_graph(read_saved_model(version_dir), version_dir)
        signature_defs = mg.signature_def
        methods = {k: sd.method_name for k, sd in mg.signature_def.items()}
    keys = list(probe.get_signature_list())
    if not keys:  # an older converter's model: signatures from its metadata or its tensors
        from pytest_tfserving.bundled_server.tflite_tensors import tensor_runners

        runners, embedded = tensor_runners(model, probe, name)
        return Servable(name, version, version_dir, runners,  # type: ignore[arg-type]
                        signature_defs or embedded, probe)
    signatures = {key: TFLiteSignatureRunner(key, methods.get(key, PREDICT_METHOD), model, probe,
                                             name)
                  for key in keys}
    return Servable(name, version, version_dir, signatures,  # type: ignore[arg-type]
                    signature_defs, probe)
