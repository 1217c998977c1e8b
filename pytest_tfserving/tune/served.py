"""The real trial: serve one candidate through the session's launcher (its own server), check
batching invariance, find its QPS at the p99 budget, measure it at the SLA rate, stop it."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_tfserving.batching_invariance import check_invariance
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load.driver import run_load
from pytest_tfserving.load.result import LoadResult
from pytest_tfserving.load.search import MaxQps, max_qps
from pytest_tfserving.load.server_metrics import scrape
from pytest_tfserving.load.spec import LoadSpec
from pytest_tfserving.sla_rules import DEFAULT_CONFIDENCE, SlaLimits, stop_when
from pytest_tfserving.tune.search import Stage, TrialResult
from pytest_tfserving.tune.server_cost import batch_evidence, cpu_seconds

if TYPE_CHECKING:
    from pytest_tfserving.session import RunningServer, TFSSession
    from pytest_tfserving.tune.space import Candidate


@dataclass
class ServedTrial:
    """``trial(candidate, stage)`` against real servers started by ``session``'s launcher."""

    session: TFSSession
    signature: str
    payloads: Sequence[bytes]
    p99_ms: float
    sla_qps: float
    examples: Mapping[str, np.ndarray[Any, Any]] | None = None  # for the invariance check
    rtol: float = 1e-4
    atol: float = 1e-5
    warmup_s: float = 0.5
    max_steps: int = 10
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.session.backend() == "remote":
            raise ConfigError(
                "Tuning needs a server per candidate started with the candidate's flags; the "
                "remote backend serves its own config. Use --tfs-backend=bundled, binary or "
                "docker for --tfs-tune.")
        if not self.payloads:
            raise ConfigError("Tuning needs at least one request to send; none were built.")

    def __call__(self, cand: Candidate, stage: Stage) -> TrialResult:
        started = time.monotonic()
        config = self.session.serve_config(
            batching=cand.batching, intra_op_threads=cand.intra_op_threads,
            inter_op_threads=cand.inter_op_threads, label=f"tune {cand.label()}")
        try:
            server = self.session.server(config)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot serve is a result
            self.session.stop_server(config)
            return TrialResult(0.0, error=f"server did not start: {str(exc)[:400]}",
                               elapsed_s=time.monotonic() - started)
        try:
            return self._measure(server, stage, started)
        except Exception as exc:  # noqa: BLE001
            return TrialResult(0.0, error=f"{type(exc).__name__}: {str(exc)[:400]}",
                               elapsed_s=time.monotonic() - started)
        finally:
            self.session.stop_server(config)

    def _load(self, server: RunningServer, rate: float, duration: float,
              decide: bool = False) -> LoadResult:
        """One run; with ``decide`` it goes on (up to ~8 s) until the p99 verdict
        at the default confidence is decided, as ``LoadRunner.max_qps`` trials do."""
        window = duration / 3.0
        spec = LoadSpec(rate=rate, duration_s=duration, warmup_s=self.warmup_s,
                        stability_pct=0,
                        max_windows=max(10, math.ceil(8.0 / window)) if decide else 10).validate()
        rule = stop_when(SlaLimits(latency_ms=self.p99_ms, max_error_rate=1.0,
                                   confidence=DEFAULT_CONFIDENCE, stability_pct=0.0)) \
            if decide and window > 0 else None
        return run_load(server.grpc_address, self.payloads, spec,
                        metrics_url=server.endpoint.metrics_url, model_name=server.model_name,
                        label=server.config.label, stop_when=rule)

    def _max_qps(self, server: RunningServer, stage: Stage) -> MaxQps:
        """The rate search, started near the hint; when the hint's rate already fails, it
        starts again lower (at most twice) rather than report 0."""
        lo = max(20.0, stage.hint_qps * 0.8) if stage.hint_qps else 100.0
        trials = []
        while True:
            found = max_qps(lambda rate: self._load(server, rate, stage.duration_s, True),
                            self.p99_ms,
                            lo=lo, precision=0.1 if stage.name == "screen" else 0.05,
                            max_trials=self.max_steps)
            trials += found.trials
            if found.rate or lo <= 50.0 or len(trials) >= 2 * self.max_steps:
                found.trials = trials
                return found
            lo = max(50.0, lo / 3)

    def _measure(self, server: RunningServer, stage: Stage, started: float) -> TrialResult:
        details: dict[str, Any] = {}
        if self.examples is not None:
            verdict = check_invariance(server.client(), self.signature, self.examples,
                                       rtol=self.rtol, atol=self.atol)
            details["invariance"] = verdict.as_dict()
            if not verdict.ok:
                return TrialResult(0.0, disqualified=f"batching changes predictions: "
                                                     f"{verdict.problem}",
                                   elapsed_s=time.monotonic() - started, details=details)
        found = self._max_qps(server, stage)
        details["max_qps"] = found.as_dict()
        pid = server.endpoint.extra.get("pid")
        container = server.endpoint.extra.get("container")
        url = server.endpoint.metrics_url
        cpu_before, scraped = cpu_seconds(pid, container), scrape(url)
        at_sla = self._load(server, self.sla_qps, max(stage.duration_s, 2.0))
        cpu_after, batches = cpu_seconds(pid, container), batch_evidence(scraped, scrape(url),
                                                                server.model_name)
        cpu_1k = None
        served = batches.requests or at_sla.requests  # warm-up requests included when known
        if cpu_before is not None and cpu_after is not None and served:
            cpu_1k = (cpu_after - cpu_before) / served * 1000
        return TrialResult(
            found.rate, p99_at_sla_ms=at_sla.p99_ms, mean_batch_size=batches.mean_batch_size,
            padding_share=batches.padding_share, queue_delay_ms=batches.queue_delay_ms,
            cpu_s_per_1k=cpu_1k, elapsed_s=time.monotonic() - started,
            details={**details, "sla_rate": self.sla_qps, "errors_at_sla": at_sla.error_rate,
                     "server_pid": pid if isinstance(pid, int) else None,
                     "cores": os.cpu_count()})
