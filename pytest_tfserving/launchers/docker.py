"""TF Serving in a container (docker SDK), following the official ``tensorflow/serving`` contract.

The image's entrypoint runs ``tensorflow_model_server --port=8500 --rest_api_port=8501
--model_name=$MODEL_NAME --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME "$@"``, so the launcher
sets ``MODEL_NAME``, mounts the version under gate read-only at ``/models/<name>/<version>``, the
batching/monitoring files read-only at ``/tfs-config``, appends the tuning flags as arguments, and
publishes 8500/8501 on 127.0.0.1 only (free host ports). With ``--tfs-model-config`` every model's
base dir is mounted read-only at ``/models/<name>`` and ``--model_config_file`` names a copy of
the config (in ``/tfs-config``) whose base paths are those mounts; TF Serving takes the config
file over the entrypoint's ``--model_name``/``--model_base_path``.

Every container carries labels naming this pytest process (session id, host, pid and the pid's
start time); a container whose owner is gone (a run killed with SIGKILL) is removed by the next
run's sweep. The container is removed at teardown and after any failed start.
"""

from __future__ import annotations

import itertools
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError, ServerStartError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import (
    GRPC_CONTAINER_PORT,
    METRICS_PATH,
    REST_CONTAINER_PORT,
    Endpoint,
    Launcher,
    ServeConfig,
)
from pytest_tfserving.launchers.death import Ending
from pytest_tfserving.launchers.deployment import (
    ServedModel,
    describe_served,
    mount_point,
    write_served_config,
)
from pytest_tfserving.launchers.docker_engine import (
    LABEL_MODEL,
    LABEL_SESSION,
    connect,
    ensure_image,
    owner_labels,
    short_error,
    sweep_once,
)
from pytest_tfserving.launchers.server_flags import tuning_flags, write_config_files
from pytest_tfserving.ports import free_port
from pytest_tfserving.staging import make_staging_dir

MODEL_BASE_PATH = "/models"
CONFIG_MOUNT = "/tfs-config"
STATE_CACHE_S = 0.5  # death(): the container's state is asked of the engine at most this often
_PORT_CONFLICT = ("port is already allocated", "address already in use", "bind for")
_names = itertools.count(1)


# --- what the container gets ------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerSpec:
    """The flags appended to the image's entrypoint and the read-only bind mounts
    (``host:container:ro``); with a model config, each model's base path in the container and
    on the host."""

    command: list[str]
    binds: list[str]
    bases: dict[str, str] = field(default_factory=dict)
    host_paths: dict[str, str] = field(default_factory=dict)
    served_config: str | None = None


def model_mount(config: ServeConfig) -> str:
    return f"{MODEL_BASE_PATH}/{config.model_name}/{config.version_dir_name}"


def container_spec(config: ServeConfig, files: Path) -> ContainerSpec:
    """What the container runs and sees. One model: the version under gate at
    ``/models/<name>/<version>``. A model config: each model's base dir at ``/models/<name>``
    (a staged slot: its one version dir at ``/models/<name>/<version>``) and the served copy of
    the config, written into ``files`` (mounted at /tfs-config) with those container paths."""
    binds = [f"{files}:{CONFIG_MOUNT}:ro"]
    command = tuning_flags(config, CONFIG_MOUNT)
    if config.deployment is None and config.base_dir is not None:  # the rollout's base dir
        base_mount = f"{MODEL_BASE_PATH}/{config.model_name}"
        return ContainerSpec(command, [f"{config.base_dir.resolve()}:{base_mount}:ro", *binds])
    if config.deployment is None:
        return ContainerSpec(command, [f"{config.version_dir.resolve()}:{model_mount(config)}:ro",
                                       *binds])
    host_paths: dict[str, str] = {}

    def base_path_of(index: int, model: ServedModel) -> str:
        point = mount_point(MODEL_BASE_PATH, model.name, index)
        if model.base_path is not None:
            source, target = model.base_path.resolve(), point
        else:
            assert model.version_dir is not None
            source, target = model.version_dir.resolve(), f"{point}/{model.version_dir_name}"
        binds.append(f"{source}:{target}:ro")
        host_paths[model.name] = str(source)
        return point

    path, bases = write_served_config(config, files, base_path_of)
    served = f"{CONFIG_MOUNT}/{path.name}"
    return ContainerSpec([*command, f"--model_config_file={served}"], binds, bases, host_paths,
                         served)


# --- the launcher -----------------------------------------------------------------------------

class DockerLauncher(Launcher):
    """One container of the image, its ports published on 127.0.0.1 only."""

    kind = "docker"
    display_name = "container"

    def __init__(self, config: ServeConfig, settings: BackendSettings | None = None,
                 image: str | None = None) -> None:
        super().__init__(config)
        self.settings = settings or BackendSettings()
        self.image = image or config.image or self.settings.image
        self.image_id: str | None = None
        self.client: Any = None
        self.container: Any = None
        self.container_name: str | None = None
        self.swept: list[str] = []
        self._spec: ContainerSpec | None = None
        self._last_logs = ""
        self._state: tuple[float, Ending | None] = (0.0, None)  # (when asked, what it said)

    def _launch(self, deadline: Deadline) -> Endpoint:
        version_dir = self.config.version_dir.resolve()
        if not version_dir.is_dir():
            raise ConfigError(f"Model version dir {version_dir} does not exist; check --tfs-model.")
        self.client = connect()
        self.swept = sweep_once(self.client)
        image = ensure_image(self.client, self.image, self.settings.pull)
        self.image_id = str(image.id)
        self.workdir = make_staging_dir("tfs-docker-")
        files = self.workdir / "config"
        write_config_files(self.config, files)
        spec = self._spec = container_spec(self.config, files)
        for path in (self.workdir, files, *files.iterdir()):  # readable by a non-root server
            path.chmod(0o755 if path.is_dir() else 0o644)
        grpc_port, rest_port = self._create_and_start(image, spec)
        rest = f"http://127.0.0.1:{rest_port}"
        return Endpoint(
            grpc_address=f"127.0.0.1:{grpc_port}", rest_address=rest,
            model_name=self.config.model_name, backend=self.kind,
            image_or_binary=f"{self.image} (id {self.image_id.removeprefix('sha256:')[:12]})",
            metrics_url=rest + METRICS_PATH if self.config.monitoring else None,
            extra={"container": self.container_name, "image": self.image,
                   "image_id": self.image_id, "swept": self.swept,
                   **({"model_config_file": spec.served_config} if spec.served_config else {})},
        )

    def _create_and_start(self, image: Any, spec: ContainerSpec) -> tuple[int, int]:
        """Create and start the container on free host ports; a port another process took in
        between is tried again on fresh ones (3 tries)."""
        from docker.errors import APIError

        name = self._name()
        for attempt in range(3):
            grpc_port, rest_port = free_port(), free_port()
            try:
                self.container = self.client.containers.create(
                    image.id, command=spec.command, name=name, detach=True,
                    labels=self._labels(), environment=self._environment(), volumes=spec.binds,
                    ports={f"{GRPC_CONTAINER_PORT}/tcp": ("127.0.0.1", grpc_port),
                           f"{REST_CONTAINER_PORT}/tcp": ("127.0.0.1", rest_port)},
                    nano_cpus=int(self.settings.cpus * 1e9) if self.settings.cpus else None,
                    mem_limit=self.settings.memory,
                )
                self.container_name = name
                self.container.start()
                return grpc_port, rest_port
            except APIError as exc:
                explanation = short_error(exc)
                self._remove_container()
                conflict = any(h in explanation.lower() for h in _PORT_CONFLICT)
                if conflict and attempt < 2:
                    continue
                hint = ("another process took the host port; run again" if conflict
                        else "check --tfs-image, --tfs-cpus, --tfs-memory and --tfs-env")
                raise ServerStartError(
                    f"Docker could not start a container from image {self.image!r} "
                    f"(ports 127.0.0.1:{grpc_port}->8500, 127.0.0.1:{rest_port}->8501): "
                    f"{explanation}. Fix: {hint}."
                ) from None
        raise AssertionError("unreachable")

    def _environment(self) -> dict[str, str]:
        return {"MODEL_NAME": self.config.model_name, "MODEL_BASE_PATH": MODEL_BASE_PATH,
                **self.settings.env_dict()}

    def _described_served(self, statuses: dict[str, list[tuple[int, str]]]) -> dict[str, Any]:
        spec = self._spec
        if spec is None or spec.served_config is None:
            return {}
        return describe_served(spec.served_config, spec.bases, statuses, spec.host_paths)

    def _stop(self) -> None:
        self._remove_container()
        if self.client is not None:
            self.client.close()
            self.client = None

    def _remove_container(self) -> None:
        from docker.errors import DockerException

        container, self.container = self.container, None
        if container is None:
            return
        self._capture_logs(container)
        try:
            container.remove(force=True)
        except DockerException:
            pass  # already removed (or removal in progress): nothing of ours left to stop

    # what ran, logs, liveness

    def model_mount(self) -> str:
        return model_mount(self.config)

    def logs(self) -> str:
        if self.container is not None:
            self._capture_logs(self.container)
        return self._last_logs

    def _capture_logs(self, container: Any) -> None:
        from docker.errors import DockerException

        try:
            raw = container.logs(stdout=True, stderr=True)
        except DockerException:
            return
        self._last_logs = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def _ending(self) -> Ending | None:
        """The container's state, asked of the engine at most every STATE_CACHE_S."""
        asked, ending = self._state
        if ending is None and time.monotonic() - asked >= STATE_CACHE_S:
            ending = self._container_ending()
            self._state = (time.monotonic(), ending)
        return ending

    def _container_ending(self) -> Ending | None:
        from docker.errors import DockerException

        if self.container is None:
            return None
        try:
            self.container.reload()
        except DockerException as exc:
            return Ending(f"container {self.container_name} vanished ({short_error(exc)})")
        state = self.container.attrs.get("State", {})
        if state.get("Status") not in ("exited", "dead"):
            return None
        code, oom = state.get("ExitCode"), bool(state.get("OOMKilled"))
        hint = " (OOM-killed: raise --tfs-memory)" if oom else ""
        return Ending(f"container {self.container_name} exited with code {code}{hint}",
                      exit_code=code, oom_killed=oom)

    def server_name(self) -> str:
        return f"container {self.container_name} ({self.image})"

    def log_source(self) -> str:
        return self.server_name()

    def command_line(self) -> str:
        args = shlex.join(self._spec.command) if self._spec is not None else ""
        return f"docker run {self.image} {args}".strip()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image": self.image, "image_id": self.image_id,
                "container": self.container_name, "cpus": self.settings.cpus,
                "memory": self.settings.memory, "swept": self.swept}

    def _labels(self) -> dict[str, str]:
        return {LABEL_SESSION: self.settings.session_id, LABEL_MODEL: self.config.model_name,
                **owner_labels()}

    def _name(self) -> str:
        model = "".join(c if c.isalnum() or c in "_.-" else "-" for c in self.config.model_name)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        return f"tfs-{model}-{self.settings.session_id}-{worker}-{next(_names)}"
