"""Where-it-runs settings for the docker, binary and remote launchers, resolved once from options.

Parsers here raise ``ValueError(reason)``; ``options`` adds the value and where it came from.
Nothing here imports docker or TensorFlow.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

# The official image, pinned: a gate result must not change because ``latest`` moved.
DEFAULT_IMAGE = "tensorflow/serving:2.19.0"
PULL_POLICIES = ("never", "missing", "always")

_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmg]?$", re.IGNORECASE)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_memory(raw: str) -> str:
    """A Docker memory limit: bytes or a number with b/k/m/g, e.g. 512m, 2g."""
    text = raw.strip().lower()
    if not _MEMORY.match(text):
        raise ValueError("expected a size like 512m or 2g (units b, k, m, g)")
    return text


def parse_env_pair(raw: str) -> tuple[str, str]:
    """KEY=VALUE for the server's environment, e.g. LD_PRELOAD=/usr/lib/libtcmalloc.so.4."""
    key, sep, val = raw.partition("=")
    if not sep or not _ENV_KEY.match(key):
        raise ValueError("expected KEY=VALUE with KEY a shell variable name")
    return key, val


def parse_host_port(raw: str) -> str:
    """HOST:PORT (gRPC address of a running TF Serving), e.g. tfs.staging:8500."""
    text = raw.strip()
    for prefix in ("grpc://", "dns:///"):
        text = text.removeprefix(prefix)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port between 1 and 65535")
    return text


def parse_rest_address(raw: str) -> str:
    """http(s)://HOST:PORT or HOST:PORT of TF Serving's REST API (http:// is added)."""
    text = raw.strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        parse_host_port(text)
        text = "http://" + text
    return text


@dataclass(frozen=True)
class BackendSettings:
    """Image(s), pull policy, resource limits, environment, binary and remote target."""

    images: tuple[str, ...] = (DEFAULT_IMAGE,)
    pull: str = "missing"
    cpus: float | None = None
    memory: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    binary: Path | None = None
    target: str | None = None
    rest_target: str | None = None
    # Labels every container of this pytest process carries (the sweep reads them back).
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def image(self) -> str:
        return self.images[0]

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


def resolve_backend_settings(config: pytest.Config) -> BackendSettings:
    """Resolve the docker/binary/remote options (each validated by its parser)."""
    from pytest_tfserving import options

    images = tuple(dict.fromkeys(options.value(config, "image") or ())) or (DEFAULT_IMAGE,)
    binary = options.value(config, "binary")
    if binary is not None:
        where = options.resolve(config, "binary").source
        binary = Path(binary)
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise options.usage_error(
                f"--tfs-binary={binary} is not an executable file; give the path of "
                "tensorflow_model_server (or leave it out to use the one on PATH)", [where])
    return BackendSettings(
        images=images,
        pull=options.value(config, "pull"),
        cpus=options.value(config, "cpus"),
        memory=options.value(config, "memory"),
        env=tuple(options.value(config, "env") or ()),
        binary=binary,
        target=options.value(config, "target"),
        rest_target=options.value(config, "rest_target"),
    )
