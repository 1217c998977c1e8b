"""Runs the bundled server with a stall probe: logs each GIL stall and each GC pass over a bound.

    python benchmarks/stall_probe.py [server flags...]      (used by swap_stall.py --probe)

A thread sleeps 1 ms in a loop and logs ``PROBE stall N ms`` when it woke more than 15 ms late
(the GIL was held that long, or the machine did not run the process); a ``gc.callbacks`` hook
logs ``PROBE gc genN M ms`` for collections over 3 ms. Told apart from the client's own delays,
this says whether a slow answer was the server's.
"""
from __future__ import annotations

import gc
import runpy
import sys
import threading
import time
from typing import Any

STALL_S = 0.015
GC_S = 0.003


def _say(what: str) -> None:
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    print(f"PROBE {what} at {stamp}.{int(now % 1 * 1000):03d}", file=sys.stderr, flush=True)


def _ticker() -> None:
    while True:
        t0 = time.monotonic()
        time.sleep(0.001)
        late = time.monotonic() - t0
        if late > STALL_S:
            _say(f"stall {late * 1e3:.0f} ms")


_started: dict[str, float] = {}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started["t"] = time.monotonic()
        return
    took = time.monotonic() - _started.get("t", time.monotonic())
    if took > GC_S:
        _say(f"gc gen{info['generation']} {took * 1e3:.1f} ms")


if __name__ == "__main__":
    threading.Thread(target=_ticker, daemon=True).start()
    gc.callbacks.append(_on_gc)
    sys.argv[0] = "pytest_tfserving.bundled_server"
    runpy.run_module("pytest_tfserving.bundled_server", run_name="__main__", alter_sys=True)
