"""The load generator's HTTP/2 transport (``load/h2grpc.py``) against real grpc servers started in
this process: flow control on big messages both ways, the server's stream limit, deadlines,
status codes and messages, unix sockets, and targets it cannot parse."""

from __future__ import annotations

import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from pytest_tfserving.load.grpc_target import Target
from pytest_tfserving.load.h2grpc import H2Connection
from pytest_tfserving.ports import free_port

METHOD = "/tensorflow.serving.PredictionService/Predict"
Handler = Callable[[bytes, Any], bytes]


@contextmanager
def grpc_server(handler: Handler, *, max_streams: int | None = None,
                address: str = "127.0.0.1:0") -> Iterator[str]:
    options = [("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    if max_streams is not None:
        options.append(("grpc.max_concurrent_streams", max_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(handler)}),))
    port = server.add_insecure_port(address)
    server.start()
    try:
        yield address if address.startswith("unix:") else f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def call_all(target: str, messages: list[bytes], timeout_s: float = 5.0,
             watch: Callable[[H2Connection], None] | None = None) -> list[tuple[int, str, float]]:
    """Send every message on one connection; (code, detail, seconds) per message, in order."""
    results: dict[int, tuple[int, str, float]] = {}

    def done(tag: Any, code: int, detail: str, sent: float, at: float) -> None:
        results[tag] = (code, detail, at - sent)

    conn = H2Connection(Target.parse(target), METHOD, timeout_s, done)
    conn.connect(5.0)
    try:
        now = time.monotonic()
        for i, message in enumerate(messages):
            conn.start(i, message, now)
        give_up = now + timeout_s + 5
        while len(results) < len(messages) and time.monotonic() < give_up:
            select.select([conn], [conn] if conn.out else [], [], 0.01)
            conn.on_readable()
            conn.expire(time.monotonic())
            conn.flush()
            if watch is not None:
                watch(conn)
    finally:
        conn.close()
    assert len(results) == len(messages), "calls never finished"
    return [results[i] for i in range(len(messages))]


def test_big_messages_cross_flow_control_windows_both_ways() -> None:
    seen: list[int] = []

    def echo(request: bytes, context: Any) -> bytes:
        seen.append(len(request))
        return request * 2  # 6 MB back: far past the default 64 KiB windows

    big = os.urandom(3_000_000)  # > 65,535-byte initial window and > 16 KiB frames
    results = call_all_with(echo, [big, b"small", big])
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert sorted(seen) == sorted([3_000_000, 5, 3_000_000])


def call_all_with(handler: Handler, messages: list[bytes], **kw: Any) -> list[Any]:
    with grpc_server(handler) as target:
        return call_all(target, messages, **kw)


def test_status_codes_and_percent_encoded_messages_come_back() -> None:
    def judge(request: bytes, context: Any) -> bytes:
        if request == b"bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x' has 100% bad ünits")
        if request == b"gone":
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return b"ok"

    results = call_all_with(judge, [b"fine", b"bad", b"gone"])
    assert [code for code, _, _ in results] == [0, 3, 14]
    assert results[1][1] == "input 'x' has 100% bad ünits"
    assert results[2][1] == "draining"


def test_server_stream_limit_queues_calls_instead_of_failing_them() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(request: bytes, context: Any) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return b""

    limits: list[int] = []
    with grpc_server(slow, max_streams=2) as target:
        t0 = time.monotonic()
        results = call_all(target, [b""] * 10,
                           watch=lambda c: limits.append(len(c.active)))
        elapsed = time.monotonic() - t0
    assert [code for code, _, _ in results] == [0] * 10, results
    assert peak <= 2 and max(limits) <= 2
    assert elapsed >= 5 * 0.05 * 0.9  # ten 50 ms calls two at a time


def test_deadline_ends_the_call_here_and_tells_the_server() -> None:
    cancelled = threading.Event()

    def stuck(request: bytes, context: Any) -> bytes:
        context.add_callback(cancelled.set)
        time.sleep(2.0)
        return b""

    t0 = time.monotonic()
    results = call_all_with(stuck, [b""], timeout_s=0.2)
    assert results[0][0] == 4, results  # DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.9
    assert cancelled.wait(3.0), "the server never heard that the call was over"


def test_unix_socket_target() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        address = f"unix:{tmp}/tfs.sock"
        with grpc_server(lambda request, context: b"", address=address) as target:
            assert call_all(target, [b"a", b"b"])[1][0] == 0


@pytest.mark.parametrize("target", ["8500", "localhost", "host:port", ":8500"])
def test_a_target_that_is_not_host_port_is_named(target: str) -> None:
    with pytest.raises(ValueError, match=rf"{target!r} is not host:port"):
        Target.parse(target)


def test_refused_connection_names_the_target() -> None:
    port = free_port()
    conn = H2Connection(Target.parse(f"127.0.0.1:{port}"), METHOD, 1.0, lambda *a: None)
    with pytest.raises(ConnectionError, match=rf"127\.0\.0\.1:{port}"):
        conn.connect(1.0)


def test_every_resolved_address_is_tried() -> None:
    """``localhost`` may resolve to ::1 first; a server on 127.0.0.1 only must still be found:
    each address is tried in order until one accepts, and every failure is named."""
    refused = [(socket.AF_INET, ("127.0.0.1", free_port())),
               (socket.AF_INET, ("127.0.0.1", free_port()))]
    with grpc_server(lambda request, context: b"") as target:
        port = int(target.rsplit(":", 1)[1])
        failures: list[str] = []
        serving = (socket.AF_INET, ("127.0.0.1", port))
        with Target((*refused, serving), "test").dial(2.0, failures) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        assert [line.split(": ", 1)[0] for line in failures] == [str(a) for _, a in refused]
        assert all("refused" in line.lower() for line in failures), failures
        # the same through a connection, on what localhost resolves to behind refused addresses
        resolved = Target.parse(f"localhost:{port}").addresses
        results: list[int] = []
        conn = H2Connection(Target((*refused, *resolved), "localhost"), METHOD, 2.0,
                            lambda tag, code, *rest: results.append(code))
        conn.connect(2.0)
        assert conn.sock is not None and conn.sock.getpeername()[1] == port
        conn.close()
    with pytest.raises(OSError) as info:
        Target(tuple(refused), "test").dial(1.0)
    named = [str(a) for _, a in refused]
    assert [part.split(": ", 1)[0] for part in str(info.value).split("; ")] == named


def test_a_name_that_does_not_resolve_is_named() -> None:
    with pytest.raises(ValueError, match="no-such-host.invalid does not resolve"):
        Target.parse("no-such-host.invalid:8500")


class GoawayServer:
    """A raw HTTP/2 gRPC server: its first connection allows one stream at a time and, after the
    first call, answers it, sends GOAWAY (last stream = that call) and closes; later connections
    answer every call. What a server going away gracefully under load looks like."""

    HEADERS_BLOCK = b"\x88\x0f\x10" + bytes([16]) + b"application/grpc"  # :status 200 + type
    TRAILERS_BLOCK = b"\x00" + bytes([11]) + b"grpc-status" + b"\x01" + b"0"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.answered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections == 1),
                             daemon=True).start()

    def _answer(self, sid: int) -> bytes:
        from pytest_tfserving.load import h2frames as h

        self.answered += 1
        return (h.frame(h.HEADERS, h.FLAG_END_HEADERS, sid, self.HEADERS_BLOCK)
                + h.frame(h.DATA, 0, sid, b"\x00" * 5)
                + h.frame(h.HEADERS, h.FLAG_END_HEADERS | h.FLAG_END_STREAM, sid,
                          self.TRAILERS_BLOCK))

    def _serve(self, conn: socket.socket, first: bool) -> None:
        import struct

        from pytest_tfserving.load import h2frames as h

        limit = struct.pack(">HI", h.SETTING_MAX_CONCURRENT_STREAMS, 1) if first else b""
        conn.sendall(h.frame(h.SETTINGS, 0, 0, limit))
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65_536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                if buf.startswith(h.PREFACE):
                    buf = buf[len(h.PREFACE):]
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    buf = buf[9 + length:]
                    if ftype == h.SETTINGS and not flags & h.FLAG_ACK:
                        conn.sendall(h.frame(h.SETTINGS, h.FLAG_ACK, 0))
                    elif ftype in (h.HEADERS, h.DATA) and flags & h.FLAG_END_STREAM:
                        if not first:
                            conn.sendall(self._answer(sid))
                            continue
                        time.sleep(0.2)  # the client's other calls wait for the one slot
                        conn.sendall(h.frame(h.GOAWAY, 0, 0, struct.pack(">II", sid, 0))
                                     + self._answer(sid))
                        time.sleep(0.2)
                        return

    def close(self) -> None:
        self.listener.close()


def test_goaway_moves_calls_that_were_never_sent_to_a_new_connection() -> None:
    from pytest_tfserving.load.driver import run_load
    from pytest_tfserving.load.spec import LoadSpec

    server = GoawayServer()
    try:
        result = run_load(f"127.0.0.1:{server.port}", [b""], LoadSpec(
            mode="closed", concurrency=4, duration_s=1.0, warmup_s=0.0, stability_pct=0,
            max_requests=12, timeout_s=3, workers=1))
    finally:
        server.close()
    assert result.errors == {}, result.summary()
    assert result.stats.ok == 12
    assert server.connections == 2  # the first one went away after one call
