"""An already running TF Serving (e.g. a Kubernetes staging deployment): nothing is launched.

The gates still wait until the model is AVAILABLE there, after a connection probe bounded to a
few seconds (a target where nothing answers fails at once, and every later gate of the session
gets the same failure without waiting again). Flags of the ServeConfig (batching, threads,
warmup) cannot be applied to a server someone else started, so load-based figures describe that
deployment as it is configured, and the report says so.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError, ServerStartError, TFServingError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import METRICS_PATH, Endpoint, Launcher, ServeConfig
from pytest_tfserving.launchers.death import Ending

REMOTE_NOTE = ("remote endpoint: nothing was launched; serving flags (batching, threads, warmup) "
               "are the deployment's own, so load-based figures describe that deployment")
CONNECT_TIMEOUT_S = 5.0  # the connection probe's bound
PROBE_EVERY_S = 0.5  # death(): at most one GetModelStatus per this interval
PROBE_TIMEOUT_S = 0.3  # ... each with this deadline
DEAD_AFTER_S = 1.0  # ... and the target is dead once probes failed for this long
_unreachable: dict[tuple[str, str], str] = {}  # (session id, target) -> the failure message
_unreachable_lock = threading.Lock()


class TargetUnreachableError(ServerStartError):
    """Nothing answered gRPC at the remote target within the connection probe's bound."""


class RemoteLauncher(Launcher):
    """Gates an endpoint someone else runs; ``stop`` leaves it running."""

    kind = "remote"
    display_name = "remote server"

    def __init__(self, config: ServeConfig, settings: BackendSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or BackendSettings()
        self._probe_client: Any = None
        self._last_probe = 0.0
        self._failing_since: float | None = None

    @property
    def target(self) -> str:
        return self.settings.target or ""

    def _launch(self, deadline: Deadline) -> Endpoint:
        if self.config.deployment is not None:
            raise ConfigError(
                "--tfs-model-config cannot be served on --tfs-backend=remote: the remote "
                "endpoint's config is the one it was started with. Use --tfs-backend=bundled, "
                "binary or docker.")
        if not self.target:
            raise ConfigError(
                "--tfs-backend=remote needs the endpoint to gate: pass --tfs-target=HOST:PORT "
                "(gRPC, e.g. tfs.staging.internal:8500) and optionally --tfs-rest-target="
                "http://HOST:8501."
            )
        self._probe_connection(deadline)
        rest = self.settings.rest_target
        return Endpoint(
            grpc_address=self.target, rest_address=rest, model_name=self.config.model_name,
            backend=self.kind, image_or_binary=self.target,
            metrics_url=rest + METRICS_PATH if rest else None,
            extra={"note": REMOTE_NOTE},
        )

    def _probe_connection(self, deadline: Deadline) -> None:
        """Fail within CONNECT_TIMEOUT_S when no gRPC connection to the target comes up; a
        failure is remembered for the session, so later gates fail at once the same way."""
        import grpc

        key = (self.settings.session_id, self.target)
        with _unreachable_lock:
            known = _unreachable.get(key)
        if known is not None:
            raise TargetUnreachableError(known)
        bound = min(CONNECT_TIMEOUT_S, max(0.5, deadline.remaining()))
        channel = grpc.insecure_channel(self.target)
        try:
            grpc.channel_ready_future(channel).result(timeout=bound)
            return
        except grpc.FutureTimeoutError:
            message = (
                f"Nothing answers gRPC at the remote target {self.target} (from --tfs-target): "
                f"no connection within {bound:.0f} s. Fix: check the host and the gRPC port "
                "(TF Serving's --port, 8500 by default; not the REST port), that the server "
                "runs and that this machine can reach it; or gate a local server with "
                "--tfs-backend=bundled.")
        finally:
            channel.close()
        with _unreachable_lock:
            _unreachable[key] = message
        raise TargetUnreachableError(message)

    def _explain(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TFServingError) and not isinstance(exc, (ConfigError,
                                                                     TargetUnreachableError)):
            return type(exc)(
                f"{exc} Remote target {self.target} (from --tfs-target): check that it is "
                f"reachable from here and serves a model named {self.config.model_name!r} "
                "(--tfs-model-name).")
        return exc

    def _ending(self) -> Ending | None:
        """Once the model was AVAILABLE: a GetModelStatus with a short deadline at most every
        PROBE_EVERY_S; the target is dead when probes failed for DEAD_AFTER_S or longer."""
        if not self.ready or self.endpoint is None:
            return None
        now = time.monotonic()
        if now - self._last_probe < PROBE_EVERY_S:
            return None
        self._last_probe = now
        failure = self._probe_status()
        if failure is None:
            self._failing_since = None
            return None
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= DEAD_AFTER_S:
            return Ending(f"stopped answering: {failure}")
        return None

    def _probe_status(self) -> str | None:
        """None when the target answers GetModelStatus (even NOT_FOUND); else the gRPC error."""
        import grpc

        from pytest_tfserving.client import TFServingClient

        if self._probe_client is None:
            self._probe_client = TFServingClient(self.target, self.config.model_name)
        try:
            self._probe_client.status(timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                return None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return f"{code.name if code else 'error'}: {details}"
        return None

    def _stop(self) -> None:
        """Nothing to stop: the deployment is not ours. Only the probe's channel closes."""
        client, self._probe_client = self._probe_client, None
        if client is not None:
            client.close()

    def server_name(self) -> str:
        return f"remote target {self.target}"

    def logs(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "note": REMOTE_NOTE}
