"""gRPC unary calls written straight onto an HTTP/2 connection: the load generator's transport.

A gRPC unary call is an HTTP/2 stream: a HEADERS frame (``:method POST``, ``:path /pkg.Service/M``,
``content-type: application/grpc``, ``te: trailers``), a DATA frame holding the length-prefixed
message with END_STREAM, and, back, response HEADERS, DATA and trailers carrying ``grpc-status``.
The load generator sends pre-serialized requests and only needs each call's status and the moment
it ended, so instead of a general gRPC stack (whose per-call bookkeeping cost ~200 us of CPU per
request in Python and bounded one process to ~3,000 req/s) each ``H2Connection`` keeps one
non-blocking socket and a table of open streams (``h2streams.H2Streams``). Each call costs two
9-byte frame headers around bytes already in memory (the header block is encoded once:
``h2frames.py``); flow control works both ways (the server's windows and max concurrent streams
are honoured; our own receive windows are opened wide and replenished), PING is answered, GOAWAY
and RST_STREAM map to gRPC codes the way grpc's own client maps them, deadlines are enforced here
and sent as ``grpc-timeout``.

The owner (``load/worker.py``) drives it from one thread with ``select``: ``start`` queues a call,
``flush`` writes, ``on_readable`` parses what arrived and reports finished calls through the
callback given to the constructor, ``expire`` ends calls past their deadline.
"""

from __future__ import annotations

import socket
import struct
import time

from pytest_tfserving.load.grpc_target import Target
from pytest_tfserving.load.h2frames import (
    DEFAULT_WINDOW,
    GOAWAY,
    MAX_WINDOW,
    PREFACE,
    SETTING_ENABLE_PUSH,
    SETTING_HEADER_TABLE_SIZE,
    SETTING_INITIAL_WINDOW_SIZE,
    SETTINGS,
    U32,
    UNAVAILABLE,
    WINDOW_UPDATE,
    frame,
)
from pytest_tfserving.load.h2streams import DoneCallback, H2Streams, MessageCallback


class H2Connection(H2Streams):
    """One HTTP/2 connection carrying gRPC unary calls; single-threaded, non-blocking."""

    def __init__(self, target: Target, path: str, timeout_s: float, done: DoneCallback,
                 on_message: MessageCallback | None = None) -> None:
        """``on_message`` (optional) receives each successful call's response message; without
        it response bodies are skipped unread (the cheap path)."""
        super().__init__(target.authority, path, timeout_s, done, on_message)
        self.target = target
        self.sock: socket.socket | None = None

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
                         + frame(WINDOW_UPDATE, 0, 0, U32.pack(MAX_WINDOW - DEFAULT_WINDOW)))
            # the server's SETTINGS come first: read until they are in (or the time is up)
            end = time.monotonic() + timeout_s
            while not self.got_settings:
                sock.settimeout(max(0.001, end - time.monotonic()))
                chunk = sock.recv(65_536)
                if not chunk:
                    raise ConnectionError("the server closed the connection during the HTTP/2 "
                                          "handshake (is it a gRPC server, without TLS?)")
                self.sock = sock
                self.parse(chunk, time.monotonic())
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
        return self.sock is not None and super().usable

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
        self.fail_all(code, self.closed_reason, time.monotonic())

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
            self.parse(chunk, time.monotonic())
            if len(chunk) < 262_144:
                break
        self._after_progress(time.monotonic())

    def _lost(self, reason: str) -> None:
        self.closed_reason = reason
        self.close(reason)

