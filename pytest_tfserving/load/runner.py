"""Load runs against a session's server with defaults from the load options (``--tfs-sla-*``):
what the ``tfs_load`` fixture returns and what the SLA gate uses.

``runner(rate=500, duration=10)`` -> ``LoadResult``; ``runner.max_qps(p99_ms=20)`` -> ``MaxQps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.launchers.death import abort_reason
from pytest_tfserving.load.driver import run_load
from pytest_tfserving.load.load_options import LoadOptions
from pytest_tfserving.load.result import LoadResult
from pytest_tfserving.load.search import MaxQps, max_qps
from pytest_tfserving.load.stats import WindowStats
from pytest_tfserving.sla_rules import DEFAULT_CONFIDENCE, SlaLimits
from pytest_tfserving.sla_rules import stop_when as sla_stop_rule

StopRule = Callable[[Sequence[WindowStats]], bool]

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.session import RunningServer


def default_signature(model: ModelInfo, chosen: str | None) -> str:
    """The chosen signature, else serving_default, else the only served one; with several
    served signatures and no serving_default a ConfigError asks which one to load."""
    from pytest_tfserving.servability import load_signature_choice

    name, why = load_signature_choice(model, chosen, "signature=NAME (or --tfs-sla-signature=NAME)")
    if name is None:
        raise ConfigError(f"Cannot tell which signature to load: {why}.")
    return name


@dataclass
class LoadRunner:
    """Runs load against ``server`` (the session's default server unless told otherwise)."""

    options: LoadOptions
    model: ModelInfo
    server: RunningServer
    user_requests: Sequence[Any] | None = None
    progress: Callable[[str], None] | None = None
    history: list[LoadResult] = field(default_factory=list)

    def payloads(self, signature: str | None = None, batch_size: int | None = None,
                 requests: Sequence[Any] | None = None,
                 model: ModelInfo | None = None) -> tuple[list[bytes], str]:
        from pytest_tfserving.load.payloads import for_model

        model = model or self.model
        sig = default_signature(model, signature or self.options.signature)
        if batch_size is None:
            batch_size = self.options.batch_size or None
        user = requests if requests is not None else self.user_requests
        return for_model(model, self.server.model_name, sig, batch_size=batch_size,
                         npz=self.options.requests, user_requests=user)

    def __call__(self, rate: float | None = None, duration: float | None = None, *,
                 concurrency: int | None = None, arrival: str | None = None,
                 warmup: float | None = None, stability_pct: float | None = None,
                 max_windows: int | None = None, max_requests: int = 0,
                 timeout: float | None = None, workers: int | None = None,
                 batch_size: int | None = None, signature: str | None = None,
                 requests: Sequence[Any] | None = None, server: RunningServer | None = None,
                 label: str = "", stop_when: StopRule | None = None) -> LoadResult:
        """One load run. Open loop at ``rate`` req/s unless ``concurrency`` is given."""
        changes: dict[str, Any] = {"max_requests": max_requests}
        if rate is not None:
            changes["rate"] = float(rate)
        if duration is not None:
            changes["duration_s"] = float(duration)
        if concurrency is not None:
            changes.update(mode="closed" if concurrency else "open",
                           concurrency=max(1, int(concurrency)))
        for key, value in (("arrival", arrival), ("warmup_s", warmup),
                           ("stability_pct", stability_pct), ("max_windows", max_windows),
                           ("timeout_s", timeout), ("workers", workers)):
            if value is not None:
                changes[key] = value
        spec = self.options.to_spec(**changes)
        target = server or self.server
        payloads, _ = self.payloads(signature, batch_size, requests)
        result = run_load(target.grpc_address, payloads, spec,
                          metrics_url=target.endpoint.metrics_url, model_name=target.model_name,
                          progress=self.progress, label=label or target.config.label,
                          stop_when=stop_when, abort=abort_reason(target))
        self.history.append(result)
        return result

    def max_qps(self, p99_ms: float, lo: float = 50.0, hi: float = 20_000.0,
                duration: float = 2.0, precision: float = 0.05, max_error_rate: float = 0.001,
                max_trial: float = 10.0, confidence: float = DEFAULT_CONFIDENCE,
                **kwargs: Any) -> MaxQps:
        """The highest open-loop rate whose p99 stays within ``p99_ms`` at ``confidence``
        (binary search). Each trial measures at least ``duration`` seconds and goes on, up to
        ``max_trial``, until the latency verdict is decided."""
        warmup = kwargs.pop("warmup", 0.5)
        window = duration / 3.0
        # stop once the latency is decided (errors are judged on the finished trial)
        rule = sla_stop_rule(SlaLimits(latency_ms=p99_ms, max_error_rate=1.0,
                                       confidence=confidence, stability_pct=0.0))

        def one(rate: float) -> LoadResult:
            return self(rate=rate, duration=duration, concurrency=0, stability_pct=0,
                        warmup=warmup, stop_when=rule,
                        max_windows=max(3, math.ceil(max_trial / window)), **kwargs)

        return max_qps(one, p99_ms, lo=lo, hi=hi, precision=precision,
                       max_error_rate=max_error_rate, confidence=confidence)
