"""Port conflicts for the process launchers: a picked port that another process holds.

The launcher picks two free ports (``free_port``) and then starts the server, so another process
can take one in between. These tests force that for real: the port picker is patched to hand out
a port this test holds bound and listening, and the bundled server really fails to bind it.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pytest_tfserving.launchers.process as process_module
from pytest_tfserving.client import TFServingClient
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.ports import free_port

pytestmark = pytest.mark.xdist_group("bundled-e2e")


def server_pids(tag: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"pytest_tfserving.bundled_server.*{tag}"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port bound and listening in this process (no SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def picker(held: int, conflict: Callable[[int], bool]) -> tuple[Callable[[], int], list[int]]:
    """A ``free_port`` stand-in: call n (1-based) returns ``held`` when ``conflict(n)``."""
    handed: list[int] = []

    def pick() -> int:
        port = held if conflict(len(handed) + 1) else free_port()
        handed.append(port)
        return port

    return pick, handed


def config(tf1_linear: Path) -> ServeConfig:
    return ServeConfig(model_name=f"p{uuid.uuid4().hex[:8]}", version_dir=tf1_linear / "1",
                       version=1)


# calls 1, 2 are the first attempt's (gRPC, REST) ports, 3, 4 the second attempt's
@pytest.mark.parametrize(("which", "first_call"), [("gRPC", 1), ("REST", 2)])
def test_port_taken_once_is_retried_on_fresh_ports(
        monkeypatch: pytest.MonkeyPatch, tf1_linear: Path, held_port: int, which: str,
        first_call: int) -> None:
    pick, handed = picker(held_port, lambda n: n == first_call)
    monkeypatch.setattr(process_module, "free_port", pick)
    workdirs: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        workdirs.append(mkdtemp(*args, **kwargs))
        return workdirs[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    cfg = config(tf1_linear)
    launcher = BundledLauncher(cfg)
    try:
        endpoint = launcher.start(Deadline.after(120))
        assert len(handed) == 4 and handed[first_call - 1] == held_port, handed
        grpc_port = int(endpoint.grpc_address.rsplit(":", 1)[1])
        assert endpoint.rest_address is not None
        rest_port = int(endpoint.rest_address.rsplit(":", 1)[1])
        assert (grpc_port, rest_port) == (handed[2], handed[3])
        assert held_port not in (grpc_port, rest_port)
        with TFServingClient(endpoint.grpc_address, cfg.model_name) as client:
            assert client.status()[0][:2] == (1, "AVAILABLE")
        # the failed attempt left no process and no work dir behind: one server, one dir
        assert len(server_pids(cfg.model_name)) == 1
        assert len(workdirs) == 2 and launcher.workdir == Path(workdirs[1])
        assert not Path(workdirs[0]).exists()
        assert str(held_port) not in launcher.logs()  # the log is the good attempt's
    finally:
        launcher.cleanup()
    assert not server_pids(cfg.model_name)


@pytest.mark.parametrize(("which", "conflict"), [
    ("gRPC", lambda n: n % 2 == 1),  # every attempt's first port
    ("REST", lambda n: n % 2 == 0),  # every attempt's second port
])
def test_port_taken_every_time_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, tf1_linear: Path, held_port: int, which: str,
        conflict: Callable[[int], bool]) -> None:
    pick, handed = picker(held_port, conflict)
    monkeypatch.setattr(process_module, "free_port", pick)
    cfg = config(tf1_linear)
    launcher = BundledLauncher(cfg)
    t0 = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        launcher.start(Deadline.after(120))
    elapsed = time.monotonic() - t0
    launcher.cleanup()
    assert len(handed) == 6, "three attempts, two fresh ports each"
    message = str(info.value)
    assert f"could not bind its port ({which} 127.0.0.1:{held_port}: address already in use)" \
        in message
    assert "on 3 tries, each on fresh free ports" in message
    assert "Fix: find what listens there (`ss -ltnp`) and stop it" in message
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "BEGIN bundled server log" in notes
    assert f"Failed to bind {which} to 127.0.0.1:{held_port}" in notes
    assert "Traceback" not in notes  # the server reports the bind failure in one line
    assert elapsed < 100, "a bind failure must end the attempt, not wait for the deadline"
    assert not server_pids(cfg.model_name)
