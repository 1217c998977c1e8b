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
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.client import TFServingClient
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError, ServerStartError, TFServingError, with_log_tail
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import (
    GRPC_CONTAINER_PORT,
    METRICS_PATH,
    REST_CONTAINER_PORT,
    Endpoint,
    Launcher,
    ServeConfig,
)
from pytest_tfserving.launchers.deployment import (
    ServedModel,
    describe_served,
    mount_point,
    wait_served,
    write_served_config,
)
from pytest_tfserving.launchers.server_flags import tuning_flags, write_config_files
from pytest_tfserving.ports import free_port

LABEL_SESSION = "pytest-tfserving.session"
LABEL_HOST = "pytest-tfserving.host"
LABEL_PID = "pytest-tfserving.pid"
LABEL_PID_START = "pytest-tfserving.pid-start"
LABEL_WORKER = "pytest-tfserving.worker"
LABEL_MODEL = "pytest-tfserving.model"

MODEL_BASE_PATH = "/models"
CONFIG_MOUNT = "/tfs-config"
PROBE_TIMEOUT_S = 2.0  # auto selection runs the probe: it must answer fast
API_TIMEOUT_S = 60.0
PULL_TIMEOUT_S = 900.0
_PORT_CONFLICT = ("port is already allocated", "address already in use", "bind for")
_names = itertools.count(1)
_swept_lock = threading.Lock()
_swept = False


# --- engine ----------------------------------------------------------------------------------

def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def start_engine_hint() -> str:
    return ("Start the Docker engine (`sudo systemctl start docker`, or `sudo dockerd &`; this "
            "project's CI runs scripts/start_dockerd.sh), point DOCKER_HOST at one, or use "
            "--tfs-backend=bundled.")


def connect(timeout: float = API_TIMEOUT_S) -> Any:
    """A docker SDK client whose engine answered a ping; ServerStartError naming the fix if not."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=max(1, int(round(timeout))))
        client.ping()
    except (DockerException, OSError) as exc:
        raise ServerStartError(
            f"No Docker engine answers at {engine_address()} ({_short(exc)}). "
            + start_engine_hint()
        ) from None
    return client


def unusable_reason(settings: BackendSettings) -> str | None:
    """None when the engine answers and the image is present locally (or, with an explicit
    ``--tfs-pull=always``, pullable); else why not. Fast (about 2 s at worst per call):
    ``--tfs-backend=auto`` runs it, and it never contacts a registry unless asked to."""
    from docker.errors import DockerException, ImageNotFound

    try:
        client = connect(PROBE_TIMEOUT_S)
    except ServerStartError:
        return f"no Docker engine answers at {engine_address()}"
    try:
        image = settings.image
        try:
            client.images.get(image)
            return None
        except ImageNotFound:
            pass
        if settings.pull != "always":
            return (f"image {image} is not present locally (auto does not pull: run "
                    f"'docker pull {image}', or pass --tfs-pull=always or --tfs-backend=docker)")
        try:
            client.images.get_registry_data(image)
            return None
        except (DockerException, OSError) as exc:
            return f"image {image} is not present and not pullable ({_short(exc)})"
    except (DockerException, OSError) as exc:
        return f"Docker engine error ({_short(exc)})"
    finally:
        client.close()


def ensure_image(client: Any, image: str, pull: str) -> Any:
    """The image object, pulled per ``pull`` (never | missing | always)."""
    from docker.errors import ImageNotFound

    if pull == "always":
        return _pull(client, image)
    try:
        return client.images.get(image)
    except ImageNotFound:
        if pull == "never":
            raise ServerStartError(
                f"Docker image {image!r} is not present in the engine and --tfs-pull=never. "
                f"Run `docker pull {image}` (or build it), or pass --tfs-pull=missing."
            ) from None
        return _pull(client, image)


def _pull(client: Any, image: str) -> Any:
    import docker
    from docker.errors import DockerException
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(image)
    puller = docker.from_env(timeout=int(PULL_TIMEOUT_S))
    try:
        return puller.images.pull(repository, tag=tag or "latest")
    except (DockerException, OSError) as exc:
        raise ServerStartError(
            f"Could not pull Docker image {image!r}: {_short(exc)}. Run `docker pull {image}` "
            "where the registry is reachable (or `docker load` it), then run again with "
            "--tfs-pull=never; or pick another image with --tfs-image."
        ) from None
    finally:
        puller.close()


# --- ownership labels and the sweep of leftovers ---------------------------------------------

def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    labels = {LABEL_HOST: socket.gethostname(), LABEL_PID: str(pid),
              LABEL_WORKER: os.environ.get("PYTEST_XDIST_WORKER", "main")}
    start = process_start_time(pid)
    if start is not None:
        labels[LABEL_PID_START] = start
    return labels


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the pytest process that started a labelled container still runs. Containers of
    another host are never judged dead (that host's runs sweep them)."""
    if labels.get(LABEL_HOST) != socket.gethostname():
        return True
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    recorded = labels.get(LABEL_PID_START)
    return recorded is None or recorded == process_start_time(pid)


def sweep_leftovers(client: Any) -> list[str]:
    """Remove containers of pytest-tfserving runs on this host whose process is gone."""
    from docker.errors import DockerException

    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": LABEL_SESSION}):
        if owner_alive(dict(container.labels)):
            continue
        try:
            container.remove(force=True)
            removed.append(str(container.name))
        except DockerException:
            pass  # already gone, or being removed by the engine
    return removed


def sweep_once(client: Any) -> list[str]:
    """The sweep, once per process (every later launcher of this run skips it)."""
    global _swept
    with _swept_lock:
        if _swept:
            return []
        _swept = True
    return sweep_leftovers(client)


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
    kind = "docker"

    def __init__(self, config: ServeConfig, settings: BackendSettings | None = None,
                 image: str | None = None) -> None:
        super().__init__(config)
        self.settings = settings or BackendSettings()
        self.image = image or config.image or self.settings.image
        self.image_id: str | None = None
        self.client: Any = None
        self.container: Any = None
        self.container_name: str | None = None
        self.workdir: Path | None = None
        self.swept: list[str] = []
        self.served: dict[str, Any] = {}  # --tfs-model-config: the served config and models
        self._last_logs = ""

    # lifecycle

    def start(self, deadline: Deadline) -> Endpoint:
        try:
            return self._start(deadline)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: Deadline) -> Endpoint:
        version_dir = self.config.version_dir.resolve()
        if not version_dir.is_dir():
            raise ConfigError(f"Model version dir {version_dir} does not exist; check --tfs-model.")
        self.client = connect()
        self.swept = sweep_once(self.client)
        image = ensure_image(self.client, self.image, self.settings.pull)
        self.image_id = str(image.id)
        self.workdir = Path(tempfile.mkdtemp(prefix="tfs-docker-"))
        files = self.workdir / "config"
        write_config_files(self.config, files)
        spec = container_spec(self.config, files)
        for path in (self.workdir, files, *files.iterdir()):  # readable by a non-root server
            path.chmod(0o755 if path.is_dir() else 0o644)
        grpc_port, rest_port = self._create_and_start(image, spec)
        rest = f"http://127.0.0.1:{rest_port}"
        self.endpoint = Endpoint(
            grpc_address=f"127.0.0.1:{grpc_port}", rest_address=rest,
            model_name=self.config.model_name, backend=self.kind,
            image_or_binary=f"{self.image} (id {self.image_id.removeprefix('sha256:')[:12]})",
            metrics_url=rest + METRICS_PATH if self.config.monitoring else None,
            extra={"container": self.container_name, "image": self.image,
                   "image_id": self.image_id, "swept": self.swept,
                   **({"model_config_file": spec.served_config} if spec.served_config else {})},
        )
        client = TFServingClient(self.endpoint.grpc_address, self.config.model_name)
        try:
            statuses = wait_served(client, self.config, deadline, self._exit_reason)
        except TFServingError as exc:
            raise with_log_tail(exc, self.log_tail(), self._source()) from None
        finally:
            client.close()
        if spec.served_config is not None:
            self.served = describe_served(spec.served_config, spec.bases, statuses,
                                          spec.host_paths)
        return self.endpoint

    def _create_and_start(self, image: Any, spec: ContainerSpec) -> tuple[int, int]:
        from docker.errors import APIError

        name = self._name()
        attempts = 3
        for attempt in range(attempts):
            grpc_port, rest_port = free_port(), free_port()
            try:
                self.container = self.client.containers.create(
                    image.id, command=spec.command, name=name,
                    detach=True, labels=self._labels(),
                    environment={"MODEL_NAME": self.config.model_name,
                                 "MODEL_BASE_PATH": MODEL_BASE_PATH, **self.settings.env_dict()},
                    volumes=spec.binds,
                    ports={f"{GRPC_CONTAINER_PORT}/tcp": ("127.0.0.1", grpc_port),
                           f"{REST_CONTAINER_PORT}/tcp": ("127.0.0.1", rest_port)},
                    nano_cpus=int(self.settings.cpus * 1e9) if self.settings.cpus else None,
                    mem_limit=self.settings.memory,
                )
                self.container_name = name
                self.container.start()
                return grpc_port, rest_port
            except APIError as exc:
                explanation = _short(exc)
                self._remove_container()
                if attempt + 1 < attempts and any(h in explanation.lower()
                                                  for h in _PORT_CONFLICT):
                    continue
                hint = ("another process took the host port; run again"
                        if any(h in explanation.lower() for h in _PORT_CONFLICT)
                        else "check --tfs-image, --tfs-cpus, --tfs-memory and --tfs-env")
                raise ServerStartError(
                    f"Docker could not start a container from image {self.image!r} "
                    f"(ports 127.0.0.1:{grpc_port}->8500, 127.0.0.1:{rest_port}->8501): "
                    f"{explanation}. Fix: {hint}."
                ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self._remove_container()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

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

    # what ran, logs, readiness

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

    def _exit_reason(self) -> str | None:
        from docker.errors import DockerException

        if self.container is None:
            return "container not created"
        try:
            self.container.reload()
        except DockerException as exc:
            return f"container {self.container_name} vanished ({_short(exc)})"
        state = self.container.attrs.get("State", {})
        status = state.get("Status")
        if status in ("exited", "dead"):
            oom = " (OOM-killed: raise --tfs-memory)" if state.get("OOMKilled") else ""
            return f"container {self.container_name} exited with code {state.get('ExitCode')}{oom}"
        return None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image": self.image, "image_id": self.image_id,
                "container": self.container_name, "cpus": self.settings.cpus,
                "memory": self.settings.memory, "swept": self.swept, **self.served}

    def _labels(self) -> dict[str, str]:
        return {LABEL_SESSION: self.settings.session_id, LABEL_MODEL: self.config.model_name,
                **owner_labels()}

    def _name(self) -> str:
        model = "".join(c if c.isalnum() or c in "_.-" else "-" for c in self.config.model_name)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        return f"tfs-{model}-{self.settings.session_id}-{worker}-{next(_names)}"

    def _source(self) -> str:
        return f"container {self.container_name} ({self.image})"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__
