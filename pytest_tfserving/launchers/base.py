"""The launcher interface every backend implements, and what a started server looks like."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.deadline import Deadline

if TYPE_CHECKING:
    from pytest_tfserving.launchers.deployment import Deployment

GRPC_CONTAINER_PORT = 8500
REST_CONTAINER_PORT = 8501
METRICS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class ServeConfig:
    """What to serve and how: everything a launcher turns into TF Serving flags.

    Hashable, so a session can keep one server per distinct configuration (a marker with its
    own batching parameters gets its own server).
    """

    model_name: str
    version_dir: Path
    version: int
    batching: BatchingParameters | None = None  # None: --enable_batching off
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    enable_warmup: bool = True
    warmup_iterations: int = 1
    prefer_tflite: bool = False
    monitoring: bool = True
    extra_flags: tuple[str, ...] = ()
    label: str = ""  # shown in reports when several servers run ("baseline", "marker ...")
    image: str = ""  # docker backend: this image instead of the first --tfs-image
    # --tfs-model-config: serve the whole config, this model (version_dir) in its slot
    deployment: Deployment | None = None

    @property
    def version_dir_name(self) -> str:
        """The version dir's name where the server sees it: as named on disk when it is all digits
        (TF Serving's ``00000123`` stays ``00000123``), else the version number."""
        name = self.version_dir.name
        return name if name.isdigit() else str(self.version)

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version_dir": str(self.version_dir),
            "version": self.version,
            "batching": self.batching.as_dict() if self.batching else None,
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "enable_warmup": self.enable_warmup,
            "prefer_tflite": self.prefer_tflite,
            "extra_flags": list(self.extra_flags),
            **({"image": self.image} if self.image else {}),
            **({"model_config": str(self.deployment.config_file)} if self.deployment else {}),
        }


@dataclass(frozen=True)
class Endpoint:
    """A running server as clients see it."""

    grpc_address: str  # "127.0.0.1:PORT"
    rest_address: str | None  # "http://127.0.0.1:PORT" or None when REST is not exposed
    model_name: str
    backend: str  # "bundled" | "docker" | "binary" | "remote"
    image_or_binary: str  # image id/tag, binary path, or remote target
    metrics_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Launcher(abc.ABC):
    """Starts and stops one server. A context manager; ``stop`` is idempotent and safe after a
    failed ``start``; every start failure carries the server's log tail."""

    kind: str = ""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.endpoint: Endpoint | None = None

    @abc.abstractmethod
    def start(self, deadline: Deadline) -> Endpoint:
        """Start the server and wait until the model is AVAILABLE; return its endpoint."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server and release everything it holds. Idempotent."""

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's log so far (stdout and stderr together)."""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def describe(self) -> dict[str, Any]:
        """What ran, for the report header: kind plus image id / binary path / target."""
        endpoint = self.endpoint
        return {
            "kind": self.kind,
            "image_or_binary": endpoint.image_or_binary if endpoint else None,
            "grpc": endpoint.grpc_address if endpoint else None,
            "rest": endpoint.rest_address if endpoint else None,
        }

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
