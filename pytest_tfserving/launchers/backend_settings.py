"""Where-it-runs settings for the docker, binary and remote launchers, declared as options.

Parsers here raise ``ValueError(reason)``; ``options`` adds the value and where it came from.
Nothing here imports docker or TensorFlow.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pytest_tfserving import option_parsers as p
from pytest_tfserving.option_spec import option

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


_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def memory_bytes(raw: str) -> int:
    """Bytes of a Docker memory size (``parse_memory``'s forms): 512m, 2g, 1048576."""
    text = parse_memory(raw)
    factor = _UNITS.get(text[-1], 1)
    return int(float(text.rstrip("bkmg")) * factor)


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


def executable_file(raw: str) -> Path:
    """The tensorflow_model_server to run: an existing executable file."""
    path = Path(raw).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ValueError("not an executable file; give the path of tensorflow_model_server (or "
                         "leave it out to use the one on PATH)")
    return path


@dataclass(frozen=True)
class BackendSettings:
    """Image(s), pull policy, resource limits, environment, binary and remote target."""

    images: tuple[str, ...] = option(
        "image", None, p.text, "docker backend: TF Serving image; repeat to gate several tags "
        f"(default: the pinned official {DEFAULT_IMAGE}).", metavar="IMAGE", multiple=True,
        marker="")
    pull: str = option("pull", "missing", p.choice(*PULL_POLICIES), "docker backend: pull the "
                       "image never, when missing, or always.", metavar="never|missing|always",
                       marker="")
    cpus: float | None = option(
        "cpus", None, p.positive_float, "docker backend: CPU limit of the container (e.g. 2 or "
        "0.5), so SLA figures reflect production sizing.", metavar="N", marker="")
    memory: str | None = option("memory", None, parse_memory, "docker backend: memory limit of "
                                "the container (e.g. 2g).", metavar="SIZE", marker="")
    env: tuple[tuple[str, str], ...] = option(
        "env", None, parse_env_pair, "docker/binary backend: KEY=VALUE in the server's "
        "environment (repeatable), e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4.",
        metavar="KEY=VALUE", multiple=True, marker="")
    binary: Path | None = option("binary", None, executable_file, "binary backend: path of "
                                 "tensorflow_model_server (default: from PATH).", metavar="PATH",
                                 marker="")
    target: str | None = option(
        "target", None, parse_host_port, "remote backend: gRPC HOST:PORT of an already running "
        "TF Serving (nothing is launched).", metavar="HOST:PORT", marker="")
    rest_target: str | None = option(
        "rest_target", None, parse_rest_address, "remote backend: its REST address "
        "(http://HOST:PORT), for metrics.", metavar="URL", marker="")
    # Labels every container of this pytest process carries (the sweep reads them back).
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        # Each image once, in the order given; the pinned official image when none is given.
        object.__setattr__(self, "images", tuple(dict.fromkeys(self.images)) or (DEFAULT_IMAGE,))

    @property
    def image(self) -> str:
        return self.images[0]

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)
