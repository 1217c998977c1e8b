"""The socket-free half of an HTTP/2 connection carrying gRPC unary calls: streams, flow
control, frames parsed and written (into ``out``), calls finished through callbacks.

``h2grpc.H2Connection`` adds the socket. Kept apart so the protocol's bookkeeping reads without
the I/O: ``start`` queues a call, ``parse`` consumes bytes that arrived, ``expire`` ends calls past
their deadline, ``fail_all`` ends every open call when the connection goes.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from pytest_tfserving.load import h2frames as h2
from pytest_tfserving.load.h2frames import (
    DATA,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FRAME,
    HEADERS,
    LAST_STREAM_ID,
    U32,
    frame,
)

# done(tag, code, detail, sent, answered_at): code 0 is OK; sent is when the call went out
DoneCallback = Callable[[Any, int, str, float, float], None]
# message(tag, response): the response message (gRPC framing removed), just before done(tag, ...)
MessageCallback = Callable[[Any, bytes], None]





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


class H2Streams:
    """The streams of one HTTP/2 connection; single-threaded."""

    def __init__(self, authority: str, path: str, timeout_s: float, done: DoneCallback,
                 on_message: MessageCallback | None = None) -> None:
        """``on_message`` (optional) receives each successful call's response message; without
        it response bodies are skipped unread (the cheap path)."""
        self.timeout_s = timeout_s
        self.done = done
        self.on_message = on_message
        self.block = h2.request_header_block(authority, path, timeout_s)
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
        self.conn_window = h2.DEFAULT_WINDOW
        self.peer_initial_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = 16_384
        self.peer_max_streams = 1 << 31
        self.recv_unacked = 0
        self.headers = h2.ResponseHeaders()
        self.partial: tuple[int, bytearray, bool] | None = None  # headers awaiting CONTINUATION
        self.closed_reason = ""
        self.goaway = False
        self.got_settings = False
        self.resume_at = 0.0  # queued calls wait until then after a refused stream

    @property
    def usable(self) -> bool:
        """New calls may start here (no GOAWAY, not closed, stream ids left)."""
        return (not self.goaway and not self.closed_reason
                and self.next_id < LAST_STREAM_ID - 2)

    @property
    def busy(self) -> bool:
        return bool(self.active or self.queued)

    def flush(self) -> None:
        """Write ``out`` (the connection with a socket does; here nothing to write to)."""

    def fail_all(self, code: int, reason: str, now: float) -> None:
        """End every call still open (sent or queued) with ``code`` and ``reason``."""
        calls = list(self.active.values()) + list(self.queued)
        self.active.clear()
        self.deadlines.clear()
        self.queued.clear()
        self.blocked.clear()
        for call in calls:
            self.done(call.tag, code, reason, call.sent or now, now)

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
        body = b"\x00" + U32.pack(len(call.message)) + call.message
        n = len(self.block)
        out = self.out
        out += FRAME.pack(n >> 8, n & 0xFF, HEADERS, FLAG_END_HEADERS, sid)
        out += self.block
        size = len(body)
        if not self.blocked and size <= self.conn_window and size <= self.peer_initial_window \
                and size <= self.peer_max_frame:
            self.conn_window -= size
            out += FRAME.pack(size >> 8, size & 0xFF, DATA, FLAG_END_STREAM, sid)
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

    def _after_progress(self, now: float) -> None:
        while self.queued and len(self.active) < self.peer_max_streams and self.usable \
                and now >= self.resume_at:
            self._open(self.queued.popleft(), now)
        if self.recv_unacked >= h2.REPLENISH_AT:
            self.out += frame(h2.WINDOW_UPDATE, 0, 0, U32.pack(self.recv_unacked))
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
            self.out += frame(h2.RST_STREAM, 0, sid, U32.pack(0x8))
            self.done(call.tag, h2.DEADLINE_EXCEEDED, "Deadline Exceeded", call.sent, now)
        while self.queued and self.queued[0].deadline <= now:
            call = self.queued.popleft()
            self.done(call.tag, h2.DEADLINE_EXCEEDED,
                      "Deadline Exceeded (waiting for a stream: the server's "
                      f"max_concurrent_streams {self.peer_max_streams} were all in use)", now, now)
        self._after_progress(now)

    def parse(self, chunk: bytes, now: float) -> None:
        buf = self.inbuf
        buf += chunk
        pos, size = 0, len(buf)
        unpack = FRAME.unpack_from
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
            self._on_frame(ftype, flags, sid, bytes(buf[pos + 9:end]), now)
            pos = end
        del buf[:pos]

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        """Every frame but DATA (``_parse`` handles those on its fast path)."""
        if ftype == HEADERS or ftype == h2.CONTINUATION:
            self._on_headers(ftype, flags, sid, payload, now)
        elif ftype == h2.SETTINGS:
            if not flags & h2.FLAG_ACK:
                self._apply_settings(payload)
        elif ftype == h2.PING:
            if not flags & h2.FLAG_ACK:
                self.out += frame(h2.PING, h2.FLAG_ACK, 0, payload)
        elif ftype == h2.WINDOW_UPDATE:
            (increment,) = U32.unpack_from(payload)
            if sid == 0:
                self.conn_window += increment & LAST_STREAM_ID
            elif sid in self.stream_windows:
                self.stream_windows[sid] += increment & LAST_STREAM_ID
            self._send_blocked()
        elif ftype == h2.RST_STREAM:
            self._on_reset(sid, U32.unpack_from(payload)[0], now)
        elif ftype == h2.GOAWAY:
            self._on_goaway(payload, now)
        elif ftype == h2.PUSH_PROMISE:
            self.closed_reason = "the server sent PUSH_PROMISE although push was disabled"
        # PRIORITY and unknown frame types are ignored, as HTTP/2 asks

    def _on_reset(self, sid: int, code: int, now: float) -> None:
        call = self.active.pop(sid, None)
        if call is None:
            return
        if code == h2.REFUSED_STREAM and call.refusals < h2.MAX_REFUSALS:
            # not processed (HTTP/2 says so): sent again, as grpc does, after a backoff of at
            # least 1, 2, 4 ... ms (the owner's next expire or read resumes the queue): a server
            # still counting a just-finished stream against its max_concurrent_streams refuses
            # the next one for a moment
            self.resume_at = now + 0.001 * (1 << call.refusals)
            call.refusals += 1
            self.queued.appendleft(call)
        elif code == 0x8 and now >= call.deadline:  # the server ended it at the deadline
            self.done(call.tag, h2.DEADLINE_EXCEEDED, "Deadline Exceeded", call.sent, now)
        else:
            self.done(call.tag, h2.RST_TO_GRPC.get(code, h2.INTERNAL),
                      f"stream reset by the server (HTTP/2 error code {code})", call.sent, now)

    def _keep_body(self, sid: int, flags: int, payload: bytes) -> None:
        call = self.active.get(sid)
        if call is None:
            return
        if flags & h2.FLAG_PADDED and payload:
            payload = payload[1:len(payload) - payload[0]]
        if call.body is None:
            call.body = bytearray()
        call.body += payload

    def _apply_settings(self, payload: bytes) -> None:
        for off in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, off)
            if key == h2.SETTING_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == h2.SETTING_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for sid in self.stream_windows:
                    self.stream_windows[sid] += delta
            elif key == h2.SETTING_MAX_FRAME_SIZE:
                self.peer_max_frame = value
        self.out += frame(h2.SETTINGS, h2.FLAG_ACK, 0)
        self.got_settings = True

    def _on_headers(self, ftype: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        if ftype == HEADERS:
            start = 0
            if flags & h2.FLAG_PADDED:
                start = 1
                payload = payload[:len(payload) - payload[0]]
            if flags & h2.FLAG_PRIORITY:
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
        try:
            http_status, grpc_status, message = self.headers.decode(block)
        except ValueError as exc:  # a header block we cannot read ends the connection
            self.closed_reason = str(exc)
            http_status, grpc_status, message = 0, h2.INTERNAL, self.closed_reason
        call = self.active.get(sid)
        if call is None:
            return
        if http_status:
            call.http_status = http_status
        if grpc_status >= 0:
            call.grpc_status, call.detail = grpc_status, message
        if end_stream:
            self._finish(sid, now)

    def _finish(self, sid: int, now: float) -> None:
        call = self.active.pop(sid, None)
        if call is None:
            return
        code, detail = call.grpc_status, call.detail
        if code < 0:
            if call.http_status and call.http_status != 200:
                code = h2.HTTP_TO_GRPC.get(call.http_status, h2.UNKNOWN)
                detail = f"HTTP status {call.http_status} without grpc-status"
            else:
                code, detail = h2.INTERNAL, "the stream ended without a grpc-status trailer"
        body = call.body
        if self.on_message is not None and code == h2.OK and body is not None and len(body) >= 5 \
                and body[0] == 0:  # an uncompressed length-prefixed message
            (length,) = U32.unpack_from(body, 1)
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
            self.done(call.tag, h2.UNAVAILABLE, reason, call.sent, now)

    def take_unsent(self) -> list[tuple[Any, bytes, float]]:
        """After GOAWAY: the queued calls that were never sent, as (tag, message, deadline)."""
        unsent = [(call.tag, call.message, call.deadline) for call in self.queued]
        self.queued.clear()
        return unsent

