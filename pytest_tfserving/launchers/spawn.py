"""Start server processes that die with this process, even when it is SIGKILLed.

Each child asks the kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``). The
kernel sends it when the parent *thread* exits, so every server is forked from one long-lived
spawner thread that only ends with the process, never from whichever thread asked for it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1
_lock = threading.Lock()
_spawner: ThreadPoolExecutor | None = None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` setting PDEATHSIG=SIGKILL in the child (Linux only; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _popen(command: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, preexec_fn=_die_with_parent(), **kwargs)  # noqa: PLW1509


def popen_tied(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(command, **kwargs)`` from the spawner thread: the child is SIGKILLed
    by the kernel when this process ends, however it ends."""
    global _spawner
    with _lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfs-spawner")
        spawner = _spawner
    return spawner.submit(_popen, command, kwargs).result()
