"""The Docker engine side of the docker backend: connect, probe, images, and the ownership
labels with the sweep that removes containers of dead runs (a run killed with SIGKILL)."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.once import OncePerProcess
from pytest_tfserving.staging import pid_alive, process_start_time

LABEL_SESSION = "pytest-tfserving.session"
LABEL_HOST = "pytest-tfserving.host"
LABEL_PID = "pytest-tfserving.pid"
LABEL_PID_START = "pytest-tfserving.pid-start"
LABEL_WORKER = "pytest-tfserving.worker"
LABEL_MODEL = "pytest-tfserving.model"

PROBE_TIMEOUT_S = 2.0  # auto selection runs the probe: it must answer fast
API_TIMEOUT_S = 60.0
PULL_TIMEOUT_S = 900.0
logger = logging.getLogger(__name__)


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
            f"No Docker engine answers at {engine_address()} ({short_error(exc)}). "
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
            return f"image {image} is not present and not pullable ({short_error(exc)})"
    except (DockerException, OSError) as exc:
        return f"Docker engine error ({short_error(exc)})"
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
            f"Could not pull Docker image {image!r}: {short_error(exc)}. Run `docker pull {image}` "
            "where the registry is reachable (or `docker load` it), then run again with "
            "--tfs-pull=never; or pick another image with --tfs-image."
        ) from None
    finally:
        puller.close()


# --- ownership labels and the sweep of leftovers ---------------------------------------------

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
    return pid_alive(pid, labels.get(LABEL_PID_START))


def sweep_leftovers(client: Any) -> list[str]:
    """Remove containers of pytest-tfserving runs on this host whose process is gone; the names
    removed. One the engine will not remove is named in a warning with the command to run."""
    removed: list[str] = []
    for container in client.containers.list(all=True, ignore_removed=True,
                                            filters={"label": LABEL_SESSION}):
        if not owner_alive(dict(container.labels)) and remove_leftover(container):
            removed.append(str(container.name))
    return removed


def remove_leftover(container: Any, tries: int = 5) -> bool:
    """Force-remove; an engine busy with it (killing, removal in progress) is asked again. False
    when it was already gone or could not be removed."""
    from docker.errors import DockerException, NotFound

    for attempt in range(1, tries + 1):
        try:
            container.remove(force=True)
            return True
        except NotFound:
            return False  # another run's sweep removed it first
        except DockerException as exc:
            if attempt == tries:
                logger.warning("Could not remove container %s of a run that was killed: %s. "
                               "Remove it with `docker rm -f %s`.", container.name,
                               short_error(exc), container.name)
                return False
            time.sleep(0.5 * attempt)
    return False


sweep_once: OncePerProcess[list[str]] = OncePerProcess(sweep_leftovers)
"""The sweep, once per process (given the engine client); every later launcher of this run
gets what that one sweep removed."""


def short_error(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__
