"""Work done once per process whose result later callers see too (the sweeps of leftovers of
killed runs: every launcher of a run reports what the run's one sweep removed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class OncePerProcess(Generic[T]):
    """Call ``work`` (with the first call's arguments) on the first call only; every call
    returns that first result."""

    def __init__(self, work: Callable[..., T]) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._result: tuple[T] | None = None

    def __call__(self, *args: Any) -> T:
        with self._lock:
            if self._result is None:
                self._result = (self._work(*args),)
            return self._result[0]
