"""TFLite models without TFLite signature runners, served as TF Serving's ``TfLiteSession`` does.

Older converters wrote no signature list. TF Serving then takes the signature from the model's
``signature_defs_metadata`` (a FlexBuffer map of signature key -> serialized SignatureDef, which
names the TFLite tensors behind each input and output key) or, failing that, builds
``serving_default`` from the subgraph's input and output tensors, keyed by tensor name. Fed
tensors are resized to the request's shape before each call, as TfLiteSession does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.bundled_server.servable import Arrays
from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.bundled_server.tflite_runner import LiteRTRunner, tensor_info
from pytest_tfserving.model import DEFAULT_SIGNATURE, PREDICT_METHOD

METADATA_KEY = b"signature_defs_metadata"


def _strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def embedded_signature_defs(model: bytes) -> dict[str, Any]:
    """The SignatureDefs a TF Serving exporter stored in the model's metadata ({} if none)."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema

    parsed = schema.ModelT.InitFromPackedBuf(model, 0)
    for entry in parsed.metadata or []:
        if entry.name != METADATA_KEY:
            continue
        root = flexbuffers.GetRoot(bytes(parsed.buffers[entry.buffer].data)).AsMap
        out: dict[str, Any] = {}
        for key, value in zip(root.Keys, root.Values):  # noqa: B905 - a map's two halves
            sd = meta_graph_pb2.SignatureDef()
            sd.ParseFromString(bytes(value.AsStringBytes))
            out[key.AsKey] = sd
        return out
    return {}


class TFLiteTensorRunner(LiteRTRunner):
    """The SignatureRunner interface over tensor indices of the interpreter's main subgraph."""

    def __init__(self, name: str, method_name: str, model: bytes, probe: Any,
                 keys_to_tensors: tuple[dict[str, str], dict[str, str]],
                 model_name: str = "") -> None:
        super().__init__(name, method_name, model, model_name)
        by_name = {d["name"]: d for d in [*probe.get_input_details(),
                                          *probe.get_output_details()]}
        in_keys, out_keys = keys_to_tensors
        missing = [t for t in [*in_keys.values(), *out_keys.values()] if t not in by_name]
        if missing:
            raise ValueError(f"signature {name!r} names tensors {missing} that the TFLite model "
                             f"does not have (it has {sorted(by_name)})")
        self._in = {k: int(by_name[t]["index"]) for k, t in in_keys.items()}
        self._out = {k: int(by_name[t]["index"]) for k, t in out_keys.items()}
        self.inputs = {k: tensor_info(k, by_name[t]) for k, t in in_keys.items()}
        self.outputs = {k: tensor_info(k, by_name[t]) for k, t in out_keys.items()}

    def _interpreter(self) -> Any:
        return self._per_thread(_allocated)

    def run(self, arrays: Mapping[str, np.ndarray[Any, Any]],
            output_keys: tuple[str, ...] | None = None) -> Arrays:
        interp = self._interpreter()
        try:
            resized = False
            for key, index in self._in.items():
                arr = np.ascontiguousarray(arrays[key])
                if tuple(interp.get_tensor_details()[index]["shape"]) != arr.shape:
                    interp.resize_tensor_input(index, list(arr.shape))
                    resized = True
            if resized:
                interp.allocate_tensors()
            for key, index in self._in.items():
                interp.set_tensor(index, np.ascontiguousarray(arrays[key]))
            interp.invoke()
            keys = tuple(self._out) if output_keys is None else output_keys
            return {k: np.array(interp.get_tensor(self._out[k])) for k in keys}
        except KeyError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"TFLite signature {self.name!r}: unknown key {exc}") from None
        except (ValueError, RuntimeError) as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"TFLite signature {self.name!r}: {exc}") from None


def _allocated(interpreter: Any) -> Any:
    interpreter.allocate_tensors()
    return interpreter


def tensor_runners(model: bytes, probe: Any, model_name: str
                   ) -> tuple[dict[str, TFLiteTensorRunner], Any]:
    """Runners (and the SignatureDef map for metadata) of a model without a signature list."""
    from tensorflow.core.protobuf import meta_graph_pb2

    defs = embedded_signature_defs(model)
    if not defs:
        sd = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for detail, target in ((probe.get_input_details(), sd.inputs),
                               (probe.get_output_details(), sd.outputs)):
            for d in detail:
                target[_strip(d["name"])].name = d["name"]
        defs = {DEFAULT_SIGNATURE: sd}
    runners = {
        key: TFLiteTensorRunner(
            key, sd.method_name or PREDICT_METHOD, model, probe,
            ({k: _strip(v.name) for k, v in sd.inputs.items()},
             {k: _strip(v.name) for k, v in sd.outputs.items()}),
            model_name)
        for key, sd in defs.items()
    }
    return runners, defs
