"""The launcher interface every backend implements (a template: start, wait until AVAILABLE,
fail with the log tail), and what a started server looks like."""

from __future__ import annotations

import abc
import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ServerStartError, TFServingError, with_log_tail
from pytest_tfserving.launchers.death import Ending, ServerDeath
from pytest_tfserving.launchers.log_tail import readable_lines, readable_tail

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
    # the rollout gate: serve this base dir as it is (the gate's own temporary copy, into which
    # it later places a new version); ``version_dir`` is not staged
    base_dir: Path | None = None

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
            **({"base_dir": str(self.base_dir)} if self.base_dir is not None else {}),
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
    failed ``start``; every start failure carries the server's log tail.

    ``start`` is a template: a backend implements ``_launch`` (start the process or container,
    return its endpoint), and this class waits until the model is AVAILABLE under one absolute
    deadline, attaches the readable log tail to a failure and cleans up once per failed try.
    """

    kind: str = ""
    display_name: str = "server"

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.endpoint: Endpoint | None = None
        self.workdir: Path | None = None  # staged files; removed by ``cleanup``
        self.served: dict[str, Any] = {}  # --tfs-model-config: the served config and models
        self.ready = False  # the model was AVAILABLE (death checks of remote wait for it)
        self._death: ServerDeath | None = None

    # --- the template -------------------------------------------------------------------------

    def start(self, deadline: Deadline) -> Endpoint:
        """Start the server and wait until the model is AVAILABLE; return its endpoint. A failed
        try is cleaned up (server stopped, staged files removed) before the error propagates or
        ``_retry_after`` asks for another try."""
        for attempt in itertools.count(1):
            self._death, self.ready = None, False
            try:
                self.endpoint = self._launch(deadline)
                self.served = self._described_served(self._wait_ready(deadline))
                self.ready = True
                return self.endpoint
            except BaseException as exc:
                error = self._explain(exc)
                log = self.logs()
                self.cleanup()
                if not isinstance(error, TFServingError):
                    raise
                retry = self._retry_after(attempt, error, log, deadline)
                if retry is None:
                    continue
                if retry is exc:
                    raise
                raise retry from None
        raise AssertionError("unreachable")

    @abc.abstractmethod
    def _launch(self, deadline: Deadline) -> Endpoint:
        """Start the process or container (stage what it needs under ``self.workdir``) and
        return its endpoint; do not wait for the model."""

    def _wait_ready(self, deadline: Deadline) -> dict[str, list[tuple[int, str]]]:
        """Until the model under gate (with a model config: the whole config) is AVAILABLE."""
        from pytest_tfserving.client import TFServingClient
        from pytest_tfserving.launchers.deployment import wait_served

        assert self.endpoint is not None
        client = TFServingClient(self.endpoint.grpc_address, self.config.model_name)
        try:
            return wait_served(client, self.config, deadline, self._gone)
        finally:
            client.close()

    def _described_served(self, statuses: dict[str, list[tuple[int, str]]]) -> dict[str, Any]:
        """With a model config: what the report says about each served model."""
        return {}

    def _gone(self) -> str | None:
        death = self.death()
        return death.how if death is not None else None

    def _explain(self, exc: BaseException) -> BaseException:
        """The error a user reads: the readable log tail attached; a server that exited without
        a word is said to have written nothing, with its command line."""
        if not isinstance(exc, TFServingError):
            return exc
        death = self.death() if isinstance(exc, ServerStartError) else None
        if death is not None and not self.logs().strip():
            return ServerStartError(
                f"The {self.display_name} exited before the model was AVAILABLE ({death.how}) "
                f"and wrote no output. Command: {self.command_line() or '(unknown)'}. Fix: run "
                "that command by hand to see why it stops (a wrong --tfs-binary, or a flag "
                "from --tfs-server-arg it does not take).")
        return with_log_tail(exc, readable_tail(self.logs()), self.log_source())

    def _retry_after(self, attempt: int, error: TFServingError, log: str,
                     deadline: Deadline) -> TFServingError | None:
        """After a failed, cleaned-up try: None to try again, else the error to raise."""
        return error

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server. Idempotent; staged files (and so the log) stay until ``cleanup``.
        From then on ``death`` says how it ended: as it died before, or stopped by us."""
        if self._death is None and self.endpoint is not None:
            ending = self._ending() or Ending("stopped by pytest-tfserving")
            self._death = ServerDeath.of(self.server_name(), ending,
                                         tuple(readable_lines(self.logs())))
        self._stop()

    @abc.abstractmethod
    def _stop(self) -> None:
        """Stop the process or container and release what holds it. Idempotent."""

    def cleanup(self) -> None:
        """Stop the server and remove everything staged for it. Idempotent; ``logs`` still
        answers afterwards (from memory)."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # --- what ran, and whether it still runs ------------------------------------------------------

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's log so far (stdout and stderr together), unfiltered."""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of the log without TensorFlow's start-up notices."""
        return readable_tail(self.logs(), lines)

    def log_source(self) -> str:
        """How the log's BEGIN/END markers name the server."""
        return self.display_name

    def command_line(self) -> str:
        """What was run, for a server that said nothing before it exited."""
        return ""

    def death(self) -> ServerDeath | None:
        """None while the server runs; else how it ended (kept once seen). Cheap enough to call
        every 0.25 s: each backend checks at most what its ``_ending`` caches allow."""
        if self._death is None:
            ending = self._ending()
            if ending is not None:
                self._death = ServerDeath.of(self.server_name(), ending,
                                             tuple(readable_lines(self.logs())))
        return self._death

    @abc.abstractmethod
    def _ending(self) -> Ending | None:
        """None while the server runs, else how it ended (a cheap check)."""

    def server_name(self) -> str:
        """The server as ``ServerDeath.describe`` names it."""
        return self.display_name

    def describe(self) -> dict[str, Any]:
        """What ran, for the report header: kind plus image id / binary path / target."""
        endpoint = self.endpoint
        return {
            "kind": self.kind,
            "image_or_binary": endpoint.image_or_binary if endpoint else None,
            "grpc": endpoint.grpc_address if endpoint else None,
            "rest": endpoint.rest_address if endpoint else None,
            **self.served,
        }

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
