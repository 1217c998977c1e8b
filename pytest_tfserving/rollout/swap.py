"""The swap itself, on a thread beside the load: place the candidate, watch the version states.

After the steady phase the watcher copies the candidate in as version N+1 and polls
GetModelStatus until the candidate is AVAILABLE and the baseline has ended (TF Serving's
availability-preserving policy: load the new version, then unload the old), until the candidate
fails to load (the baseline must keep serving), or until the deadline. Then it lets the load run
``after_s`` more on the candidate alone and sets ``finished`` (the load stops at its next
window).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.client import TFServingClient
    from pytest_tfserving.rollout.base_dir import RolloutBase

POLL_S = 0.1
LOAD_START_TIMEOUT_S = 120.0  # the load's workers start (a loaded machine is slow to)


@dataclass
class SwapTimes:
    """What the watcher saw, in monotonic seconds (None: did not happen)."""

    placed_at: float | None = None
    candidate_available_at: float | None = None
    baseline_end_at: float | None = None
    candidate_failed: str = ""  # the candidate's END error, as the server reported it
    baseline_lost: str = ""  # the baseline left AVAILABLE while the candidate was not serving
    timed_out: bool = False
    error: str = ""  # the watcher itself failed (copy, status calls)
    transitions: list[tuple[float, int, str]] = field(default_factory=list)

    @property
    def swapped_at(self) -> float | None:
        """When the swap was complete: the candidate AVAILABLE and the baseline ended."""
        if self.candidate_available_at is None or self.baseline_end_at is None:
            return None
        return max(self.candidate_available_at, self.baseline_end_at)

    def to_available_s(self) -> float | None:
        if self.placed_at is None or self.candidate_available_at is None:
            return None
        return self.candidate_available_at - self.placed_at

    def swap_s(self) -> float | None:
        done = self.swapped_at
        return None if done is None or self.placed_at is None else done - self.placed_at


@dataclass
class SwapWatcher:
    """Runs the swap on a daemon thread; ``finished`` is set when the load may end."""

    base: RolloutBase
    candidate_dir: Path
    client: TFServingClient
    load_running: threading.Event  # set when the load starts sending
    before_s: float
    after_s: float  # counted from the end of the swap window
    deadline_s: float
    min_swap_s: float = 0.0  # the swap phase lasts at least this long after placing
    times: SwapTimes = field(default_factory=SwapTimes)
    finished: threading.Event = field(default_factory=threading.Event)
    _abort: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SwapWatcher:
        self._thread = threading.Thread(target=self._run, name="tfs-rollout-swap", daemon=True)
        self._thread.start()
        return self

    def abort(self) -> None:
        self._abort.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if not self.load_running.wait(timeout=LOAD_START_TIMEOUT_S) \
                    or self._abort.wait(self.before_s):
                return
            self.times.placed_at = time.monotonic()
            self.base.place_candidate(self.candidate_dir)
            self._watch()
            swapped_at = self.times.swapped_at
            if swapped_at is not None:
                window_end = max(swapped_at, self.times.placed_at + self.min_swap_s)
                self._abort.wait(window_end - time.monotonic() + self.after_s)
        except Exception as exc:  # noqa: BLE001 - reported by the gate, never lost in a thread
            self.times.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()

    def _watch(self) -> None:
        times, old, new = self.times, self.base.baseline_version, self.base.candidate_version
        assert times.placed_at is not None
        end = times.placed_at + self.deadline_s
        seen: dict[int, str] = {}
        while not self._abort.is_set():
            now = time.monotonic()
            states = self._states()
            for version, (state, code, message) in states.items():
                if seen.get(version) != state:
                    seen[version] = state
                    times.transitions.append((now, version, state))
                if version == new and state == "AVAILABLE" and times.candidate_available_at \
                        is None:
                    times.candidate_available_at = now
                if version == new and state == "END" and code != 0:
                    times.candidate_failed = message or f"error code {code}"
                if version == old and state == "END" and times.baseline_end_at is None:
                    times.baseline_end_at = now
            if times.baseline_end_at == now and times.candidate_available_at is None \
                    and not times.candidate_failed:  # judged on the whole snapshot
                times.baseline_lost = "the baseline ended before the candidate served"
            if times.swapped_at is not None or times.candidate_failed:
                return
            if now >= end:
                times.timed_out = True
                return
            time.sleep(POLL_S)

    def _states(self) -> dict[int, tuple[str, int, str]]:
        import grpc

        try:
            statuses = self.client.status(timeout=2.0)
        except grpc.RpcError:
            return {}
        return {version: (state, code, message) for version, state, code, message in statuses}

    def describe(self, origin: float) -> dict[str, Any]:
        """The swap's times relative to ``origin`` (the load's start), for the report."""
        t = self.times

        def rel(value: float | None) -> float | None:
            return None if value is None else round(value - origin, 3)

        return {"placed_at_s": rel(t.placed_at), "candidate_available_at_s":
                rel(t.candidate_available_at), "baseline_end_at_s": rel(t.baseline_end_at),
                "transitions": [{"t_s": rel(at), "version": v, "state": s}
                                for at, v, s in t.transitions]}
