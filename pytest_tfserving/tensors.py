"""numpy <-> TensorProto without TensorFlow's slow generic helpers.

Numeric tensors travel as ``tensor_content`` (raw little-endian bytes): decoding is a zero-copy
``np.frombuffer`` view, encoding one ``tobytes``. Repeated-field encodings (``int64_val`` ...)
sent by other clients are decoded too. Strings use ``string_val``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# DataType enum values (tensorflow/core/framework/types.proto); kept here so that this module
# needs no TensorFlow import.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_COMPLEX128, DT_HALF = (
    8, 9, 10, 14, 17, 18, 19)
DT_UINT32, DT_UINT64 = 22, 23

NUMPY_BY_DTYPE: dict[int, np.dtype[Any]] = {
    DT_FLOAT: np.dtype("<f4"), DT_DOUBLE: np.dtype("<f8"), DT_INT32: np.dtype("<i4"),
    DT_UINT8: np.dtype("u1"), DT_INT16: np.dtype("<i2"), DT_INT8: np.dtype("i1"),
    DT_COMPLEX64: np.dtype("<c8"), DT_INT64: np.dtype("<i8"), DT_BOOL: np.dtype("?"),
    DT_UINT16: np.dtype("<u2"), DT_COMPLEX128: np.dtype("<c16"), DT_HALF: np.dtype("<f2"),
    DT_UINT32: np.dtype("<u4"), DT_UINT64: np.dtype("<u8"),
}
DTYPE_BY_NUMPY: dict[np.dtype[Any], int] = {v.newbyteorder("="): k
                                             for k, v in NUMPY_BY_DTYPE.items()}
DTYPE_NAMES = {
    DT_FLOAT: "DT_FLOAT", DT_DOUBLE: "DT_DOUBLE", DT_INT32: "DT_INT32", DT_UINT8: "DT_UINT8",
    DT_INT16: "DT_INT16", DT_INT8: "DT_INT8", DT_STRING: "DT_STRING", DT_COMPLEX64: "DT_COMPLEX64",
    DT_INT64: "DT_INT64", DT_BOOL: "DT_BOOL", DT_BFLOAT16: "DT_BFLOAT16", DT_UINT16: "DT_UINT16",
    DT_COMPLEX128: "DT_COMPLEX128", DT_HALF: "DT_HALF", DT_UINT32: "DT_UINT32",
    DT_UINT64: "DT_UINT64",
}
DTYPE_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}

# Which repeated field carries values of each dtype when tensor_content is empty.
_VAL_FIELD = {
    DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val", DT_UINT8: "int_val",
    DT_INT16: "int_val", DT_INT8: "int_val", DT_UINT16: "int_val", DT_HALF: "half_val",
    DT_INT64: "int64_val", DT_BOOL: "bool_val", DT_UINT32: "uint32_val",
    DT_UINT64: "uint64_val", DT_COMPLEX64: "scomplex_val", DT_COMPLEX128: "dcomplex_val",
}


class TensorConversionError(ValueError):
    """A TensorProto that cannot become an array (or the reverse); the message names why."""


def dtype_name(dtype_enum: int) -> str:
    return DTYPE_NAMES.get(dtype_enum, f"DataType({dtype_enum})")


def to_numpy(proto: Any) -> np.ndarray[Any, Any]:
    """Decode a TensorProto; numeric ``tensor_content`` is a read-only zero-copy view."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise TensorConversionError(f"tensor_shape {list(shape)} has a negative dimension")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dt = proto.dtype
    if dt == DT_STRING:
        vals = list(proto.string_val)
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        return _fill(arr, shape, count, "string_val")
    np_dtype = NUMPY_BY_DTYPE.get(dt)
    if np_dtype is None:
        raise TensorConversionError(f"dtype {dtype_name(dt)} is not supported")
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * np_dtype.itemsize:
            raise TensorConversionError(
                f"tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"{dtype_name(dt)} needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    field = _VAL_FIELD[dt]
    raw = getattr(proto, field)
    if dt == DT_HALF:
        arr = np.asarray(raw, dtype=np.uint16).view(np.float16)
    elif dt in (DT_COMPLEX64, DT_COMPLEX128):
        pairs = np.asarray(raw, dtype=np.float64 if dt == DT_COMPLEX128 else np.float32)
        arr = pairs[0::2] + 1j * pairs[1::2]
        arr = arr.astype(np_dtype)
    else:
        arr = np.asarray(raw, dtype=np_dtype)
    return _fill(arr, shape, count, field)


def _fill(arr: np.ndarray[Any, Any], shape: tuple[int, ...], count: int,
          field: str) -> np.ndarray[Any, Any]:
    if arr.size == count:
        return arr.reshape(shape)
    if arr.size == 1 and count > 1:  # TF's splat encoding: one value fills the shape
        return np.full(shape, arr[0], dtype=arr.dtype)
    if arr.size == 0 and count == 0:
        return arr.reshape(shape)
    raise TensorConversionError(
        f"{field} holds {arr.size} values but tensor_shape {list(shape)} needs {count}"
    )


def from_numpy(value: Any, proto: Any = None, dtype: str | None = None) -> Any:
    """Encode an array-like into ``proto`` (a fresh TensorProto when None) and return it."""
    if proto is None:
        from tensorflow.core.framework import tensor_pb2

        proto = tensor_pb2.TensorProto()
    arr = np.asarray(value, dtype=dtype)
    if arr.dtype.kind in ("U", "S", "O"):
        proto.dtype = DT_STRING
        flat = arr.reshape(-1)
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat
        )
    else:
        native = arr.dtype.newbyteorder("=")
        dt = DTYPE_BY_NUMPY.get(native)
        if dt is None:
            raise TensorConversionError(f"numpy dtype {arr.dtype} has no TensorFlow DataType")
        proto.dtype = dt
        proto.tensor_content = np.ascontiguousarray(arr, dtype=NUMPY_BY_DTYPE[dt]).tobytes()
    for d in arr.shape:
        proto.tensor_shape.dim.add().size = d
    return proto
