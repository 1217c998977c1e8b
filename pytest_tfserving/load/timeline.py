"""The optional per-request timeline of a load run: recorded in each worker, merged in the parent.

With ``LoadSpec(timeline=True)`` every worker records, for each request it sent (warm-up included):
the intended send time (seconds since the common start), the latency in ms from that intended time
(also for failed requests: when the failure came back), the gRPC status code, and the
``model_spec.version`` of the PredictResponse (-1 when absent or the call failed). Each worker
writes its records to a file when it is done; the parent reads them into one ``Timeline`` sorted by
intended time (``LoadResult.timeline``).

The worker side (``TimelineRecorder``, ``response_version``) uses only the standard library; the
parent side imports numpy lazily.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

GRPC_CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                   "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                   "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                   "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
_HEADER = struct.Struct("<Q")  # record count; then 4 arrays of that length


def code_name(code: int) -> str:
    return GRPC_CODE_NAMES[code] if 0 <= code < len(GRPC_CODE_NAMES) else f"CODE_{code}"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _field(data: bytes, number: int) -> bytes | int | None:
    """The last occurrence of field ``number`` in a serialized message (protobuf wire format):
    bytes for a length-delimited field, int for a varint; None when absent."""
    pos = 0
    found: bytes | int | None = None
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            found = value if key >> 3 == number else found
        elif wire == 2:
            length, pos = _varint(data, pos)
            if key >> 3 == number:
                found = data[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return found


def response_version(message: bytes) -> int:
    """``model_spec.version.value`` of a serialized PredictResponse; -1 when absent or unreadable.

    PredictResponse: ``model_spec = 2`` (ModelSpec); ModelSpec: ``version = 2``
    (google.protobuf.Int64Value, whose ``value = 1``).
    """
    try:
        spec = _field(message, 2)
        if not isinstance(spec, bytes):
            return -1
        version = _field(spec, 2)
        if not isinstance(version, bytes):
            return -1
        value = _field(version, 1)
        if value is None:
            return 0  # Int64Value present with the default 0
        if not isinstance(value, int):
            return -1
        return value - (1 << 64) if value >= 1 << 63 else value
    except ValueError:
        return -1


class TimelineRecorder:
    """One worker's records, in the order the answers came back (compact arrays)."""

    def __init__(self) -> None:
        self.intended = array("d")
        self.latency_ms = array("d")
        self.code = array("b")
        self.version = array("q")

    def record(self, intended_s: float, latency_ms: float, code: int, version: int) -> None:
        self.intended.append(intended_s)
        self.latency_ms.append(latency_ms)
        self.code.append(max(-128, min(127, code)))
        self.version.append(version)

    def __len__(self) -> int:
        return len(self.intended)

    def write(self, path: Path) -> None:
        with open(path, "wb") as f:
            f.write(_HEADER.pack(len(self.intended)))
            for part in (self.intended, self.latency_ms, self.version, self.code):  # 8-byte first
                part.tofile(f)


@dataclass(frozen=True)
class Timeline:
    """Every request of a run, sorted by intended send time; parallel numpy arrays.

    - ``intended_s`` (float64): intended send time, seconds since the common start; requests with
      ``intended_s < warmup_s`` belong to the warm-up (``measured`` is False for them);
    - ``latency_ms`` (float64): from the intended send time to the answer (or the failure);
    - ``code`` (str): gRPC status code name, "OK", "UNAVAILABLE", ...;
    - ``version`` (int64): the answering ``model_spec.version``; -1 when absent or failed.
    """

    intended_s: NDArray[np.float64]
    latency_ms: NDArray[np.float64]
    code: NDArray[np.str_]
    version: NDArray[np.int64]
    warmup_s: float

    def __len__(self) -> int:
        return int(self.intended_s.shape[0])

    @property
    def measured(self) -> NDArray[np.bool_]:
        """True for requests intended at or after the warm-up (the measured phase)."""
        return self.intended_s >= self.warmup_s

    @property
    def ok(self) -> NDArray[np.bool_]:
        import numpy as np

        return np.asarray(self.code == "OK", dtype=np.bool_)

    @classmethod
    def read(cls, paths: Sequence[Path], warmup_s: float) -> Timeline:
        """Merge the workers' files (those that exist) into one timeline sorted by intended time."""
        import numpy as np

        parts: list[tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8],
                          NDArray[np.int64]]] = []
        for path in paths:
            if not path.exists():
                continue
            data = path.read_bytes()
            (n,) = _HEADER.unpack_from(data)
            pos = _HEADER.size
            intended = np.frombuffer(data, np.float64, n, pos)
            latency = np.frombuffer(data, np.float64, n, pos + 8 * n)
            version = np.frombuffer(data, np.int64, n, pos + 16 * n)
            code = np.frombuffer(data, np.int8, n, pos + 24 * n)
            parts.append((intended, latency, code, version))
        if not parts:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.str_),
                       np.zeros(0, dtype=np.int64), warmup_s)
        intended = np.concatenate([p[0] for p in parts])
        order = np.argsort(intended, kind="stable")
        codes = np.concatenate([p[2] for p in parts])[order]
        names = np.array([code_name(int(c)) for c in range(-128, 128)])
        return cls(intended[order], np.concatenate([p[1] for p in parts])[order],
                   names[codes.astype(np.int64) + 128],
                   np.concatenate([p[3] for p in parts])[order].astype(np.int64), warmup_s)
