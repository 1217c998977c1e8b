"""Launch a model server as a local process in its own process group (bundled and binary).

The process is tied to this one (``spawn.popen_tied``): it is SIGKILLed by the kernel when the
pytest process ends, however it ends. Its staging dir names this process as its owner, so a run
killed before its cleanup leaves a dir the next run removes (``staging.sweep_once``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ServerStartError, TFServingError
from pytest_tfserving.launchers.base import METRICS_PATH, Endpoint, Launcher, ServeConfig
from pytest_tfserving.launchers.death import Ending
from pytest_tfserving.launchers.deployment import (
    ServedModel,
    describe_served,
    write_served_config,
)
from pytest_tfserving.launchers.server_flags import (
    model_server_flags,
    stage_model,
    write_config_files,
)
from pytest_tfserving.launchers.spawn import popen_tied
from pytest_tfserving.ports import free_port
from pytest_tfserving.staging import make_staging_dir

_BIND_FAILURE_HINTS = ("address already in use", "failed to bind", "could not bind",
                       "failed to start grpc server", "errno 98")
BIND_ATTEMPTS = 3


class ProcessLauncher(Launcher):
    """Runs ``command_prefix + TF Serving flags`` on free loopback ports; log to a file."""

    def __init__(self, config: ServeConfig, env: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.command: list[str] = []
        self._ports = (0, 0)  # (gRPC, REST) of the latest start attempt
        self._kept_log = ""  # the log once its file is removed
        self._bases: dict[str, str] = {}
        self._served_config: str | None = None

    def command_prefix(self) -> list[str]:
        raise NotImplementedError

    def extra_flags(self) -> list[str]:
        return []

    def image_or_binary(self) -> str:
        return " ".join(self.command_prefix())

    # --- start ------------------------------------------------------------------------------

    def _launch(self, deadline: Deadline) -> Endpoint:
        self.workdir = make_staging_dir(f"tfs-{self.kind}-")
        self.log_path, self._kept_log = self.workdir / "server.log", ""
        write_config_files(self.config, self.workdir)
        base, self._served_config, self._bases = self._stage(self.workdir)
        grpc_port, rest_port = free_port(), free_port()
        self._ports = (grpc_port, rest_port)
        self.command = [
            *self.command_prefix(),
            *model_server_flags(self.config, grpc_port, rest_port, base, str(self.workdir),
                                self._served_config),
            *self.extra_flags(),
        ]
        (self.workdir / "command.txt").write_text(self.command_line() + "\n")
        with open(self.log_path, "wb") as log:
            try:
                self.process = popen_tied(
                    self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env={**os.environ, **self.env})
            except OSError as exc:
                raise ServerStartError(
                    f"Could not run {self.command[0]!r}: {exc}. Check --tfs-backend and that "
                    "the server is installed.") from exc
        rest = f"http://127.0.0.1:{rest_port}"
        served = self._served_config
        return Endpoint(
            grpc_address=f"127.0.0.1:{grpc_port}", rest_address=rest,
            model_name=self.config.model_name, backend=self.kind,
            image_or_binary=self.image_or_binary(),
            metrics_url=rest + METRICS_PATH if self.config.monitoring else None,
            extra={"pid": self.process.pid, "log": str(self.log_path), "command": self.command,
                   **({"model_config_file": served} if served else {})},
        )

    def _stage(self, workdir: Path) -> tuple[str, str | None, dict[str, str]]:
        """(model base path, served model config or None, each served model's base path).
        One model: a base dir holding the version under gate. A model config: its copy with
        absolute host paths, the gated slot staged where it is not served as it is."""
        if self.config.deployment is None:
            return str(stage_model(self.config, workdir / "models")), None, {}

        def base_path_of(_: int, model: ServedModel) -> str:
            base = model.base_path or stage_model(self.config, workdir / "models")
            return str(Path(base).absolute())

        path, bases = write_served_config(self.config, workdir, base_path_of)
        return bases[self.config.model_name], str(path), bases

    def _described_served(self, statuses: dict[str, list[tuple[int, str]]]) -> dict[str, Any]:
        if self._served_config is None:
            return {}
        return describe_served(self._served_config, self._bases, statuses)

    def _retry_after(self, attempt: int, error: TFServingError, log: str,
                     deadline: Deadline) -> TFServingError | None:
        """A bind failure (another process took a picked port between ``free_port`` and the
        server's bind) is tried again on fresh ports, up to ``BIND_ATTEMPTS`` tries."""
        log = log.lower()
        if not any(hint in log for hint in _BIND_FAILURE_HINTS):
            return error
        if attempt < BIND_ATTEMPTS and not deadline.expired():
            return None
        return self._bind_error(attempt, log, error)

    def _bind_error(self, tries: int, log: str, cause: TFServingError) -> ServerStartError:
        """The last bind failure, naming the ports and the fix; keeps the cause's log tail."""
        grpc_port, rest_port = self._ports
        failures = "\n".join(line for line in log.splitlines()
                             if any(hint in line for hint in _BIND_FAILURE_HINTS))
        taken = [f"{what} 127.0.0.1:{port}" for what, port in (("gRPC", grpc_port),
                                                                 ("REST", rest_port))
                 if re.search(rf":{port}(?!\d)", failures)]
        which = " and ".join(taken) or f"gRPC 127.0.0.1:{grpc_port} or REST 127.0.0.1:{rest_port}"
        error = ServerStartError(
            f"The {self.display_name} could not bind its port ({which}: address already in use) "
            f"on {tries} tries, each on fresh free ports: another process keeps taking the "
            "ports the launcher picks. Fix: find what listens there (`ss -ltnp`) and stop it, "
            "then run again; with pytest-xdist, fewer workers (-n) start fewer servers at once."
        )
        # the cause's server log tail (BEGIN/END block) goes with it
        setattr(error, "__notes__", list(getattr(cause, "__notes__", [])))  # noqa: B010
        return error

    # --- stop, liveness, logs -----------------------------------------------------------------

    def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _kill_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        else:  # the leader exited; make sure no child of its group lingers
            _kill_group(process.pid, signal.SIGKILL)

    def _ending(self) -> Ending | None:
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        if code < 0:
            name = signal.Signals(-code).name
            return Ending(f"killed by signal {name}", signal=name)
        return Ending(f"exit code {code}", exit_code=code)

    def server_name(self) -> str:
        pid = f" (pid {self.process.pid})" if self.process is not None else ""
        return f"{self.display_name}{pid}"

    def command_line(self) -> str:
        return shlex.join(self.command)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return self._kept_log
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        self.stop()
        self._kept_log = self.logs()  # the log file goes with the staging dir
        super().cleanup()


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
