"""A load worker's HTTP/2 connections: opened before the start, used round robin, reopened when
lost, drained after GOAWAY, and waited on together with ``select``."""

from __future__ import annotations

import select
import time
from typing import Any

from pytest_tfserving.load.grpc_target import Target
from pytest_tfserving.load.h2frames import UNAVAILABLE
from pytest_tfserving.load.h2grpc import H2Connection
from pytest_tfserving.load.h2streams import DoneCallback, MessageCallback

RECONNECT_EVERY_S = 0.2  # a lost connection is reopened at most this often


class ConnectionPool:
    """``channels`` connections to one target; single-threaded (the worker's loop)."""

    def __init__(self, target: str, method: str, timeout_s: float, channels: int,
                 done: DoneCallback, on_message: MessageCallback | None = None) -> None:
        self.target_text = target
        self.target = Target.parse(target)
        self.method = method
        self.timeout_s = timeout_s
        self.done = done
        self.on_message = on_message
        n = max(1, channels)
        self.conns: list[H2Connection | None] = [None] * n
        self.draining: list[H2Connection] = []  # after GOAWAY: finishing their calls
        self.reconnect_at = [0.0] * n
        self.connect_error = ""

    def _open(self, timeout_s: float) -> H2Connection:
        conn = H2Connection(self.target, self.method, self.timeout_s, self.done, self.on_message)
        conn.connect(timeout_s)
        return conn

    def connect(self) -> str | None:
        """Open every connection before the start; the fatal message when one cannot be."""
        for j in range(len(self.conns)):
            try:
                self.conns[j] = self._open(self.timeout_s)
            except (ConnectionError, OSError) as exc:
                return (f"cannot connect to {self.target_text} within {self.timeout_s:g} s "
                        f"({exc})")
        return None

    def reroute(self, now: float) -> None:
        """Calls queued on a connection the server sent GOAWAY on go to a fresh connection."""
        for j, conn in enumerate(self.conns):
            if conn is not None and conn.goaway and conn.queued:
                self.conn_for(j, now)

    def conn_for(self, i: int, now: float) -> H2Connection | None:
        """The connection for request ``i`` (round robin), reopened if it was lost; None while
        it cannot be (at most one attempt per ``RECONNECT_EVERY_S``)."""
        j = i % len(self.conns)
        conn = self.conns[j]
        if conn is not None and conn.usable:
            return conn
        unsent: list[tuple[Any, bytes, float]] = []
        if conn is not None:
            unsent = conn.take_unsent() if conn.goaway else []
            if conn.busy and conn.sock is not None:
                self.draining.append(conn)  # GOAWAY: let its accepted calls finish
            else:
                conn.close()
            self.conns[j] = None
        fresh: H2Connection | None = None
        if now >= self.reconnect_at[j]:
            try:
                fresh = self.conns[j] = self._open(min(1.0, self.timeout_s))
            except (ConnectionError, OSError) as exc:
                self.connect_error = str(exc)
                self.reconnect_at[j] = time.monotonic() + RECONNECT_EVERY_S
        for tag, message, deadline in unsent:  # never sent: they go out on the new connection
            if fresh is None:
                self.done(tag, UNAVAILABLE, self.connect_error or "no connection", now, now)
            else:
                fresh.start(tag, message, now, deadline)
        return fresh

    def live(self) -> list[H2Connection]:
        """Every connection with a socket, the draining ones included."""
        if self.draining:
            for done in [c for c in self.draining if not (c.busy and c.sock is not None)]:
                done.close()  # all its calls answered: the socket goes now
            self.draining = [c for c in self.draining if c.sock is not None]
        return [c for c in self.conns if c is not None and c.sock is not None] + self.draining

    def poll(self, timeout: float, live: list[H2Connection]) -> None:
        """Wait up to ``timeout`` for answers (or room to write), and handle what came."""
        if not live:
            time.sleep(max(0.0, timeout))
            return
        writing = [c for c in live if c.out]
        try:
            readable, writable, _ = select.select(live, writing, [], max(0.0, timeout))
        except (OSError, ValueError):  # a socket closed under us: look again next time
            return
        for conn in readable:
            conn.on_readable()
            if conn.goaway and conn.queued:
                self.reroute(time.monotonic())
        for conn in writable:
            conn.flush()

    def close_all(self, code: int = UNAVAILABLE,
                  reason: str = "connection closed by the client") -> None:
        """Close every connection; calls still open end with ``code`` and ``reason``."""
        for conn in [c for c in self.conns if c is not None] + self.draining:
            conn.close(reason, code)
        self.conns = [None] * len(self.conns)
        self.draining = []
