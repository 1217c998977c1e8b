"""Pick the launcher for ``--tfs-backend`` (auto: docker > binary > bundled)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import Launcher, ServeConfig

LauncherFactory = Callable[[ServeConfig], Launcher]


def choose_backend(requested: str,
                   settings: BackendSettings | None = None) -> tuple[str, str]:
    """(backend kind, why) for the requested backend; ``auto`` probes what this machine has."""
    if requested != "auto":
        return requested, f"--tfs-backend={requested}"
    from pytest_tfserving.launchers import docker_probe

    settings = settings or BackendSettings()
    docker_reason = docker_probe.usable_reason(settings)
    if docker_reason is None:
        return "docker", (f"auto: Docker engine answers and image {settings.image} is "
                          + ("present" if settings.pull != "always" else "present or pullable"))
    if settings.binary is not None:
        return "binary", f"auto: no Docker ({docker_reason}); --tfs-binary={settings.binary}"
    from pytest_tfserving.launchers.binary import binary_on_path

    if binary_on_path():
        return "binary", f"auto: no Docker ({docker_reason}); tensorflow_model_server on PATH"
    return "bundled", (f"auto: no Docker ({docker_reason}) and no tensorflow_model_server on "
                       "PATH; using the bundled TF-Serving-compatible server")


def launcher_factory(kind: str, settings: BackendSettings | None = None) -> LauncherFactory:
    """A callable ServeConfig -> Launcher; docker/binary/remote launchers get ``settings``."""
    settings = settings or BackendSettings()
    if kind == "bundled":
        from pytest_tfserving.launchers.bundled import BundledLauncher

        return BundledLauncher
    if kind == "binary":
        from pytest_tfserving.launchers.binary import BinaryLauncher

        return functools.partial(BinaryLauncher, settings=settings)
    if kind == "docker":
        from pytest_tfserving.launchers.docker import DockerLauncher

        return functools.partial(DockerLauncher, settings=settings)
    if kind == "remote":
        from pytest_tfserving.launchers.remote import RemoteLauncher

        return functools.partial(RemoteLauncher, settings=settings)
    raise ConfigError(f"Unknown backend {kind!r}; use auto, docker, binary, bundled or remote.")
