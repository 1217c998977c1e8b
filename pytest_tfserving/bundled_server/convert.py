"""PredictRequest inputs -> arrays and arrays -> PredictResponse outputs, validated as TF Serving.

Messages follow ``servables/tensorflow/predict_util.cc`` where TF Serving has one (input count
mismatch, unknown output alias, "tensor parsing error: <alias>") and add what was expected and
what came. Inputs are read as TF's ``Tensor::FromProto`` reads them (``tensor_parse``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server.servable import Arrays, SignatureRunner, TensorInfo
from pytest_tfserving.bundled_server.status import invalid
from pytest_tfserving.bundled_server.tensor_parse import parse_input
from pytest_tfserving.tensors import (
    DT_STRING,
    DTYPE_BY_NUMPY,
    NUMPY_BY_DTYPE,
    from_numpy,
)

_LITTLE = sys.byteorder == "little"


def _set(keys: Iterable[str]) -> str:
    return "{" + ",".join(sorted(keys)) + "}"


def check_input_keys(inputs: Mapping[str, TensorInfo], sent: Iterable[str]) -> None:
    """Sent input keys must be the signature's exactly (TF Serving's messages)."""
    sent_keys = set(sent)
    expected = set(inputs)
    if sent_keys == expected:
        return
    extra, missing = sent_keys - expected, expected - sent_keys
    if len(sent_keys) != len(expected):
        raise invalid(
            f"input size does not match signature: {len(sent_keys)}!={len(expected)} "
            f"len({_set(sent_keys)}) != len({_set(expected)}). Sent extra: {_set(extra)}. "
            f"Missing but required: {_set(missing)}."
        )
    raise invalid(
        f"input tensor alias not found in signature: {','.join(sorted(extra))}. Inputs "
        f"expected to be in the set {_set(expected)}. Missing but required: {_set(missing)}."
    )


def shape_text(shape: Iterable[int] | None) -> str:
    return "unknown rank" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


def decode_inputs(runner: SignatureRunner, inputs: Mapping[str, Any]) -> Arrays:
    """Validate and decode ``request.inputs`` (zero-copy for ``tensor_content``)."""
    check_input_keys(runner.inputs, inputs.keys())
    out: Arrays = {}
    for key, proto in inputs.items():
        # no dtype check against the SignatureDef: TF Serving feeds by tensor name, and TF
        # itself rejects a value its tensor cannot take (the runner names the input then)
        arr = _content_view(proto)
        out[key] = parse_input(key, proto) if arr is None else arr
    return out


def _content_view(proto: Any) -> np.ndarray[Any, Any] | None:
    """The common case of ``parse_input`` (numeric ``tensor_content`` of the right length) without
    its generic checks; None sends everything else (and every error) to ``parse_input``."""
    content = proto.tensor_content
    if not content:
        return None
    np_dtype = NUMPY_BY_DTYPE.get(proto.dtype)
    if np_dtype is None:
        return None
    shape = tuple([d.size for d in proto.tensor_shape.dim])
    if min(shape, default=0) < 0 or len(content) != math.prod(shape) * np_dtype.itemsize:
        return None
    return np.frombuffer(content, dtype=np_dtype).reshape(shape)


def output_keys(runner: SignatureRunner, output_filter: Iterable[str]) -> tuple[str, ...]:
    """The outputs to return: the filter (validated, TF Serving's message) or all of them."""
    keys = tuple(output_filter)
    if not keys:
        return tuple(runner.outputs)
    seen: set[str] = set()
    for alias in keys:
        if alias not in runner.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {_set(runner.outputs)}."
            )
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return keys


# Tensor::AsProtoField: the typed repeated field for each numpy kind (TF Serving's default answer)
_FIELD_BY_NUMPY: dict[str, str] = {
    "float32": "float_val", "float64": "double_val", "int32": "int_val", "int16": "int_val",
    "int8": "int_val", "uint8": "int_val", "uint16": "int_val", "int64": "int64_val",
    "uint32": "uint32_val", "uint64": "uint64_val", "bool": "bool_val",
    "complex64": "scomplex_val", "complex128": "dcomplex_val",
}


def _typed_fields(arr: np.ndarray[Any, Any], proto: Any) -> bool:
    """Write ``arr`` into its typed repeated field, as TF Serving answers by default; False
    when the dtype has no such field here (the caller falls back to tensor_content)."""
    dt = DTYPE_BY_NUMPY.get(arr.dtype.newbyteorder("="))
    name = _FIELD_BY_NUMPY.get(arr.dtype.name)
    if dt is None or name is None:
        return False
    proto.dtype = dt
    flat = arr.reshape(-1)
    if arr.dtype.kind == "c":
        flat = np.stack([flat.real, flat.imag], axis=-1).reshape(-1)
    getattr(proto, name).extend(flat.tolist())
    for d in arr.shape:
        proto.tensor_shape.dim.add().size = d
    return True


def encode_outputs(outputs: Arrays, keys: Iterable[str], target: Any,
                   tensor_content: bool = False) -> None:
    """Write the selected outputs into ``response.outputs`` (a TensorProto map): typed fields
    (``float_val`` ...) as TF Serving does, or ``tensor_content`` with
    ``--enable_serialization_as_tensor_content``."""
    for key in keys:
        arr = outputs[key]
        proto = target[key]
        dt = DTYPE_BY_NUMPY.get(arr.dtype) if _LITTLE and arr.dtype.isnative else None
        if dt is None or dt == DT_STRING:
            from_numpy(arr, proto=proto)
            continue
        if not tensor_content and _typed_fields(arr, proto):
            continue
        # what from_numpy writes for a native little-endian numeric array, minus its checks
        proto.dtype = dt
        proto.tensor_content = arr.tobytes()
        dims = proto.tensor_shape.dim
        for d in arr.shape:
            dims.add().size = d
