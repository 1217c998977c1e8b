"""A tiny grpc.aio PredictionService for testing load tools: answers every Predict at once, or
with a planted stall, or fails every request with a chosen code.

``python -m pytest_tfserving.load.testserver [--stall-every S --stall-ms MS] [--fail CODE
[--fail-every N]]`` binds 127.0.0.1 on a free port and prints ``PORT <n>`` when it is serving.
A stall holds every request that arrives during the first ``stall_ms`` of each
``stall_every``-second period until the stall ends (a GC pause or a blocked thread): a client that
keeps its own send schedule sees all those requests late, a closed-loop client sees one. No
TensorFlow: requests are opaque bytes and the answer is an empty ``PredictResponse``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

import grpc

SERVICE = "tensorflow.serving.PredictionService"


class Behaviour:
    def __init__(self, stall_every: float, stall_ms: float, fail: str | None,
                 delay_ms: float, fail_every: int = 1) -> None:
        self.stall_every = stall_every
        self.stall_s = stall_ms / 1000.0
        self.fail = getattr(grpc.StatusCode, fail) if fail else None
        self.delay_s = delay_ms / 1000.0
        self.fail_every = max(1, fail_every)
        self.t0 = time.monotonic()
        self.count = 0

    async def predict(self, request: bytes, context: Any) -> bytes:
        self.count += 1
        if self.stall_every > 0:
            phase = (time.monotonic() - self.t0) % self.stall_every
            if phase < self.stall_s:
                await asyncio.sleep(self.stall_s - phase)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None and self.count % self.fail_every == 0:
            await context.abort(self.fail, f"planted failure {self.fail.name}")
        return b""


async def serve(args: argparse.Namespace) -> None:
    behaviour = Behaviour(args.stall_every, args.stall_ms, args.fail, args.delay_ms,
                          args.fail_every)
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Predict": grpc.unary_unary_rpc_method_handler(behaviour.predict),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stall-every", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-every", type=int, default=1, metavar="N",
                        help="with --fail: fail every N-th request only")
    parser.add_argument("--fail", default=None, metavar="GRPC_CODE",
                        choices=[c.name for c in grpc.StatusCode if c.name != "OK"])
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
