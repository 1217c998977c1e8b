"""An already running TF Serving (e.g. a Kubernetes staging deployment): nothing is launched.

The gates still wait until the model is AVAILABLE there. Flags of the ServeConfig (batching,
threads, warmup) cannot be applied to a server someone else started, so load-based figures
describe that deployment as it is configured, and the report says so.
"""

from __future__ import annotations

from typing import Any

from pytest_tfserving.client import TFServingClient
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError, TFServingError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import METRICS_PATH, Endpoint, Launcher, ServeConfig

REMOTE_NOTE = ("remote endpoint: nothing was launched; serving flags (batching, threads, warmup) "
               "are the deployment's own, so load-based figures describe that deployment")


class RemoteLauncher(Launcher):
    kind = "remote"

    def __init__(self, config: ServeConfig, settings: BackendSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or BackendSettings()

    def start(self, deadline: Deadline) -> Endpoint:
        if self.config.deployment is not None:
            raise ConfigError(
                "--tfs-model-config cannot be served on --tfs-backend=remote: the remote "
                "endpoint's config is the one it was started with. Use --tfs-backend=bundled, "
                "binary or docker.")
        target = self.settings.target
        if not target:
            raise ConfigError(
                "--tfs-backend=remote needs the endpoint to gate: pass --tfs-target=HOST:PORT "
                "(gRPC, e.g. tfs.staging.internal:8500) and optionally --tfs-rest-target="
                "http://HOST:8501."
            )
        rest = self.settings.rest_target
        endpoint = Endpoint(
            grpc_address=target, rest_address=rest, model_name=self.config.model_name,
            backend=self.kind, image_or_binary=target,
            metrics_url=rest + METRICS_PATH if rest else None,
            extra={"note": REMOTE_NOTE},
        )
        client = TFServingClient(target, self.config.model_name)
        try:
            client.wait_available(deadline)
        except TFServingError as exc:
            raise type(exc)(
                f"{exc} Remote target {target} (from --tfs-target): check that it is reachable "
                f"from here and serves a model named {self.config.model_name!r} "
                "(--tfs-model-name)."
            ) from None
        finally:
            client.close()
        self.endpoint = endpoint
        return endpoint

    def stop(self) -> None:
        """Nothing to stop: the deployment is not ours."""

    def logs(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "note": REMOTE_NOTE}
