"""One rollout, start to end: stage, serve the baseline, load through the swap, collect figures.

The server serves the gate's own base dir (``base_dir.py``) with file-system polling, so placing
the candidate as version N+1 is all a release does. One open-loop run of the load generator
(``load.driver.run_load`` with a per-request timeline) lasts the whole rollout; the swap runs on
a thread beside it (``swap.py``), which ends the load once the candidate has served alone for
the steady time, and the server's memory is sampled on another (``memory.py``). Afterwards the
timeline is split into phases (``phases.py``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tfserving.rollout import phases as ph
from pytest_tfserving.rollout.base_dir import RolloutBase, stage_baseline
from pytest_tfserving.rollout.evidence import warmup_evidence
from pytest_tfserving.rollout.memory import MemorySampler, sampler_for
from pytest_tfserving.rollout.swap import SwapTimes, SwapWatcher

if TYPE_CHECKING:
    from pytest_tfserving.gates.context import GateContext
    from pytest_tfserving.load.load_options import LoadOptions
    from pytest_tfserving.load.result import LoadResult
    from pytest_tfserving.load.spec import LoadSpec
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.session import RunningServer

POLL_FLAG = "--file_system_poll_wait_seconds"
WINDOW_S = 1.0  # the load's windows: the swap thread's stop is honoured within one


@dataclass(frozen=True)
class Plan:
    """How long each phase lasts and how hard the load pushes."""

    rate: float  # offered requests/s (open loop)
    steady_s: float  # before placing the candidate, and again on the candidate alone
    deadline_s: float  # from placing the candidate to the swap's end
    window_s: float = 0.0  # the swap phase lasts at least this long after placing
    signature: str | None = None
    poll_s: int = 1  # --file_system_poll_wait_seconds

    def spec(self, load: LoadOptions) -> LoadSpec:
        """The one load run: open loop at ``rate`` with a timeline, long enough for the whole
        rollout, ended early by the swap thread (``stop_when``)."""
        longest = 2 * self.steady_s + max(self.deadline_s, self.window_s) + load.timeout + 10.0
        return load.to_spec(rate=self.rate, mode="open", duration_s=max(WINDOW_S, self.steady_s),
                            window_s=WINDOW_S, warmup_s=0.0, stability_pct=0.0,
                            max_windows=math.ceil(longest / WINDOW_S), timeline=True)


@dataclass
class Outcome:
    """What the rollout measured."""

    base: RolloutBase
    server: RunningServer
    times: SwapTimes
    requests: list[ph.Request]
    origin: float  # monotonic time of the load's start
    phases: dict[str, ph.PhaseStats]
    request_source: str
    load: LoadResult
    memory: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidate_first_ms: list[float] = field(default_factory=list)
    baseline_after_failure: dict[str, Any] = field(default_factory=dict)
    swap: dict[str, Any] = field(default_factory=dict)


def serve_baseline(ctx: GateContext, baseline: ModelInfo, plan: Plan,
                   ) -> tuple[RolloutBase, RunningServer]:
    """The baseline staged as version N and served from the gate's base dir (polling on). The
    caller stops the server and removes the base dir (``finish``)."""
    name = ctx.model.name
    base = stage_baseline(name, baseline.version_dir, baseline.version)
    float_config = ctx.session.float_serve_config()
    flags = tuple(f for f in float_config.extra_flags if not f.startswith(POLL_FLAG))
    config = dataclasses.replace(
        float_config, model_name=name, version_dir=base.baseline_dir(),
        version=baseline.version, base_dir=base.base_dir,
        extra_flags=(*flags, f"{POLL_FLAG}={plan.poll_s}"), deployment=None, label="rollout")
    try:
        return base, ctx.server(config)
    except BaseException:
        base.cleanup()
        raise


def run_rollout(ctx: GateContext, base: RolloutBase, server: RunningServer, baseline: ModelInfo,
                candidate: ModelInfo, plan: Plan) -> Outcome:
    """Load the baseline, place the candidate, load through the swap and after it."""
    from pytest_tfserving.launchers.death import abort_reason
    from pytest_tfserving.load.driver import run_load
    from pytest_tfserving.load.load_options import LoadOptions
    from pytest_tfserving.load.runner import LoadRunner

    load = ctx.settings.params(LoadOptions)
    runner = LoadRunner(load, baseline, server, ctx.fixture_value("tfs_requests"),
                        progress=ctx.progress)
    payloads, source = runner.payloads(plan.signature, model=baseline)
    started = threading.Event()
    watcher = SwapWatcher(base, candidate.version_dir, server.client(), started,
                          plan.steady_s, plan.steady_s, plan.deadline_s, plan.window_s)
    origin: list[float] = []

    def on_start(at: float) -> None:
        origin.append(at)
        started.set()

    sampler = sampler_for(server)
    if sampler is not None:
        sampler.start()
    watcher.start()
    try:
        result = run_load(server.grpc_address, payloads, plan.spec(load),
                          metrics_url=server.endpoint.metrics_url, model_name=server.model_name,
                          progress=ctx.progress, label="rollout", abort=abort_reason(server),
                          stop_when=lambda _windows: watcher.finished.is_set(),
                          on_start=on_start)
    finally:
        watcher.abort()
        watcher.join(timeout=plan.deadline_s + 30)
        if sampler is not None:
            sampler.stop()
    return _outcome(base, server, watcher, result, origin[0] if origin else 0.0, source, sampler,
                    plan.window_s)


def _outcome(base: RolloutBase, server: RunningServer, watcher: SwapWatcher, result: LoadResult,
             origin: float, source: str, sampler: MemorySampler | None,
             window_s: float) -> Outcome:
    times = watcher.times
    requests = ph.from_timeline(result.timeline, origin) if result.timeline is not None else []
    outcome = Outcome(base, server, times, requests, origin,
                      _phases(requests, times, origin, base.candidate_version, window_s),
                      source, result,
                      swap=watcher.describe(origin))
    swap = outcome.phases.get("swap")
    outcome.memory = _memory(sampler, times, None if swap is None else origin + swap.end_s)
    outcome.warmup = _warmup(server, base)
    outcome.candidate_first_ms = ph.first_answers(requests, base.candidate_version)
    if times.candidate_failed:
        outcome.baseline_after_failure = _baseline_still_serving(server, base, requests, times)
    return outcome


def finish(ctx: GateContext, server: RunningServer | None, base: RolloutBase) -> None:
    """Stop the rollout's server and remove its base dir."""
    if server is not None:
        ctx.session.stop_server(server.config)
    base.cleanup()


def _phases(requests: list[ph.Request], times: SwapTimes, origin: float,
            candidate: int, window_s: float) -> dict[str, ph.PhaseStats]:
    if times.placed_at is None:  # the swap never started: everything was the steady phase
        last = max((r.t_s for r in requests), default=origin)
        return {"before": ph.phase_stats("before", requests, 0.0, last - origin)}
    end = ph.swap_end(requests, times.placed_at, times.swapped_at, candidate, window_s)
    return ph.split(requests, times.placed_at, end, origin)


def _memory(sampler: MemorySampler | None, times: SwapTimes,
            swap_end: float | None) -> dict[str, Any]:
    """Peaks in MiB. "Both loaded": from placing the candidate to the end of the swap phase,
    and at least one sampling interval past the unload (a sample of a busy engine can take
    longer than a fast swap)."""
    if sampler is None:
        return {"source": "not measured (no local process or container to sample)"}
    mib = 1 << 20

    def peak(start: float | None, end: float | None) -> float | None:
        value = sampler.peak(start if start is not None else float("-inf"),
                             end if end is not None else float("inf"))
        return None if value is None else round(value / mib, 1)

    end_both = (max(times.baseline_end_at + sampler.interval_s, swap_end or 0.0)
                if times.baseline_end_at is not None
                else None if times.placed_at is None else float("inf"))
    both: float | None = None
    if times.placed_at is not None:
        both = peak(times.placed_at, end_both)
        if both is None:  # no sample came back within: the first one after placing
            later = [v for t, v in list(sampler.samples) if t >= times.placed_at]
            both = round(later[0] / mib, 1) if later else None
    return {"source": sampler.source, "samples": len(sampler.samples),
            "before_peak_mib": peak(None, times.placed_at),
            "both_loaded_peak_mib": both,
            "after_peak_mib": peak(times.baseline_end_at, None)
            if times.baseline_end_at is not None else None,
            "peak_mib": peak(None, None)}


def _warmup(server: RunningServer, base: RolloutBase) -> dict[str, dict[str, Any]]:
    try:
        metrics = server.metrics()
    except Exception:  # noqa: BLE001 - a server without a metrics page: the log still tells
        metrics = ""
    log = server.logs()
    return {"baseline": warmup_evidence(log, metrics, base.baseline_version),
            "candidate": warmup_evidence(log, metrics, base.candidate_version)}


def _baseline_still_serving(server: RunningServer, base: RolloutBase,
                            requests: list[ph.Request], times: SwapTimes) -> dict[str, Any]:
    """After a failed candidate load: does the baseline still answer (as TF Serving keeps it)?"""
    try:
        states = {v: s for v, s, _, _ in server.client().status()}
    except Exception as exc:  # noqa: BLE001 - reported as the answer to the question
        return {"serving": False, "why": f"GetModelStatus failed: {exc}"}
    after = [r for r in requests if times.placed_at is not None and r.t_s >= times.placed_at]
    answered = sum(1 for r in after if r.code == "OK" and r.version == base.baseline_version)
    serving = states.get(base.baseline_version) == "AVAILABLE"
    return {"serving": serving, "baseline_state": states.get(base.baseline_version, "absent"),
            "answers_after_placing": answered, "requests_after_placing": len(after)}
