"""The gRPC health service, ``grpc.health.v1.Health/Check``
(``--enable_grpc_healthcheck_service``).

Served with a generic handler on raw bytes: the two messages are one field each
(``HealthCheckRequest.service = 1``, ``HealthCheckResponse.status = 1``), so no extra package is
needed. The overall service ("") and the two TF Serving services answer SERVING once the initial
load is over, NOT_SERVING before; any other name is NOT_FOUND, as gRPC's default health service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from pytest_tfserving.bundled_server.core import Core

SERVING, NOT_SERVING = 1, 2
KNOWN_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _service_name(data: bytes) -> str:
    """Field 1 (length-delimited) of HealthCheckRequest; other fields are skipped."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 2:
            size, i = _varint(data, i)
            if key >> 3 == 1:
                return data[i:i + size].decode("utf-8", "replace")
            i += size
        elif key & 7 == 0:
            _, i = _varint(data, i)
        else:
            raise ValueError("malformed HealthCheckRequest")
    return ""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def add_health_service(server: grpc.aio.Server, core: Core) -> None:
    async def check(request: bytes, context: Any) -> bytes:
        try:
            service = _service_name(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if service not in KNOWN_SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        status = SERVING if core.manager.settled() else NOT_SERVING
        return bytes([0x08, status])

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check),
    })
    server.add_generic_rpc_handlers((handler,))
