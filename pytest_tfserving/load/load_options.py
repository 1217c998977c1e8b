"""The load options (``--tfs-sla-*`` rate, duration, windows, workers, requests): the SLA gate's
load and the defaults of every ``tfs_load`` run, turned into a ``LoadSpec``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.core_options import require_signatures
from pytest_tfserving.option_spec import option

if TYPE_CHECKING:
    from pytest_tfserving.load.spec import LoadSpec
    from pytest_tfserving.model import ModelInfo

# The defaults suit the demo CTR model on a 2-core machine with the bundled server: 300 req/s
# Poisson arrivals of batch-1 requests (dynamic batching has work to merge); give your production
# numbers (the playbook's: --tfs-sla-min-qps=800 --tfs-sla-p99-ms=20) in the ini file.


@dataclass(frozen=True)
class LoadOptions:
    """How load is offered: open-loop rate or closed-loop callers, windows, workers, requests."""

    min_qps: float = option(
        "sla_min_qps", 300.0, p.positive_float, "SLA gate: the offered open-loop rate in req/s "
        "('at N QPS, p99 <= X'); the server must answer at least 95 % of it. With "
        "--tfs-sla-concurrency: the minimum achieved throughput.", metavar="QPS")
    duration: float = option(
        "sla_duration", 6.0, p.positive_float, "SLA gate: measured seconds (3 windows); windows "
        "repeat until 3 consecutive ones agree (--tfs-sla-stability-pct).", metavar="SECONDS")
    warmup: float = option("sla_warmup", 2.0, p.non_negative_float, "SLA gate: seconds of load "
                           "before measuring (excluded).", metavar="SECONDS")
    concurrency: int = option("sla_concurrency", 0, p.non_negative_int, "SLA gate: closed loop "
                              "with N callers instead of a fixed rate (0 = open loop).",
                              metavar="N")
    arrival: str = option("sla_arrival", "poisson", p.choice("poisson", "constant"), "SLA gate: "
                          "open-loop arrivals: poisson (production-like) or constant.")
    stability_pct: float = option(
        "sla_stability_pct", 10.0, p.non_negative_float, "SLA gate: windows agree when p99 and "
        "throughput of 3 in a row are within this % (perf_analyzer's rule); 0 = measure "
        "--tfs-sla-duration once.", metavar="PCT")
    max_windows: int = option("sla_max_windows", 30, p.positive_int, "SLA gate: stop after this "
                              "many windows even if never stable or decided.", metavar="N")
    max_duration: float = option(
        "sla_max_duration", 30.0, p.positive_float, "SLA gate: longest measurement (after "
        "warm-up) while the verdict is undecided at --tfs-sla-confidence or the windows "
        "disagree; at least --tfs-sla-duration.", metavar="SECONDS")
    workers: int = option("sla_workers", 0, p.non_negative_int, "Load generator processes (0 = "
                          "as the rate needs, at most one per core).", metavar="N")
    batch_size: int = option(
        "sla_batch_size", 1, p.non_negative_int, "SLA gate: examples per request (warmup "
        "records and .npz rows are re-cut to it; 0 = warmup records as they are).", metavar="N")
    requests: Path | None = option(
        "sla_requests", None, p.existing_file, "SLA gate: .npz with arrays named after the "
        "signature's inputs; rows become requests (default: warmup records, else synthesized).",
        metavar="FILE.npz")
    signature: str | None = option("sla_signature", None, p.text, "SLA gate: signature to load "
                                   "(default serving_default, else the first served).",
                                   metavar="NAME")
    timeout: float = option(
        "sla_timeout", 5.0, p.positive_float, "SLA gate: per-request deadline in seconds (a "
        "request past it counts as DEADLINE_EXCEEDED).", metavar="SECONDS")

    def to_spec(self, **changes: Any) -> LoadSpec:
        """The LoadSpec these options describe, with LoadSpec field changes on top."""
        from pytest_tfserving.load.spec import LoadSpec

        spec = LoadSpec(
            rate=self.min_qps, mode="closed" if self.concurrency else "open",
            arrival=self.arrival, concurrency=self.concurrency or 1, duration_s=self.duration,
            warmup_s=self.warmup, stability_pct=self.stability_pct,
            max_windows=self.max_windows, timeout_s=self.timeout, workers=self.workers)
        spec = replace(spec, **changes)
        if "max_windows" not in changes:  # the longest measurement bounds the windows too
            cap = max(spec.min_windows, int(self.max_duration // spec.window + 1e-9))
            spec = replace(spec, max_windows=max(spec.min_windows, min(spec.max_windows, cap)))
        return spec.validate()

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None:
        """The load signature exists; a requests .npz has an array per input it needs."""
        from pytest_tfserving.servability import load_signature_choice

        require_signatures(model, [self.signature], "--tfs-sla-signature",
                           sources.get("sla_signature", "default"))
        if self.requests is None:
            return
        name, _ = load_signature_choice(model, self.signature)
        if name is not None:
            from pytest_tfserving.predict_requests import load_npz_inputs

            load_npz_inputs(self.requests, model.signature(name))
