"""The bundled server's process: startup order, the manager thread, signals and shutdown.

1. Parse flags and read every config file (exit 2 on a bad command line, 1 on a bad file, one
   line naming the value; a bad ModelServerConfig reads as TF Serving's parse error).
2. Bind gRPC (TCP and/or UNIX socket) and REST first, so GetModelStatus answers
   START -> LOADING -> AVAILABLE while models load. (TF Serving binds after the initial load.)
3. The manager thread applies the model config, polls base paths every
   ``--file_system_poll_wait_seconds`` and the config file every
   ``--model_config_file_poll_wait_seconds``. A config TF Serving refuses at start (e.g. a label
   on a version that is not AVAILABLE) stops the server with TF Serving's error; a version that
   fails to load ends in END with the reason and the process keeps answering.
4. SIGTERM / SIGINT: stop polling, both front ends and the batch threads, exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.bundled_server.flag_table import (
    FlagError,
    MonitoringConfig,
    ServerFlags,
    parse_channel_arguments,
    parse_flags,
    read_monitoring_config,
)
from pytest_tfserving.bundled_server.logs import setup_logging
from pytest_tfserving.bundled_server.model_config import (
    ModelConfig,
    read_model_config,
    single_model_config,
)
from pytest_tfserving.errors import ConfigError

if TYPE_CHECKING:
    import grpc

    from pytest_tfserving.bundled_server.core import Core
    from pytest_tfserving.bundled_server.manager import ModelManager
    from pytest_tfserving.bundled_server.rest import RestServer
    from pytest_tfserving.bundled_server.servable import Servable

VERSION = "pytest-tfserving bundled ModelServer (TF Serving API compatible)"


@dataclass(frozen=True)
class StartConfig:
    """Everything read from files before anything starts."""

    flags: ServerFlags
    models: list[ModelConfig]
    monitoring: MonitoringConfig
    batching: BatchingParameters | None
    credentials: grpc.ServerCredentials | None
    session_config: bytes  # serialized ConfigProto (--tensorflow_session_config_file)


def _read_files(flags: ServerFlags) -> StartConfig:
    from pytest_tfserving.bundled_server.tls import read_ssl_credentials

    monitoring = MonitoringConfig()
    if flags.monitoring_config_file:
        monitoring = read_monitoring_config(flags.monitoring_config_file)
    batching = None
    if flags.enable_batching:
        batching = (read_batching_file(Path(flags.batching_parameters_file))
                    if flags.batching_parameters_file else BatchingParameters())
    models = (read_model_config(flags.model_config_file) if flags.model_config_file
              else single_model_config(flags.model_name, flags.model_base_path))
    credentials = read_ssl_credentials(flags.ssl_config_file) if flags.ssl_config_file else None
    session_config = b""
    if flags.tensorflow_session_config_file:
        session_config = read_session_config(flags.tensorflow_session_config_file)
    return StartConfig(flags, models, monitoring, batching, credentials, session_config)


def read_session_config(path: str) -> bytes:
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2

    proto = config_pb2.ConfigProto()
    try:
        text_format.Parse(Path(path).read_text(), proto)
    except OSError as exc:
        raise ConfigError(f"Cannot read --tensorflow_session_config_file {path!r}: "
                          f"{exc.strerror}") from None
    except text_format.ParseError as exc:
        raise ConfigError(f"Error parsing text-format tensorflow.ConfigProto: {exc} "
                          f"(in {path})") from None
    return bytes(proto.SerializeToString())


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv)
    except FlagError as exc:
        print(f"pytest_tfserving.bundled_server: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    if flags.version:
        print(f"TensorFlow ModelServer: {VERSION}")
        return 0
    try:
        start = _read_files(flags)
    except (FlagError, ConfigError) as exc:
        print(f"Failed to start server. Error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    log = setup_logging()
    for line in flags.ignored_given():
        log.info("%s", line)
    try:
        return asyncio.run(_serve(start))
    except OSError as exc:
        log.error("%s", exc)
        return 1


def _build_manager(start: StartConfig, core_box: list[Core]) -> ModelManager:
    from pytest_tfserving.bundled_server.heap import collect_versions
    from pytest_tfserving.bundled_server.loading import make_loader
    from pytest_tfserving.bundled_server.manager import ModelManager, RetryPolicy
    from pytest_tfserving.bundled_server.warmup_replay import warmup_or_raise

    flags = start.flags

    def on_available(servable: Servable) -> None:
        if flags.enable_per_model_batching_parameters:
            use_model_batching(core_box[0], servable)
        if flags.enable_model_warmup:
            warmup_or_raise(core_box[0], servable, flags.warmup_iterations)
        collect_versions()

    def on_unload(servable: Servable) -> None:
        core_box[0].forget(servable)
        servable.close()

    retry = RetryPolicy(flags.max_num_load_retries,
                        max(0.0, flags.load_retry_interval_micros / 1e6))
    return ModelManager(make_loader(flags, start.session_config), on_available, on_unload, retry,
                        flags.allow_version_labels_for_unavailable_models,
                        on_released=collect_versions)


PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


def use_model_batching(core: Core, servable: Servable) -> None:
    """``--enable_per_model_batching_parameters``: the version dir's ``batching_params.pbtxt``
    replaces the global batching parameters for this model (the batch threads stay shared)."""
    from pytest_tfserving.bundled_server.logs import get_logger
    from pytest_tfserving.bundled_server.status import invalid

    path = servable.version_dir / PER_MODEL_BATCHING_FILE
    if core.scheduler is None or not path.is_file():
        return
    try:
        params = read_batching_file(path)
    except ConfigError as exc:
        raise invalid(str(exc)) from None
    core.scheduler.set_params(list(servable.signatures.values()), params)
    get_logger().info("Model %s version %d batches with %s: %s", servable.name,
                      servable.version, path, params.as_dict())


def _manage(manager: ModelManager, core: Core, start: StartConfig, stop: threading.Event,
            fatal: list[str]) -> None:
    """The manager thread: initial config, then polling until ``stop``."""
    from pytest_tfserving.bundled_server.heap import freeze_baseline
    from pytest_tfserving.bundled_server.logs import get_logger
    from pytest_tfserving.bundled_server.manager import run_polling
    from pytest_tfserving.bundled_server.status import ServingError

    log = get_logger()
    flags = start.flags
    freeze_baseline()
    try:
        manager.apply(start.models)
    except ServingError as exc:
        log.error("Failed to start server. Error: %s: %s", exc.code_name, exc.message)
        fatal.append(exc.message)
        stop.set()
        return
    core.ready.set()

    def poll_config() -> None:
        try:
            models = read_model_config(flags.model_config_file)
        except ConfigError as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            return
        try:
            manager.apply(models)
        except ServingError as exc:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.message)

    config_poll = poll_config if flags.model_config_file else None
    run_polling(manager, stop, flags.file_system_poll_wait_seconds, config_poll,
                flags.model_config_file_poll_wait_seconds)


async def _serve(start: StartConfig) -> int:
    from pytest_tfserving.bundled_server.core import Core, RequestOptions
    from pytest_tfserving.bundled_server.grpc_service import GrpcListen, build_server
    from pytest_tfserving.bundled_server.logs import get_logger
    from pytest_tfserving.bundled_server.metrics import Metrics

    log = get_logger()
    flags = start.flags
    if start.batching is not None:
        log.info("Batching enabled: %s", start.batching.as_dict())
    core_box: list[Core] = []
    manager = _build_manager(start, core_box)
    core = Core(manager, Metrics(), start.batching,
                RequestOptions(flags.enable_signature_method_name_check,
                               flags.enable_serialization_as_tensor_content))
    core_box.append(core)
    listen = GrpcListen(
        tcp_address=f"{flags.bind_address}:{flags.port}" if flags.port else None,
        socket_path=flags.grpc_socket_path,
        channel_arguments=tuple(parse_channel_arguments(flags.grpc_channel_arguments)),
        credentials=start.credentials, health=flags.enable_grpc_healthcheck_service,
        profiler=flags.enable_profiler)
    server, port = build_server(core, listen)
    await server.start()
    if port:
        log.info("Running gRPC ModelServer at %s:%d ...", flags.bind_address, port)
    if flags.grpc_socket_path:
        log.info("Running gRPC ModelServer at UNIX socket %s ...", flags.grpc_socket_path)
    rest = _start_rest(core, start)

    stop = threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fatal: list[str] = []
    manager_thread = threading.Thread(target=_manage, args=(manager, core, start, stop, fatal),
                                      name="manager", daemon=True)
    manager_thread.start()
    await loop.run_in_executor(None, stop.wait)
    manager.stop()
    log.info("Received a stop signal; shutting down" if not fatal else "Stopping")
    await server.stop(0.5)
    if rest is not None:
        rest.stop()
    core.close()
    log.info("Server stopped")
    return 1 if fatal else 0


def _start_rest(core: Core, start: StartConfig) -> RestServer | None:
    from pytest_tfserving.bundled_server.logs import get_logger
    from pytest_tfserving.bundled_server.rest import RestApi, RestServer

    log = get_logger()
    flags, monitoring = start.flags, start.monitoring
    if not flags.rest_api_port:
        if monitoring.prometheus_enabled:
            log.warning("Prometheus is enabled but --rest_api_port is 0: metrics are not "
                        "exported")
        return None
    metrics_path = monitoring.prometheus_path if monitoring.prometheus_enabled else None
    api = RestApi(core, metrics_path, flags.rest_api_timeout_in_ms / 1000,
                   flags.rest_api_num_threads, flags.rest_api_enable_cors_support)
    rest = RestServer(api, flags.bind_address, flags.rest_api_port)
    rest.start()
    log.info("Exporting HTTP/REST API at:%s:%d ...", flags.bind_address, rest.port)
    if metrics_path:
        log.info("Prometheus metrics at http://%s:%d%s", flags.bind_address, rest.port,
                 metrics_path)
    return rest
