"""Launch a model server as a local process in its own process group (bundled and binary)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_tfserving.client import TFServingClient
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ServerStartError, TFServingError, with_log_tail
from pytest_tfserving.launchers.base import METRICS_PATH, Endpoint, Launcher, ServeConfig
from pytest_tfserving.launchers.deployment import (
    ServedModel,
    describe_served,
    wait_served,
    write_served_config,
)
from pytest_tfserving.launchers.server_flags import (
    model_server_flags,
    stage_model,
    write_config_files,
)
from pytest_tfserving.ports import free_port

_BIND_FAILURE_HINTS = ("address already in use", "failed to bind", "could not bind",
                       "failed to start grpc server", "errno 98")


class ProcessLauncher(Launcher):
    """Runs ``command_prefix + TF Serving flags`` on free loopback ports; log to a file."""

    display_name = "server"

    def __init__(self, config: ServeConfig, env: dict[str, str] | None = None) -> None:
        super().__init__(config)
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self._ports = (0, 0)  # (gRPC, REST) of the latest start attempt
        self.served: dict[str, Any] = {}  # --tfs-model-config: the served config and models

    def command_prefix(self) -> list[str]:
        raise NotImplementedError

    def extra_flags(self) -> list[str]:
        return []

    def image_or_binary(self) -> str:
        return " ".join(self.command_prefix())

    def start(self, deadline: Deadline) -> Endpoint:
        """Start on fresh free ports; a bind failure (another process took a picked port
        between ``free_port`` and the server's bind) is retried on new ports, up to 3 tries."""
        attempts = 3
        for attempt in range(attempts):
            try:
                return self._start_once(deadline)
            except ServerStartError as exc:
                log = self.logs().lower()
                self.stop()
                bind_failed = any(hint in log for hint in _BIND_FAILURE_HINTS)
                if bind_failed and attempt + 1 < attempts and not deadline.expired():
                    self._discard_workdir()  # its log told us all we need: try new ports
                    continue
                if bind_failed:
                    raise self._bind_error(attempt + 1, log, exc) from exc
                raise exc
        raise AssertionError("unreachable")

    def _bind_error(self, tries: int, log: str, cause: ServerStartError) -> ServerStartError:
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

    def _discard_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = self.log_path = None

    def _start_once(self, deadline: Deadline) -> Endpoint:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"tfs-{self.kind}-"))
        self.log_path = self.workdir / "server.log"
        write_config_files(self.config, self.workdir)
        base, served_config, bases = self._stage(self.workdir)
        grpc_port, rest_port = free_port(), free_port()
        self._ports = (grpc_port, rest_port)
        command = [
            *self.command_prefix(),
            *model_server_flags(self.config, grpc_port, rest_port, base, str(self.workdir),
                                served_config),
            *self.extra_flags(),
        ]
        (self.workdir / "command.txt").write_text(" ".join(command) + "\n")
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env={**os.environ, **self.env},
                )
            except OSError as exc:
                raise ServerStartError(
                    f"Could not run {command[0]!r}: {exc}. Check --tfs-backend and that the "
                    "server is installed."
                ) from exc
        rest = f"http://127.0.0.1:{rest_port}"
        self.endpoint = Endpoint(
            grpc_address=f"127.0.0.1:{grpc_port}", rest_address=rest,
            model_name=self.config.model_name, backend=self.kind,
            image_or_binary=self.image_or_binary(),
            metrics_url=rest + METRICS_PATH if self.config.monitoring else None,
            extra={"pid": self.process.pid, "log": str(self.log_path), "command": command,
                   **({"model_config_file": served_config} if served_config else {})},
        )
        client = TFServingClient(self.endpoint.grpc_address, self.config.model_name)
        try:
            statuses = wait_served(client, self.config, deadline, self._exit_reason)
        except TFServingError as exc:
            raise with_log_tail(exc, self.log_tail(), self.display_name) from None
        finally:
            client.close()
        if served_config is not None:
            self.served = describe_served(served_config, bases, statuses)
        return self.endpoint

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

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.served}

    def _exit_reason(self) -> str | None:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        elif process is not None:
            try:  # the leader exited; make sure no child of its group lingers
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cleanup(self) -> None:
        """Remove the work dir (staged model link, config files, log)."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.logs():
                return True
            time.sleep(0.05)
        return needle in self.logs()
