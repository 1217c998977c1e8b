"""Startup order, the load thread, signals and shutdown.

1. Parse flags (exit 2 on a bad command line, one line naming the flag).
2. Bind gRPC (and REST) first, so GetModelStatus answers START -> LOADING -> AVAILABLE.
3. Load the latest version in a thread, replay warmup, then AVAILABLE; on any failure END with the
   reason in the status, and keep answering until stopped.
4. SIGTERM / SIGINT: stop both front ends and the batch threads, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import threading
from pathlib import Path

import grpc

from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.errors import ConfigError, ModelError
from pytest_tfserving.server.flags import (
    FlagError,
    MonitoringConfig,
    ServerFlags,
    parse_flags,
    read_monitoring_config,
)
from pytest_tfserving.server.logs import setup_logging


class _LoadError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _configs(flags: ServerFlags) -> tuple[MonitoringConfig, BatchingParameters | None]:
    monitoring = MonitoringConfig()
    if flags.monitoring_config_file:
        monitoring = read_monitoring_config(flags.monitoring_config_file)
    batching = None
    if flags.enable_batching:
        batching = (read_batching_file(Path(flags.batching_parameters_file))
                    if flags.batching_parameters_file else BatchingParameters())
    return monitoring, batching


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv)
        monitoring, batching = _configs(flags)
    except (FlagError, ConfigError) as exc:
        print(f"pytest_tfserving.server: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    log = setup_logging()
    if flags.file_system_poll_wait_seconds != 1:
        log.info("--file_system_poll_wait_seconds=%d accepted: the bundled server loads the "
                 "latest version once and does not poll", flags.file_system_poll_wait_seconds)
    try:
        return asyncio.run(_serve(flags, monitoring, batching))
    except OSError as exc:
        log.error("%s", exc)
        return 1


def _load(core: object, flags: ServerFlags) -> None:
    from pytest_tfserving.server.core import Core
    from pytest_tfserving.server.logs import get_logger
    from pytest_tfserving.server.servable import find_version_dir, load_servable
    from pytest_tfserving.server.state import AVAILABLE, END, LOADING
    from pytest_tfserving.server.warmup import WarmupError, run_warmup

    assert isinstance(core, Core)
    log = get_logger()
    name = flags.model_name
    version = 0
    try:
        try:
            version, version_dir = find_version_dir(flags.model_base_path)
        except ModelError as exc:
            log.error("No versions of servable %s found under base path %s: %s", name,
                      flags.model_base_path, exc)
            raise _LoadError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        sid = f"{{name: {name} version: {version}}}"
        core.state.set(LOADING, version)
        log.info("Loading servable version %s", sid)
        use_tflite = flags.prefer_tflite_model and (version_dir / "model.tflite").is_file()
        log.info("Reading %s from: %s", "TFLite model" if use_tflite else "SavedModel",
                 version_dir)
        try:
            if use_tflite:
                from pytest_tfserving.server.tflite_servable import load_tflite_servable

                servable = load_tflite_servable(name, version, version_dir)
            else:
                servable = load_servable(name, version, version_dir)
        except ModelError as exc:
            raise _LoadError(grpc.StatusCode.DATA_LOSS, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - TF raises many kinds on a bad SavedModel
            raise _LoadError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"Failed to load SavedModel {version_dir}: "
                             f"{type(exc).__name__}: {exc}") from None
        log.info("SavedModel load for tags { serve }; Status: success. Signatures: %s",
                 ", ".join(sorted(servable.signatures)))
        core.servable = servable
        if flags.enable_model_warmup:
            try:
                run_warmup(core, servable, flags.num_request_iterations_for_warmup)
            except WarmupError as exc:
                raise _LoadError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        else:
            log.info("Model warmup is disabled (--enable_model_warmup=false)")
        # what loading built lives as long as the server: keep the collector from walking it
        # again (a full collection over a TensorFlow heap is a tail-latency spike of its own)
        gc.collect()
        gc.freeze()
        core.state.set(AVAILABLE, version)
        log.info("Successfully loaded servable version %s", sid)
    except _LoadError as exc:
        core.servable = None
        core.state.set(END, version, exc.code, exc.message)
        log.error("Loading servable: {name: %s version: %d} failed: %s: %s", name, version,
                  exc.code.name, exc.message)
    except Exception as exc:  # noqa: BLE001 - the process must keep answering status
        core.servable = None
        core.state.set(END, version, grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        log.exception("Loading servable: {name: %s version: %d} failed", name, version)


async def _serve(flags: ServerFlags, monitoring: MonitoringConfig,
                 batching: BatchingParameters | None) -> int:
    import tensorflow as tf

    from pytest_tfserving.server.core import Core
    from pytest_tfserving.server.grpc_service import build_server
    from pytest_tfserving.server.logs import get_logger
    from pytest_tfserving.server.metrics import Metrics
    from pytest_tfserving.server.rest import RestApi, RestServer
    from pytest_tfserving.server.state import ModelState

    log = get_logger()
    if flags.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(
            flags.tensorflow_intra_op_parallelism)
    if flags.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(
            flags.tensorflow_inter_op_parallelism)
    if batching is not None:
        log.info("Batching enabled: %s", batching.as_dict())
    core = Core(flags.model_name, ModelState(flags.model_name), Metrics(), batching)
    server, port = build_server(core, f"{flags.bind_address}:{flags.port}")
    await server.start()
    log.info("Running gRPC ModelServer at %s:%d ...", flags.bind_address, port)
    rest: RestServer | None = None
    if flags.rest_api_port:
        metrics_path = monitoring.prometheus_path if monitoring.prometheus_enabled else None
        rest = RestServer(RestApi(core, metrics_path, flags.rest_api_timeout_in_ms / 1000),
                          flags.bind_address, flags.rest_api_port)
        rest.start()
        log.info("Exporting HTTP/REST API at:%s:%d ...", flags.bind_address, rest.port)
        if metrics_path:
            log.info("Prometheus metrics at http://%s:%d%s", flags.bind_address, rest.port,
                     metrics_path)
    elif monitoring.prometheus_enabled:
        log.warning("Prometheus is enabled but --rest_api_port is 0: metrics are not exported")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loader = threading.Thread(target=_load, args=(core, flags), name="loader", daemon=True)
    loader.start()
    await stop.wait()
    log.info("Received a stop signal; shutting down")
    await server.stop(0.5)
    if rest is not None:
        rest.stop()
    core.close()
    log.info("Server stopped")
    return 0
