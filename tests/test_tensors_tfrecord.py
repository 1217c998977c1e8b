"""numpy <-> TensorProto conversion and the TFRecord reader/writer."""

import numpy as np
import pytest

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tensors import TensorConversionError, from_numpy, to_numpy
from pytest_tfserving.tfrecord import count_records, read_records, write_records


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        np.array([True, False]),
        np.array([b"a", b"bc", b""], dtype=object),
        np.array(2.5, dtype=np.float64),
        np.zeros((0, 4), dtype=np.float32),
    ],
)
def test_round_trip(array):
    back = to_numpy(from_numpy(array))
    assert back.shape == array.shape
    assert back.dtype == array.dtype or array.dtype == object
    assert np.array_equal(back, array)


def test_numeric_decode_is_zero_copy_view():
    proto = from_numpy(np.ones((128, 8), dtype=np.float32))
    decoded = to_numpy(proto)
    assert not decoded.flags.owndata  # a view on the proto's bytes, not a copy


def test_repeated_field_encoding_and_splat():
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=9)  # DT_INT64
    proto.tensor_shape.dim.add().size = 3
    proto.int64_val.extend([7])
    assert to_numpy(proto).tolist() == [7, 7, 7]
    proto.int64_val.extend([8])
    with pytest.raises(TensorConversionError, match="int64_val holds 2 values"):
        to_numpy(proto)


def test_wrong_content_size_is_named():
    proto = from_numpy(np.ones(4, dtype=np.float32))
    proto.tensor_shape.dim[0].size = 5
    with pytest.raises(TensorConversionError, match="tensor_content has 16 bytes"):
        to_numpy(proto)


def test_tfrecord_round_trip_matches_tensorflow(tmp_path):
    import tensorflow as tf

    path = tmp_path / "records"
    payloads = [b"", b"x", b"hello" * 100]
    assert write_records(path, payloads) == 3
    assert list(read_records(path)) == payloads
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads
    assert count_records(path) == 3


def test_tfrecord_corruption_is_reported(tmp_path):
    path = tmp_path / "records"
    write_records(path, [b"abc", b"def"])
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="record 1 has a bad data checksum"):
        list(read_records(path))
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="record 0 is truncated"):
        list(read_records(path))
