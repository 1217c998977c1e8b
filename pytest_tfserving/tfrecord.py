"""A small TFRecord reader/writer (length + masked CRC32C framing), no TensorFlow needed."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from pytest_tfserving.errors import ConfigError

_CRC_TABLE: list[int] = []


def _table() -> list[int]:
    if not _CRC_TABLE:
        poly = 0x82F63B78
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
            _CRC_TABLE.append(crc)
    return _CRC_TABLE


def crc32c(data: bytes) -> int:
    try:
        import google_crc32c

        return int(google_crc32c.value(data))
    except ImportError:
        pass
    table = _table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: Path, limit: int | None = None, verify: bool = True) -> Iterator[bytes]:
    """Yield each record; a truncated or corrupt file raises ConfigError naming the record."""
    with open(path, "rb") as f:
        index = 0
        while limit is None or index < limit:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ConfigError(f"{path}: record {index} is truncated (incomplete header); "
                                  "not a TFRecord file, or it was cut off while writing.")
            length, length_crc = struct.unpack("<QI", header)
            if verify and masked_crc(header[:8]) != length_crc:
                raise ConfigError(f"{path}: record {index} has a bad length checksum; the file "
                                  "is not a TFRecord file or is corrupt.")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ConfigError(f"{path}: record {index} is truncated ({len(data)} of "
                                  f"{length} bytes).")
            if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise ConfigError(f"{path}: record {index} has a bad data checksum (corrupt).")
            yield data
            index += 1


def count_records(path: Path) -> int:
    return sum(1 for _ in read_records(path, verify=False))


def write_records(path: Path, records: Iterable[bytes]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as f:
        for data in records:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc(header)))
            f.write(data + struct.pack("<I", masked_crc(data)))
            count += 1
    return count
