"""HTTP/2 framing, HPACK and gRPC status codes for gRPC unary calls (``h2grpc.py`` uses them).

The request header block is encoded once per connection with HPACK literals that add no
dynamic-table entry (static-table indexes where they exist), so the same bytes serve every call;
response header blocks are decoded by ``ResponseHeaders``, which caches decoded blocks once the
server's table is down to 0 (then a block means the same whatever came before it).
"""

from __future__ import annotations

import struct
from urllib.parse import unquote

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FLAG_END_STREAM = FLAG_ACK = 0x1
FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x4, 0x8, 0x20
SETTING_HEADER_TABLE_SIZE, SETTING_ENABLE_PUSH, SETTING_MAX_CONCURRENT_STREAMS, \
    SETTING_INITIAL_WINDOW_SIZE, SETTING_MAX_FRAME_SIZE = 1, 2, 3, 4, 5
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65_535
REPLENISH_AT = 1 << 28  # received bytes after which our connection window is topped up again
LAST_STREAM_ID = (1 << 31) - 1
FRAME = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id
U32 = struct.Struct(">I")

GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = \
    0, 1, 2, 4, 8, 13, 14
# HTTP status -> gRPC code when a response carries no grpc-status (gRPC's http-grpc-status mapping)
HTTP_TO_GRPC = {400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: UNAVAILABLE, 502: UNAVAILABLE,
                 503: UNAVAILABLE, 504: UNAVAILABLE}
REFUSED_STREAM = 0x7
# RST_STREAM / GOAWAY error code -> gRPC code (as grpc's clients map them)
RST_TO_GRPC = {REFUSED_STREAM: UNAVAILABLE, 0x8: CANCELLED, 0xB: RESOURCE_EXHAUSTED, 0xC: 7}
CACHE_MAX = 512
MAX_REFUSALS = 5  # a call refused this often fails UNAVAILABLE

def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FRAME.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_string(text: str) -> bytes:
    raw = text.encode("ascii")
    return _hpack_int(len(raw), 7, 0) + raw


def request_header_block(authority: str, path: str, timeout_s: float,
                         user_agent: str = "pytest-tfserving") -> bytes:
    """HPACK block for a gRPC unary request: static-table indexes and literals without indexing
    (no dynamic-table entry is added, so the same bytes serve every request)."""
    block = bytearray(b"\x83\x86")  # :method POST, :scheme http (static entries 3 and 6)
    block += _hpack_int(4, 4, 0) + _hpack_string(path)  # :path, literal with indexed name
    block += _hpack_int(1, 4, 0) + _hpack_string(authority)  # :authority
    block += _hpack_int(31, 4, 0) + _hpack_string("application/grpc")  # content-type
    block += _hpack_int(58, 4, 0) + _hpack_string(user_agent)  # user-agent
    block += b"\x00" + _hpack_string("te") + _hpack_string("trailers")
    millis = max(1, int(timeout_s * 1000))
    block += b"\x00" + _hpack_string("grpc-timeout") + _hpack_string(f"{millis}m")
    return bytes(block)


class ResponseHeaders:
    """Decodes response header blocks to (HTTP status, grpc-status or -1, grpc-message).

    Decoded statefully: the table may still be at 4,096 before the server shrinks it (grpc's
    encoder leaves it there on some paths, e.g. a deadline's trailers-only answer).
    """

    def __init__(self) -> None:
        import hpack

        self.decoder = hpack.Decoder()
        self.decoded: dict[bytes, tuple[int, int, str]] = {}

    def decode(self, block: bytes) -> tuple[int, int, str]:
        """Raises ``ValueError`` for a block that cannot be decoded."""
        hit = self.decoded.get(block)
        if hit is not None:
            return hit
        try:
            headers = self.decoder.decode(block, raw=True)
        except Exception as exc:  # hpack's errors have no common base we can name here
            raise ValueError(f"undecodable response headers from the server: {exc}") from None
        http_status, grpc_status, message = 0, -1, ""
        for name, value in headers:
            if name == b":status":
                http_status = int(value)
            elif name == b"grpc-status":
                grpc_status = int(value)
            elif name == b"grpc-message":
                message = unquote(value.decode("utf-8", "replace"))
        result = (http_status, grpc_status, message)
        # with the table size at 0 a block means the same whatever came before it
        if self.decoder.header_table.maxsize != 0:
            self.decoded.clear()
        elif len(self.decoded) < CACHE_MAX:
            self.decoded[block] = result
        return result
