"""A request's TensorProto -> numpy array, accepted and refused as TensorFlow's
``Tensor::FromProto`` does for TF Serving's ``GetInputValues`` ("tensor parsing error: <alias>").

What TF accepts (measured with ``tf.io.parse_tensor``, which calls ``FromProto``): a typed value
field with fewer values than the shape repeats its last value, with none is all zeros (empty
strings), with more is cut to the shape; a zero-element shape ignores any content. What it
refuses: a negative or overflowing shape, ``DT_INVALID`` or a dtype it cannot hold here,
``tensor_content`` whose length is not the shape's byte size, and a tensor it cannot allocate.
The last is decided here before anything is allocated: more than ``MAX_TENSOR_BYTES`` (the gRPC
front end's 1 GiB message limit) is refused at once, so a 20-byte request declaring shape
``[2**40, 1]`` costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server.status import ServingError, invalid
from pytest_tfserving.tensors import (
    DT_BOOL,
    DT_COMPLEX64,
    DT_COMPLEX128,
    DT_DOUBLE,
    DT_FLOAT,
    DT_HALF,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_STRING,
    DT_UINT8,
    DT_UINT16,
    DT_UINT32,
    DT_UINT64,
    NUMPY_BY_DTYPE,
    dtype_name,
)

MAX_TENSOR_BYTES = 1 << 30  # the gRPC front end's max_receive_message_length
_MAX_RANK = 254  # TensorShape::MaxDimensions()
_INT64_MAX = (1 << 63) - 1
_STRING_BYTES = 8  # what one empty string costs at least (a pointer): bounds zero-filled strings

# the typed field each dtype's values travel in when tensor_content is empty (tensor.proto)
_FIELD = {DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val",
          DT_UINT8: "int_val", DT_INT16: "int_val", DT_INT8: "int_val", DT_UINT16: "int_val",
          DT_HALF: "half_val", DT_INT64: "int64_val", DT_BOOL: "bool_val",
          DT_UINT32: "uint32_val", DT_UINT64: "uint64_val", DT_COMPLEX64: "scomplex_val",
          DT_COMPLEX128: "dcomplex_val", DT_STRING: "string_val"}


def _refuse(alias: str, detail: str) -> ServingError:
    return invalid(f"tensor parsing error: {alias} (input '{alias}': {detail})")


def parse_input(alias: str, proto: Any) -> np.ndarray[Any, Any]:
    """The array TF would build from ``proto``; INVALID_ARGUMENT naming ``alias`` otherwise."""
    shape = tuple([d.size for d in proto.tensor_shape.dim])
    count = _checked_count(alias, shape)
    dt = proto.dtype
    np_dtype = np.dtype(object) if dt == DT_STRING else NUMPY_BY_DTYPE.get(dt)
    if np_dtype is None:
        raise _refuse(alias, f"dtype {dtype_name(dt)} cannot be fed to this server; send one of "
                             f"{sorted(dtype_name(d) for d in (*NUMPY_BY_DTYPE, DT_STRING))}")
    itemsize = _STRING_BYTES if dt == DT_STRING else np_dtype.itemsize
    if count * itemsize > MAX_TENSOR_BYTES:
        raise _refuse(alias, f"tensor_shape {list(shape)} of {dtype_name(dt)} needs "
                             f"{count * itemsize} bytes, over the {MAX_TENSOR_BYTES}-byte limit; "
                             "send the shape of the values you send")
    if count == 0:
        return np.empty(shape, dtype=np_dtype)
    content = proto.tensor_content
    if content:
        if dt == DT_STRING or len(content) != count * itemsize:
            need = "strings go in string_val" if dt == DT_STRING else f"needs {count * itemsize}"
            raise _refuse(alias, f"tensor_content has {len(content)} bytes but shape "
                                 f"{list(shape)} of {dtype_name(dt)} {need}")
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    return _fill(_values(proto, dt, np_dtype), shape, count)


def _checked_count(alias: str, shape: tuple[int, ...]) -> int:
    if len(shape) > _MAX_RANK:
        raise _refuse(alias, f"tensor_shape has {len(shape)} dimensions, over TF's {_MAX_RANK}")
    if any(d < 0 for d in shape):
        raise _refuse(alias, f"tensor_shape {list(shape)} has a negative dimension; send sizes "
                             ">= 0")
    count = math.prod(shape)
    if count > _INT64_MAX:
        raise _refuse(alias, f"tensor_shape {list(shape)} has more than 2**63-1 elements")
    return count


def _values(proto: Any, dt: int, np_dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """The dtype's typed value field as a flat array (empty when it holds nothing)."""
    raw = getattr(proto, _FIELD[dt])
    if dt == DT_STRING:
        arr = np.empty(len(raw), dtype=object)
        arr[:] = list(raw)
        return arr
    if dt == DT_HALF:
        return np.asarray(raw, dtype=np.uint16).view(np.float16)
    if dt in (DT_COMPLEX64, DT_COMPLEX128):
        pairs = np.asarray(raw, dtype=np.float64)[:len(raw) // 2 * 2]
        return (pairs[0::2] + 1j * pairs[1::2]).astype(np_dtype)
    return np.asarray(raw, dtype=np_dtype)


def _fill(flat: np.ndarray[Any, Any], shape: tuple[int, ...], count: int
          ) -> np.ndarray[Any, Any]:
    """TF's FromProtoField: cut to ``count``, or pad with the last value (zeros when empty)."""
    if flat.size >= count:
        return flat[:count].reshape(shape)
    fill = flat[-1] if flat.size else (b"" if flat.dtype == object else 0)
    out = np.full(count, fill, dtype=flat.dtype)
    out[:flat.size] = flat
    return out.reshape(shape)
