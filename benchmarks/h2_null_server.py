"""A null gRPC server for measuring load generators: HTTP/2 frames in, a constant answer out.

    python benchmarks/h2_null_server.py [--port N]     # prints "PORT <n>" when listening

Every gRPC call (any path) is answered with an empty message and ``grpc-status: 0`` as soon as
its request has fully arrived; header blocks from clients are not even decoded. It costs a few
microseconds per call, so a client measured against it (h2load, our generator) meets its own limit
before the server's. The grpc.aio echo server (``pytest_tfserving.load.testserver``) saturates at
~5,000 req/s on one core, below what the generator is meant to hold.

Flow control is honoured both ways (the client's connection window for our 5-byte answers; our
windows opened wide and topped up), PING is answered, and the first header block on each
connection carries a dynamic-table size update to 0, which is valid whatever the client allows.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_tfserving.load.h2frames import (  # noqa: E402
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    HEADERS,
    MAX_WINDOW,
    PING,
    PREFACE,
    REPLENISH_AT,
    SETTING_INITIAL_WINDOW_SIZE,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)

_U32 = struct.Struct(">I")
RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes([16]) + b"application/grpc"  # :status 200
TRAILERS = b"\x00" + bytes([11]) + b"grpc-status" + b"\x01" + b"0"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


def answer(sid: int, first: bool) -> bytes:
    head = (b"\x20" if first else b"") + RESPONSE_HEADERS  # first block: table size update to 0
    return (frame(HEADERS, FLAG_END_HEADERS, sid, head) + frame(DATA, 0, sid, EMPTY_MESSAGE)
            + frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid, TRAILERS))


class NullGrpc(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.preface_seen = False
        self.first = True
        self.window = DEFAULT_WINDOW  # the client's connection window for our DATA
        self.waiting: list[int] = []  # answers held for window
        self.unacked = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTING_INITIAL_WINDOW_SIZE,
                                                           MAX_WINDOW))
                        + frame(WINDOW_UPDATE, 0, 0, _U32.pack(MAX_WINDOW - DEFAULT_WINDOW)))

    def _answer(self, sid: int, out: bytearray) -> None:
        if self.window < len(EMPTY_MESSAGE) or self.waiting:
            self.waiting.append(sid)
            return
        self.window -= len(EMPTY_MESSAGE)
        out += answer(sid, self.first)
        self.first = False

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if not self.preface_seen:
            if len(buf) < len(PREFACE):
                return
            pos, self.preface_seen = len(PREFACE), True
        out = bytearray()
        size = len(buf)
        while size - pos >= 9:
            hi, lo, ftype, flags, sid = struct.unpack_from(">HBBBI", buf, pos)
            length = (hi << 8) | lo
            end = pos + 9 + length
            if end > size:
                break
            if ftype in (HEADERS, DATA, CONTINUATION) and flags & FLAG_END_STREAM:
                self._answer(sid & MAX_WINDOW, out)
            if ftype == DATA:
                self.unacked += length
            elif ftype == SETTINGS and not flags & FLAG_ACK:
                out += frame(SETTINGS, FLAG_ACK, 0)
            elif ftype == PING and not flags & FLAG_ACK:
                out += frame(PING, FLAG_ACK, 0, bytes(buf[pos + 9:end]))
            elif ftype == WINDOW_UPDATE and sid == 0:
                self.window += _U32.unpack_from(buf, pos + 9)[0] & MAX_WINDOW
                held, self.waiting = self.waiting, []
                for waiting_sid in held:
                    self._answer(waiting_sid, out)
            pos = end
        del buf[:pos]
        if self.unacked >= REPLENISH_AT:
            out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.unacked))
            self.unacked = 0
        if out and self.transport is not None:
            self.transport.write(bytes(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(NullGrpc, "127.0.0.1", port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
