"""Large-batch splitting: the sizes a task is cut into, and gathering its pieces' outputs."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import numpy as np

from pytest_tfserving.bundled_server.servable import Arrays

Future = cf.Future[Arrays] | asyncio.Future[Arrays]


def piece_sizes(size: int, room: int, limit: int) -> list[int]:
    """The pieces of a task of ``size`` when the open batch has ``room`` slots left and batches
    hold at most ``limit``: whole when it fits, else the open batch's room first (as TF's
    SplitInputTask), then pieces of ``limit``, the last one shorter."""
    if size <= room:
        return [size]
    first = [room] if room > 0 else []
    rest = size - max(room, 0)
    return first + [limit] * (rest // limit) + ([rest % limit] if rest % limit else [])


class TaskSplit:
    """The pieces of one split task: gathers their outputs and resolves the task once."""

    def __init__(self, future: Future, loop: asyncio.AbstractEventLoop | None,
                 parts: int) -> None:
        self.future = future
        self.loop = loop
        self._results: list[Arrays | BaseException | None] = [None] * parts
        self._left = parts
        self._lock = threading.Lock()

    def piece_done(self, part: int,
                   result: Arrays | BaseException) -> Arrays | BaseException | None:
        """Record one piece; the whole task's result once every piece is in (else None)."""
        with self._lock:
            self._results[part] = result
            self._left -= 1
            if self._left:
                return None
        for r in self._results:
            if isinstance(r, BaseException):
                return r
        done = [r for r in self._results if isinstance(r, dict)]
        return {k: np.concatenate([r[k] for r in done]) for k in done[0]}
