"""The gRPC front end: PredictionService and ModelService on a ``grpc.aio`` server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from pytest_tfserving.bundled_server import classify, multi_inference
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.logs import get_logger
from pytest_tfserving.bundled_server.status import ServingError, grpc_code_value

_OK = "OK"


async def _call(core: Core, api: str | None, request: Any, context: grpc.aio.ServicerContext[
        Any, Any], work: Awaitable[Any]) -> Any:
    t0 = time.monotonic()
    try:
        response = await work
    except ServingError as exc:
        if api is not None:
            core.metrics.record_request(request.model_spec.name, api, "GRPC", exc.code_name, 0)
        await context.abort(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - a malformed request never kills the server
        get_logger().exception("Internal error in %s", api or "request")
        if api is not None:
            core.metrics.record_request(request.model_spec.name, api, "GRPC", "INTERNAL", 0)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    if api is not None:
        core.metrics.record_request(request.model_spec.name, api, "GRPC", _OK,
                                    (time.monotonic() - t0) * 1e6)
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, core: Core) -> None:
        self.core = core

    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _call(self.core, "Predict", request, context,
                           self.core.predict_async(request))

    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _call(self.core, "Classify", request, context,
                           classify.classify_async(self.core, request))

    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _call(self.core, "Regress", request, context,
                           classify.regress_async(self.core, request))

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def run() -> Any:
            return self.core.metadata(request)

        return await _call(self.core, None, request, context, run())

    async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        # TF Serving records no request count/latency for MultiInference (api=None here).
        return await _call(self.core, None, request, context,
                           multi_inference.multi_inference_async(self.core, request))


def status_response(core: Core, model_spec: Any) -> Any:
    """GetModelStatusResponse for ``model_spec``; raises NOT_FOUND as TF Serving."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for st in core.manager.statuses(model_spec):
        mvs = response.model_version_status.add()
        mvs.version = st.version
        mvs.state = st.state
        mvs.status.error_code = grpc_code_value(st.error_code)
        mvs.status.error_message = st.error_message
    return response


def reload_config(core: Core, request: Any) -> Any:
    """HandleReloadConfigRequest: validate and apply the new ModelServerConfig (the new models
    are loaded before it answers, as ServerCore::ReloadConfig waits for them)."""
    from tensorflow_serving.apis import model_management_pb2

    from pytest_tfserving.bundled_server.model_config import from_proto
    from pytest_tfserving.bundled_server.status import invalid
    from pytest_tfserving.errors import ConfigError

    try:
        models = from_proto(request.config, "ReloadConfigRequest")
    except ConfigError as exc:
        raise invalid(str(exc)) from None
    core.manager.apply(models)
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = 0
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, core: Core) -> None:
        self.core = core

    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def run() -> Any:
            return status_response(self.core, request.model_spec)

        return await _call(self.core, None, request, context, run())

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        loop = asyncio.get_running_loop()
        return await _call(self.core, None, request, context,
                           loop.run_in_executor(None, reload_config, self.core, request))


@dataclass(frozen=True)
class GrpcListen:
    """Where and how the gRPC front end listens."""

    tcp_address: str | None  # "host:port"; None: no TCP listener (--port=0)
    socket_path: str = ""  # --grpc_socket_path
    channel_arguments: tuple[tuple[str, int | str], ...] = ()
    credentials: grpc.ServerCredentials | None = None  # --ssl_config_file
    health: bool = False  # --enable_grpc_healthcheck_service
    profiler: bool = False  # --enable_profiler


def build_server(core: Core, listen: GrpcListen) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server on ``listen``; returns it and the bound TCP port (0 when none)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 1 << 30),
        ("grpc.max_send_message_length", 1 << 30),
        ("grpc.so_reuseport", 0),
    ]
    options += list(listen.channel_arguments)  # later entries win, as in ServerBuilder
    server = grpc.aio.server(options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if listen.health:
        from pytest_tfserving.bundled_server.health import add_health_service

        add_health_service(server, core)
    if listen.profiler:
        from pytest_tfserving.bundled_server.profiler import add_profiler_service

        add_profiler_service(server)
    port = 0
    if listen.tcp_address is not None:
        port = _bind(server, listen.tcp_address, listen.credentials)
    if listen.socket_path:
        _bind(server, f"unix:{listen.socket_path}", listen.credentials)
    return server, port


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
          ) -> int:
    try:
        port = int(server.add_secure_port(address, credentials) if credentials is not None
                   else server.add_insecure_port(address))
    except RuntimeError as exc:  # grpcio >= 1.5x raises instead of returning 0
        port = 0
        detail = f": {exc}"
    else:
        detail = ""
    if port == 0:
        raise OSError(f"Failed to bind gRPC to {address} (address already in use?){detail}")
    return port
