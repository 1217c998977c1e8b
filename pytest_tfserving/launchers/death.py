"""How a started server ended (``ServerDeath``), and the abort hook a load run polls."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

DEATH_TAIL_LINES = 20


@dataclass(frozen=True)
class Ending:
    """What a launcher's cheap liveness check saw when its server was gone."""

    how: str  # "exit code 1", "killed by signal SIGKILL", "stopped answering: UNAVAILABLE: ..."
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGKILL"
    oom_killed: bool = False


@dataclass(frozen=True)
class ServerDeath:
    """A server that stopped running: how, when it was noticed, and its last log lines."""

    server: str  # "bundled server (pid 123)", "container tfs-m-...", "remote target host:8500"
    how: str
    wall_time: float  # time.time() when the death was noticed
    monotonic: float  # time.monotonic() at the same moment
    log_tail: tuple[str, ...] = ()  # the last lines of its log (start-up noise filtered out)
    exit_code: int | None = None
    signal: str | None = None
    oom_killed: bool = False

    @classmethod
    def of(cls, server: str, ending: Ending, log_tail: tuple[str, ...]) -> ServerDeath:
        return cls(server=server, how=ending.how, wall_time=time.time(),
                   monotonic=time.monotonic(), log_tail=log_tail[-DEATH_TAIL_LINES:],
                   exit_code=ending.exit_code, signal=ending.signal,
                   oom_killed=ending.oom_killed)

    def describe(self) -> str:
        """One sentence: which server, how it ended, when, and its last log line."""
        when = time.strftime("%H:%M:%S", time.localtime(self.wall_time))
        last = (f"; its last log line: {self.log_tail[-1].strip()!r}" if self.log_tail
                else "; it wrote no log")
        return f"The {self.server} stopped running at {when} ({self.how}){last}."


class Mortal(Protocol):
    """Anything that can say whether its server died: a Launcher or a RunningServer."""

    def death(self) -> ServerDeath | None: ...


def abort_reason(running: Mortal) -> Callable[[], str | None]:
    """A poll for ``run_load(..., abort=...)``: None while the server runs, else one sentence
    saying how it ended. Cheap enough to call every 0.25 s."""

    def reason() -> str | None:
        death = running.death()
        return death.describe() if death is not None else None

    return reason
