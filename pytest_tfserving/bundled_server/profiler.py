"""``--enable_profiler`` (TF Serving's default): the TF profiler service on the model server's
own gRPC port.

TF Serving registers TensorFlow's ``ProfilerService`` (``tensorflow.ProfilerService``: Profile,
Terminate, Monitor) on its gRPC server, so ``tf.profiler.experimental.client.trace(grpc_addr,
...)`` traces the served models. Python cannot add a C++ service to a ``grpc.aio`` server, so the
bundled server starts TensorFlow's own profiler server in this process on a loopback-only port
picked at start and forwards those three methods to it, bytes unchanged: the trace is of this
process's TensorFlow runtime, as with TF Serving.
"""

from __future__ import annotations

import socket
from typing import Any

import grpc

SERVICE = "tensorflow.ProfilerService"
METHODS = ("Profile", "Terminate", "Monitor")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_profiler_service(server: grpc.aio.Server) -> int:
    """Start TF's profiler server and forward the service to it; returns its internal port."""
    from tensorflow.python.profiler import profiler_v2

    port = _free_port()
    profiler_v2.start_server(port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    def forward(method: str) -> Any:
        call = channel.unary_unary(f"/{SERVICE}/{method}")

        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                reply: bytes = await call(request, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            return reply

        return grpc.unary_unary_rpc_method_handler(handle)

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {m: forward(m) for m in METHODS})
    server.add_generic_rpc_handlers((handler,))
    return port
