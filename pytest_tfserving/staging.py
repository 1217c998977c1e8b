"""Staging dirs that name the process owning them, and the sweep that removes those whose owner
is gone (a run killed with SIGKILL has no chance to remove its own)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pytest_tfserving.once import OncePerProcess

# every temporary dir this package creates starts with one of these
PREFIXES = ("tfs-bundled-", "tfs-binary-", "tfs-docker-", "tfs-remote-", "tfs-load-",
            "tfs-int8-serve-", "tfs-rollout-")
OWNER_FILE = ".tfs-owner"  # "PID START_TIME" of the process that created the dir


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, start_time: str | None) -> bool:
    """Whether process ``pid`` runs and, when ``start_time`` is known, is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_time is None or start_time == process_start_time(pid)


def owner_record() -> str:
    pid = os.getpid()
    return f"{pid} {process_start_time(pid) or ''}".strip()


def owned_by_live_process(directory: Path) -> bool:
    """False only when the dir's owner file names a process that is gone; a dir without one
    (not made by ``make_staging_dir``) is never judged dead."""
    try:
        fields = (directory / OWNER_FILE).read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return True
    return pid_alive(pid, fields[1] if len(fields) > 1 else None)


def make_staging_dir(prefix: str) -> Path:
    """A fresh temporary dir carrying this process as its owner; the first call of a run also
    removes the leftovers of dead runs."""
    sweep_once()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / OWNER_FILE).write_text(owner_record() + "\n")
    return path


def sweep_dead(root: Path | None = None) -> list[Path]:
    """Remove the package's staging dirs under ``root`` (the temp dir) whose owner is gone."""
    root = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIXES) or not (entry / OWNER_FILE).is_file():
            continue
        if not owned_by_live_process(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


sweep_once: OncePerProcess[list[Path]] = OncePerProcess(sweep_dead)
"""``sweep_dead`` once per process (later staging dirs of this run get its result)."""
