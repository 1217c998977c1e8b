"""The stateful object that owns one pytest run: model, servers, gate results.

Registered in ``config.stash``; ``plugin.py`` holds only hooks that delegate here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.gates.result import GateResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_tfserving.client import TFServingClient
    from pytest_tfserving.launchers.base import Endpoint, Launcher, ServeConfig
    from pytest_tfserving.launchers.death import ServerDeath
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.settings import Settings


@dataclass
class RunningServer:
    """A started server with its client; what the ``tfs_server`` fixture yields."""

    launcher: Launcher
    endpoint: Endpoint
    config: ServeConfig
    _client: TFServingClient | None = None

    @property
    def grpc_address(self) -> str:
        return self.endpoint.grpc_address

    @property
    def rest_address(self) -> str | None:
        return self.endpoint.rest_address

    @property
    def model_name(self) -> str:
        return self.endpoint.model_name

    @property
    def backend(self) -> str:
        return self.endpoint.backend

    def client(self) -> TFServingClient:
        if self._client is None:
            from pytest_tfserving.client import TFServingClient

            self._client = TFServingClient(self.endpoint.grpc_address, self.endpoint.model_name,
                                           self.endpoint.rest_address, self.endpoint.metrics_url)
        return self._client

    def logs(self) -> str:
        return self.launcher.logs()

    def metrics(self) -> str:
        return self.client().metrics_text()

    def death(self) -> ServerDeath | None:
        """None while the server runs; else how and when it ended, with its last log lines
        (``abort_reason(running)`` turns this into a load run's abort hook)."""
        return self.launcher.death()

    def stop(self) -> None:
        """Close the client, stop the server and remove what was staged for it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.launcher.cleanup()


@dataclass
class TFSSession:
    settings: Settings
    results: list[GateResult] = field(default_factory=list)
    backend_kind: str | None = None
    backend_reason: str = ""
    _model: ModelInfo | None = None
    _servers: dict[ServeConfig, RunningServer] = field(default_factory=dict)
    _failed: dict[ServeConfig, BaseException] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # stops servers
    cache: dict[str, Any] = field(default_factory=dict)  # analyses shared between gates
    started: list[dict[str, Any]] = field(default_factory=list)  # what ran, for the report
    _cleanups: list[Callable[[], None]] = field(default_factory=list)
    # test node id -> the (gate, target) pairs it runs: selected gates, to find the ones that
    # never report a verdict
    expected: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    # --- model --------------------------------------------------------------------------------

    def model(self) -> ModelInfo:
        """The model under gate: ``--tfs-model``, or with ``--tfs-model-config`` the version the
        config's policy serves in the gated model's slot (the candidate's, if given)."""
        if self._model is None:
            from pytest_tfserving.model import inspect_model

            deployment = self.settings.deployment
            if deployment is not None:
                path = deployment.version_dir if deployment.stage_slot else deployment.slot_base
                self._model = inspect_model(path, deployment.gated, version=deployment.version)
            elif self.settings.core.model is not None:
                self._model = inspect_model(self.settings.core.model,
                                            self.settings.core.model_name)
            else:
                raise ConfigError("No model under gate: pass --tfs-model=PATH or "
                                  "--tfs-model-config=FILE (or set tfs_model in the ini file).")
        return self._model

    def model_description(self) -> dict[str, Any]:
        """The report's ``model`` section: the inspected model, and with a model config the
        file and the model under gate in it."""
        described = self.model().as_dict()
        if self.settings.deployment is not None:
            deployment = self.settings.deployment.describe()
            described["model_config"] = deployment.pop("config_file")
            described["deployment"] = deployment
        return described

    def default_serve_config(self) -> ServeConfig:
        """What the served gates and ``tfs_server`` serve: the float model, or with
        ``--tfs-int8-serve`` its INT8 TFLite conversion (``--prefer_tflite_model``)."""
        if self.settings.int8.serve:
            from pytest_tfserving.int8.serve import int8_serve_config

            return int8_serve_config(self, self.settings.int8)
        return self.float_serve_config()

    def float_serve_config(self) -> ServeConfig:
        from pytest_tfserving.launchers.base import ServeConfig

        model = self.model()
        return ServeConfig(
            model_name=model.name, version_dir=model.version_dir, version=model.version,
            batching=self.settings.batching,
            intra_op_threads=self.settings.core.intra_op_threads,
            inter_op_threads=self.settings.core.inter_op_threads,
            extra_flags=self.settings.core.server_args,
            deployment=self.settings.deployment,
        )

    def serve_config(self, **changes: Any) -> ServeConfig:
        return dataclasses.replace(self.default_serve_config(), **changes)

    # --- servers ------------------------------------------------------------------------------

    def backend(self) -> str:
        if self.backend_kind is None:
            from pytest_tfserving.launchers.select import choose_backend

            self.backend_kind, self.backend_reason = choose_backend(self.settings.core.backend,
                                                                    self.settings.backend)
        return self.backend_kind

    def server(self, config: ServeConfig | None = None) -> RunningServer:
        """The running server for ``config`` (default: the settings'); started once and kept
        for the session. A start that failed is not retried: every user sees the same error."""
        from pytest_tfserving.launchers.select import launcher_factory

        config = config or self.default_serve_config()
        with self._lock:
            if config in self._servers:
                return self._servers[config]
            if config in self._failed:
                raise self._failed[config]
            launcher = launcher_factory(self.backend(), self.settings.backend)(config)
            try:  # a failed start has cleaned up after itself
                endpoint = launcher.start(Deadline.after(self.settings.core.start_timeout))
            except BaseException as exc:
                self._failed[config] = exc
                raise
            running = RunningServer(launcher, endpoint, config)
            self._stack.callback(running.stop)
            self.started.append({**launcher.describe(), "label": config.label or "default"})
            self._servers[config] = running
            return running

    def stop_server(self, config: ServeConfig) -> None:
        """Stop the server started for ``config`` (if running) and forget it, so that a later
        ``server(config)`` starts a fresh one; the tuner stops each candidate's this way."""
        with self._lock:
            running = self._servers.pop(config, None)
            self._failed.pop(config, None)
        if running is not None:
            running.stop()

    def servers(self) -> list[RunningServer]:
        return list(self._servers.values())

    def stop_servers(self) -> None:
        """Stop every server, last started first (each stop runs even if another fails)."""
        with self._lock:
            stack, self._stack, self._servers = self._stack, contextlib.ExitStack(), {}
        stack.close()

    def add_cleanup(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the session ends (after the servers stop)."""
        self._cleanups.append(cleanup)

    def close(self) -> None:
        """Stop every server, then run the cleanups (last added first)."""
        try:
            self.stop_servers()
        finally:
            while self._cleanups:
                self._cleanups.pop()()

    # --- results ------------------------------------------------------------------------------

    def record(self, result: GateResult) -> None:
        self.results.append(result)

    def backend_description(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": self.backend_kind, "reason": self.backend_reason,
                                     "image_or_binary": None}
        if self.started:
            described.update({k: v for k, v in self.started[0].items() if v is not None})
            described["servers"] = self.started
        return described


SESSION_KEY = pytest.StashKey[TFSSession]()


def get_session(config: pytest.Config) -> TFSSession:
    return config.stash[SESSION_KEY]
