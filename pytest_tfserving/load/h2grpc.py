"""gRPC unary calls written straight onto an HTTP/2 connection: the load generator's transport.

A gRPC unary call is an HTTP/2 stream: a HEADERS frame (``:method POST``, ``:path /pkg.Service/M``,
``content-type: application/grpc``, ``te: trailers``), a DATA frame holding the length-prefixed
message with END_STREAM, and, back, response HEADERS, DATA and trailers carrying ``grpc-status``.
The load generator sends pre-serialized requests and only needs each call's status and the moment
it ended, so instead of a general gRPC stack (whose per-call bookkeeping cost ~200 us of CPU per
request in Python and bounded one process to ~3,000 req/s) each ``H2Connection`` here keeps one
non-blocking socket and a table of open streams:

- the request header block is encoded once per connection (HPACK literals, no dynamic table) and
  each call costs two 9-byte frame headers around bytes already in memory;
- we announce ``SETTINGS_HEADER_TABLE_SIZE = 0``; once the server has shrunk its table to 0 it
  cannot index response headers, every header block decodes the same way whatever came before,
  and decoded blocks are cached (until then, and with a server that never shrinks it, each block
  is decoded in order);
- flow control both ways (the server's windows and max concurrent streams are honoured; our own
  receive windows are opened wide and replenished), PING answered, GOAWAY and RST_STREAM mapped to
  gRPC codes the way grpc's own client maps them, deadlines enforced here and sent as
  ``grpc-timeout``.

The owner (``load/worker.py``) drives it from one thread with ``select``: ``start`` queues a call,
``flush`` writes, ``on_readable`` parses what arrived and reports finished calls through the
callback given to the constructor, ``expire`` ends calls past their deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
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
_FRAME = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">I")

GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = \
    0, 1, 2, 4, 8, 13, 14
# HTTP status -> gRPC code when a response carries no grpc-status (gRPC's http-grpc-status mapping)
_HTTP_TO_GRPC = {400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: UNAVAILABLE, 502: UNAVAILABLE,
                 503: UNAVAILABLE, 504: UNAVAILABLE}
REFUSED_STREAM = 0x7
# RST_STREAM / GOAWAY error code -> gRPC code (as grpc's clients map them)
_RST_TO_GRPC = {REFUSED_STREAM: UNAVAILABLE, 0x8: CANCELLED, 0xB: RESOURCE_EXHAUSTED, 0xC: 7}
_CACHE_MAX = 512
MAX_REFUSALS = 5  # a call refused this often fails UNAVAILABLE

# done(tag, code, detail, sent, answered_at): code 0 is OK; sent is when the call went out
DoneCallback = Callable[[Any, int, str, float, float], None]
# message(tag, response): the response message (gRPC framing removed), just before done(tag, ...)
MessageCallback = Callable[[Any, bytes], None]


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


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


@dataclass(frozen=True)
class Target:
    """Where to connect: ``host:port``, ``[v6]:port``, ``dns:///host:port``, ``unix:/path``.

    ``addresses`` holds every address the name resolves to, tried in order (``localhost`` may
    resolve to ::1 first while the server listens on 127.0.0.1 only).
    """

    addresses: tuple[tuple[int, Any], ...]  # (address family, socket address)
    authority: str

    @classmethod
    def parse(cls, target: str) -> Target:
        text = target.strip()
        if text.startswith("unix:"):
            path = text[len("unix:"):]
            path = path[2:] if path.startswith("//") else path
            return cls(((socket.AF_UNIX, path),), "localhost")
        for scheme in ("dns:///", "ipv4:", "ipv6:"):
            if text.startswith(scheme):
                text = text[len(scheme):]
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"gRPC target {target!r} is not host:port (e.g. 127.0.0.1:8500)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"gRPC target {target!r}: {host} does not resolve ({exc})") from None
        return cls(tuple((family, sockaddr) for family, _, _, _, sockaddr in infos), text)

    def dial(self, timeout_s: float) -> socket.socket:
        """A connected socket to the first address that accepts; OSError naming each failure."""
        failures = []
        for family, address in self.addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout_s)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                failures.append(f"{address}: {exc}")
                continue
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise OSError("; ".join(failures) or "no address")


class _Call:
    __slots__ = ("tag", "message", "deadline", "sent", "http_status", "grpc_status", "detail",
                 "refusals", "body")

    def __init__(self, tag: Any, message: bytes, deadline: float) -> None:
        self.tag = tag
        self.message = message
        self.deadline = deadline
        self.sent = 0.0
        self.http_status = 0
        self.grpc_status = -1
        self.detail = ""
        self.refusals = 0
        self.body: bytearray | None = None


class H2Connection:
    """One HTTP/2 connection carrying gRPC unary calls; single-threaded, non-blocking."""

    def __init__(self, target: Target, path: str, timeout_s: float, done: DoneCallback,
                 on_message: MessageCallback | None = None) -> None:
        """``on_message`` (optional) receives each successful call's response message; without
        it response bodies are skipped unread (the cheap path)."""
        import hpack

        self.target = target
        self.timeout_s = timeout_s
        self.done = done
        self.on_message = on_message
        self.block = request_header_block(target.authority, path, timeout_s)
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.inbuf = bytearray()
        self.next_id = 1
        self.active: dict[int, _Call] = {}  # stream id -> call
        # (deadline, stream id) in send order, so in deadline order; finished ones skipped lazily
        # (the front of a dict that is deleted from is O(n) to find: CPython keeps the holes)
        self.deadlines: deque[tuple[float, int]] = deque()
        self.queued: deque[_Call] = deque()  # waiting for a stream slot
        self.blocked: deque[tuple[int, memoryview]] = deque()  # DATA waiting for send window
        self.stream_windows: dict[int, int] = {}
        self.conn_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16_384
        self.peer_max_streams = 1 << 31
        self.recv_unacked = 0
        # decoded statefully (the table may still be at 4,096 before the server shrinks it:
        # grpc's encoder leaves it there on some paths, e.g. a deadline's trailers-only answer)
        self.decoder = hpack.Decoder()
        self.decoded: dict[bytes, tuple[int, int, str]] = {}
        self.partial: tuple[int, bytearray, bool] | None = None  # headers awaiting CONTINUATION
        self.closed_reason = ""
        self.goaway = False
        self.got_settings = False
        self.resume_at = 0.0  # queued calls wait until then after a refused stream

    # --- life cycle ---------------------------------------------------------------------------

    def connect(self, timeout_s: float) -> None:
        """Open the socket and exchange SETTINGS; raises ``ConnectionError`` naming the target."""
        try:
            sock = self.target.dial(timeout_s)
        except OSError as exc:
            raise ConnectionError(f"cannot open an HTTP/2 connection to "
                                  f"{self.target.authority}: {exc}") from exc
        try:
            settings = b"".join(struct.pack(">HI", key, value) for key, value in (
                (SETTING_HEADER_TABLE_SIZE, 0), (SETTING_ENABLE_PUSH, 0),
                (SETTING_INITIAL_WINDOW_SIZE, MAX_WINDOW)))
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings)
                         + frame(WINDOW_UPDATE, 0, 0, _U32.pack(MAX_WINDOW - DEFAULT_WINDOW)))
            # the server's SETTINGS come first: read until they are in (or the time is up)
            end = time.monotonic() + timeout_s
            while not self.got_settings:
                sock.settimeout(max(0.001, end - time.monotonic()))
                chunk = sock.recv(65_536)
                if not chunk:
                    raise ConnectionError("the server closed the connection during the HTTP/2 "
                                          "handshake (is it a gRPC server, without TLS?)")
                self.sock = sock
                self._parse(chunk, time.monotonic())
                if self.closed_reason:
                    raise ConnectionError(self.closed_reason)
        except OSError as exc:  # ConnectionError included
            sock.close()
            self.sock = None
            raise ConnectionError(f"cannot open an HTTP/2 connection to "
                                  f"{self.target.authority}: {exc}") from exc
        sock.setblocking(False)
        self.sock = sock
        self.flush()

    @property
    def usable(self) -> bool:
        return (self.sock is not None and not self.goaway and not self.closed_reason
                and self.next_id < LAST_STREAM_ID - 2)

    @property
    def busy(self) -> bool:
        return bool(self.active or self.queued)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def close(self, reason: str = "connection closed by the client",
              code: int = UNAVAILABLE) -> None:
        """Close the socket; every call still open ends with ``code`` (UNAVAILABLE) and
        ``reason``."""
        if self.sock is not None:
            try:
                if not self.closed_reason:
                    self.sock.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        self.closed_reason = self.closed_reason or reason
        now = time.monotonic()
        calls = list(self.active.values()) + list(self.queued)
        self.active.clear()
        self.deadlines.clear()
        self.queued.clear()
        self.blocked.clear()
        for call in calls:
            self.done(call.tag, code, self.closed_reason, call.sent or now, now)

    # --- sending ------------------------------------------------------------------------------

    def start(self, tag: Any, message: bytes, now: float, deadline: float | None = None) -> None:
        """Send one call (``message`` is the serialized request) or queue it for a stream slot.

        ``deadline`` (monotonic) defaults to now + the timeout; a call moved here from another
        connection keeps its own.
        """
        call = _Call(tag, message, now + self.timeout_s if deadline is None else deadline)
        if len(self.active) >= self.peer_max_streams or self.queued or now < self.resume_at:
            self.queued.append(call)
        else:
            self._open(call, now)

    def _open(self, call: _Call, now: float) -> None:
        sid = self.next_id
        self.next_id += 2
        call.sent = now
        self.active[sid] = call
        self.deadlines.append((call.deadline, sid))
        body = b"\x00" + _U32.pack(len(call.message)) + call.message
        n = len(self.block)
        out = self.out
        out += _FRAME.pack(n >> 8, n & 0xFF, HEADERS, FLAG_END_HEADERS, sid)
        out += self.block
        size = len(body)
        if not self.blocked and size <= self.conn_window and size <= self.peer_initial_window \
                and size <= self.peer_max_frame:
            self.conn_window -= size
            out += _FRAME.pack(size >> 8, size & 0xFF, DATA, FLAG_END_STREAM, sid)
            out += body
            return
        self.stream_windows[sid] = self.peer_initial_window
        self.blocked.append((sid, memoryview(body)))
        self._send_blocked()

    def _send_blocked(self) -> None:
        """Send DATA that waited for flow-control window, in order, as far as windows allow."""
        while self.blocked:
            sid, rest = self.blocked[0]
            if sid not in self.active:
                self.blocked.popleft()
                self.stream_windows.pop(sid, None)
                continue
            room = min(self.conn_window, self.stream_windows.get(sid, 0), self.peer_max_frame)
            if room <= 0:
                return
            chunk = rest[:room]
            last = len(chunk) == len(rest)
            self.out += frame(DATA, FLAG_END_STREAM if last else 0, sid, bytes(chunk))
            self.conn_window -= len(chunk)
            self.stream_windows[sid] -= len(chunk)
            if last:
                self.blocked.popleft()
                self.stream_windows.pop(sid, None)
            else:
                self.blocked[0] = (sid, rest[len(chunk):])

    def flush(self) -> None:
        """Write what is buffered, as far as the socket takes it."""
        if not self.out or self.sock is None:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"connection to {self.target.authority} lost: {exc}")
            return
        del self.out[:sent]

    # --- receiving ----------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Read what the socket has and finish the calls it completes."""
        if self.sock is None:
            return
        for _ in range(16):
            try:
                chunk = self.sock.recv(262_144)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(f"connection to {self.target.authority} lost: {exc}")
                return
            if not chunk:
                self._lost(f"the server at {self.target.authority} closed the connection")
                return
            self._parse(chunk, time.monotonic())
            if len(chunk) < 262_144:
                break
        self._after_progress(time.monotonic())

    def _after_progress(self, now: float) -> None:
        while self.queued and len(self.active) < self.peer_max_streams and self.usable \
                and now >= self.resume_at:
            self._open(self.queued.popleft(), now)
        if self.recv_unacked >= REPLENISH_AT:
            self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_unacked))
            self.recv_unacked = 0
        self.flush()

    def expire(self, now: float) -> None:
        """End calls past their deadline: DEADLINE_EXCEEDED here, RST_STREAM(CANCEL) sent."""
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            sid = deadlines.popleft()[1]
            call = self.active.pop(sid, None)
            if call is None:
                continue  # finished in time
            self.out += frame(RST_STREAM, 0, sid, _U32.pack(0x8))
            self.done(call.tag, DEADLINE_EXCEEDED, "Deadline Exceeded", call.sent, now)
        while self.queued and self.queued[0].deadline <= now:
            call = self.queued.popleft()
            self.done(call.tag, DEADLINE_EXCEEDED,
                      "Deadline Exceeded (waiting for a stream: the server's "
                      f"max_concurrent_streams {self.peer_max_streams} were all in use)", now, now)
        self._after_progress(now)

    def _lost(self, reason: str) -> None:
        self.closed_reason = reason
        self.close(reason)

    def _parse(self, chunk: bytes, now: float) -> None:
        buf = self.inbuf
        buf += chunk
        pos, size = 0, len(buf)
        unpack = _FRAME.unpack_from
        while size - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(buf, pos)
            length = (hi << 8) | lo
            end = pos + 9 + length
            if end > size:
                break
            sid &= LAST_STREAM_ID
            if ftype == DATA:  # the response message itself is not needed, only its end
                if self.on_message is not None:
                    self._keep_body(sid, flags, bytes(buf[pos + 9:end]))
                pos = end
                self.recv_unacked += length
                if flags & FLAG_END_STREAM:
                    self._finish(sid, now)
                continue
            payload = bytes(buf[pos + 9:end])
            pos = end
            if ftype == HEADERS or ftype == CONTINUATION:
                self._on_headers(ftype, flags, sid, payload, now)
            elif ftype == SETTINGS:
                if not flags & FLAG_ACK:
                    self._apply_settings(payload)
            elif ftype == PING:
                if not flags & FLAG_ACK:
                    self.out += frame(PING, FLAG_ACK, 0, payload)
            elif ftype == WINDOW_UPDATE:
                (increment,) = _U32.unpack_from(payload)
                if sid == 0:
                    self.conn_window += increment & LAST_STREAM_ID
                elif sid in self.stream_windows:
                    self.stream_windows[sid] += increment & LAST_STREAM_ID
                self._send_blocked()
            elif ftype == RST_STREAM:
                (code,) = _U32.unpack_from(payload)
                call = self.active.pop(sid, None)
                if call is None:
                    pass
                elif code == REFUSED_STREAM and call.refusals < MAX_REFUSALS:
                    # not processed (HTTP/2 says so): sent again, as grpc does, after a backoff
                    # of at least 1, 2, 4 ... ms (the owner's next expire or read resumes the
                    # queue): a server still counting a just-finished stream against
                    # its max_concurrent_streams refuses the next one for a moment
                    self.resume_at = now + 0.001 * (1 << call.refusals)
                    call.refusals += 1
                    self.queued.appendleft(call)
                elif code == 0x8 and now >= call.deadline:  # the server ended it at the deadline
                    self.done(call.tag, DEADLINE_EXCEEDED, "Deadline Exceeded", call.sent, now)
                else:
                    self.done(call.tag, _RST_TO_GRPC.get(code, INTERNAL),
                              f"stream reset by the server (HTTP/2 error code {code})",
                              call.sent, now)
            elif ftype == GOAWAY:
                self._on_goaway(payload, now)
            elif ftype == PUSH_PROMISE:
                self.closed_reason = "the server sent PUSH_PROMISE although push was disabled"
            # PRIORITY and unknown frame types are ignored, as HTTP/2 asks
        del buf[:pos]

    def _keep_body(self, sid: int, flags: int, payload: bytes) -> None:
        call = self.active.get(sid)
        if call is None:
            return
        if flags & FLAG_PADDED and payload:
            payload = payload[1:len(payload) - payload[0]]
        if call.body is None:
            call.body = bytearray()
        call.body += payload

    def _apply_settings(self, payload: bytes) -> None:
        for off in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, off)
            if key == SETTING_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == SETTING_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for sid in self.stream_windows:
                    self.stream_windows[sid] += delta
            elif key == SETTING_MAX_FRAME_SIZE:
                self.peer_max_frame = value
        self.out += frame(SETTINGS, FLAG_ACK, 0)
        self.got_settings = True

    def _on_headers(self, ftype: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        if ftype == HEADERS:
            start = 0
            if flags & FLAG_PADDED:
                start = 1
                payload = payload[:len(payload) - payload[0]]
            if flags & FLAG_PRIORITY:
                start += 5
            block = payload[start:]
            if not flags & FLAG_END_HEADERS:
                self.partial = (sid, bytearray(block), bool(flags & FLAG_END_STREAM))
                return
            end_stream = bool(flags & FLAG_END_STREAM)
        else:
            if self.partial is None or self.partial[0] != sid:
                self.closed_reason = "the server sent CONTINUATION without HEADERS"
                return
            self.partial[1].extend(payload)
            if not flags & FLAG_END_HEADERS:
                return
            sid, whole, end_stream = self.partial
            block = bytes(whole)
            self.partial = None
        http_status, grpc_status, message = self._decode(block)
        call = self.active.get(sid)
        if call is None:
            return
        if http_status:
            call.http_status = http_status
        if grpc_status >= 0:
            call.grpc_status, call.detail = grpc_status, message
        if end_stream:
            self._finish(sid, now)

    def _decode(self, block: bytes) -> tuple[int, int, str]:
        hit = self.decoded.get(block)
        if hit is not None:
            return hit
        try:
            headers = self.decoder.decode(block, raw=True)
        except Exception as exc:  # a header block we cannot read ends the connection
            self.closed_reason = f"undecodable response headers from the server: {exc}"
            return 0, INTERNAL, self.closed_reason
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
        elif len(self.decoded) < _CACHE_MAX:
            self.decoded[block] = result
        return result

    def _finish(self, sid: int, now: float) -> None:
        call = self.active.pop(sid, None)
        if call is None:
            return
        code, detail = call.grpc_status, call.detail
        if code < 0:
            if call.http_status and call.http_status != 200:
                code = _HTTP_TO_GRPC.get(call.http_status, UNKNOWN)
                detail = f"HTTP status {call.http_status} without grpc-status"
            else:
                code, detail = INTERNAL, "the stream ended without a grpc-status trailer"
        body = call.body
        if self.on_message is not None and code == OK and body is not None and len(body) >= 5 \
                and body[0] == 0:  # an uncompressed length-prefixed message
            (length,) = _U32.unpack_from(body, 1)
            self.on_message(call.tag, bytes(body[5:5 + length]))
        self.done(call.tag, code, detail, call.sent, now)

    def _on_goaway(self, payload: bytes, now: float) -> None:
        last, code = struct.unpack_from(">II", payload)
        last &= LAST_STREAM_ID
        self.goaway = True
        debug = payload[8:].decode("utf-8", "replace")
        reason = (f"the server sent GOAWAY (HTTP/2 error code {code}"
                  f"{': ' + debug if debug else ''}) before handling the call")
        # streams above ``last`` reached the server and were refused by it: counted as errors
        # (the server went away under load); calls still waiting for a stream slot never left
        # this client, and the owner moves them to a new connection (``take_unsent``)
        for sid in [s for s in self.active if s > last]:
            call = self.active.pop(sid)
            self.done(call.tag, UNAVAILABLE, reason, call.sent, now)

    def take_unsent(self) -> list[tuple[Any, bytes, float]]:
        """After GOAWAY: the queued calls that were never sent, as (tag, message, deadline)."""
        unsent = [(call.tag, call.message, call.deadline) for call in self.queued]
        self.queued.clear()
        return unsent

