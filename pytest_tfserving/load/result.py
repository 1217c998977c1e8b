"""What one load run measured: ``LoadResult``, and how it is built from the merged windows
(which windows the verdict uses, whether the generator kept its schedule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_tfserving.load import stability
from pytest_tfserving.load.server_metrics import ServerEvidence
from pytest_tfserving.load.spec import LoadSpec
from pytest_tfserving.load.stats import LatencyStats, WindowStats, combine, merge
from pytest_tfserving.load.timeline import Timeline

# The generator "fell behind" when it sent the p99 request later than LAG_LIMIT_MS and than
# LAG_LIMIT_SHARE of the measured p99 (then its own delay, not the server, makes the tail), or sent
# fewer than OFFERED_MIN_SHARE of the requests the rate asks for.
LAG_LIMIT_MS = 5.0
LAG_LIMIT_SHARE = 0.25
OFFERED_MIN_SHARE = 0.95  # of the requests the schedule asked for


@dataclass
class LoadResult:
    """What one load run measured. Latencies in ms; ``qps`` is achieved (successful answers/s)."""

    spec: LoadSpec
    target: str
    stats: LatencyStats  # the windows the verdict uses (the stable run, or all when unstable)
    windows: list[WindowStats]
    stable: bool
    stability_reason: str
    generator_behind: bool
    generator_note: str
    server: ServerEvidence
    error_details: dict[str, str] = field(default_factory=dict)
    label: str = ""
    missed: int = 0  # measured requests the generator never got to send (time ran out)
    service: LatencyStats | None = None  # latency from the actual send (as h2load measures)
    # every request, warm-up included, sorted by intended send time (``LoadSpec(timeline=True)``)
    timeline: Timeline | None = None
    aborted: str = ""  # why the abort hook stopped the run ("" when it was not)
    aborted_at_s: float | None = None  # when, in seconds since the load started

    @property
    def p99_from_send_ms(self) -> float:
        """p99 measured from when each request was actually sent: what a tool that suffers
        coordinated omission reports; compare with ``p99_ms`` to see the generator's share."""
        return self.service.p99_ms if self.service is not None else 0.0

    @property
    def sent_share(self) -> float:
        """Share of the requests the schedule asked for that were sent (1.0: all)."""
        asked = self.stats.sent + self.missed
        return self.stats.sent / asked if asked else 1.0

    @property
    def rate_not_offered(self) -> bool:
        """The generator could not offer the rate: the server was not tested at it."""
        return self.sent_share < OFFERED_MIN_SHARE

    # --- numbers ------------------------------------------------------------------------------
    @property
    def p50_ms(self) -> float:
        return self.stats.p50_ms

    @property
    def p90_ms(self) -> float:
        return self.stats.p90_ms

    @property
    def p99_ms(self) -> float:
        return self.stats.p99_ms

    @property
    def p999_ms(self) -> float:
        return self.stats.p999_ms

    @property
    def max_ms(self) -> float:
        return self.stats.max_ms

    @property
    def qps(self) -> float:
        return self.stats.qps

    @property
    def offered_qps(self) -> float:
        return self.stats.offered_qps

    @property
    def errors(self) -> dict[str, int]:
        return dict(self.stats.errors)

    @property
    def error_rate(self) -> float:
        return self.stats.error_rate

    @property
    def requests(self) -> int:
        return self.stats.sent

    @property
    def batch_sizes(self) -> dict[str, int]:
        """Server-observed batch sizes {"5-8": batches, ...} (empty without metrics)."""
        sizes = self.server.batch_sizes
        return sizes.buckets() if sizes is not None else {}

    @property
    def mean_batch_size(self) -> float:
        return self.server.mean_batch_size

    def percentile(self, p: float) -> float:
        return self.stats.percentile(p)

    @property
    def send_lag_p99_ms(self) -> float:
        """How late the generator sent its p99 request (worst window; open loop)."""
        return max((w.lag_p99_ms for w in self.windows), default=0.0)

    def p99_ci_ms(self) -> tuple[float, float]:
        return self.stats.p99_ci_ms()

    # --- readable assertions ------------------------------------------------------------------
    def summary(self) -> str:
        lo, hi = self.p99_ci_ms()
        errs = ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())) or "none"
        text = (f"{self.spec.describe()} against {self.target}: p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms (95% CI {lo:.2f}-{hi:.2f}), p99.9 "
                f"{self.p999_ms:.2f} ms, max {self.max_ms:.2f} ms; achieved {self.qps:.0f} "
                f"req/s of {self.offered_qps:.0f} sent/s; errors {errs}; "
                f"{'stable' if self.stable else 'NOT stable'} ({self.stability_reason})")
        if self.spec.mode == "open" and self.windows:
            text += (f"; generator send lag p99 {self.send_lag_p99_ms:.2f} ms (p99 from the "
                     f"actual send {self.p99_from_send_ms:.2f} ms)")
        if self.generator_behind:
            text += f"; GENERATOR FELL BEHIND: {self.generator_note}"
        if self.aborted:
            text += f"; ABORTED {self.aborted_at_s or 0.0:.2f} s into the load: {self.aborted}"
        return text + f"; {self.server.summary()}"

    def assert_p99_below(self, ms: float) -> None:
        if not self.p99_ms <= ms:
            raise AssertionError(f"p99 {self.p99_ms:.2f} ms > limit {ms:g} ms. {self.summary()}")

    def assert_percentile_below(self, p: float, ms: float) -> None:
        got = self.percentile(p)
        if not got <= ms:
            raise AssertionError(f"p{p:g} {got:.2f} ms > limit {ms:g} ms. {self.summary()}")

    def assert_qps_at_least(self, qps: float) -> None:
        if not self.qps >= qps:
            raise AssertionError(f"achieved {self.qps:.1f} req/s < required {qps:g} req/s. "
                                 f"{self.summary()}")

    def assert_error_rate_below(self, rate: float) -> None:
        if not self.error_rate <= rate:
            raise AssertionError(f"error rate {self.error_rate:.4%} > limit {rate:.4%} "
                                 f"({self.errors}; first messages {self.error_details}). "
                                 f"{self.summary()}")

    def assert_batched(self, min_mean_batch_size: float = 1.01) -> None:
        if not self.server.available:
            raise AssertionError(f"no server metrics to prove batching: {self.server.note}")
        if not self.mean_batch_size >= min_mean_batch_size:
            raise AssertionError(f"mean server batch size {self.mean_batch_size:.2f} < "
                                 f"{min_mean_batch_size:g}: {self.server.summary()}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "label": self.label, "spec": self.spec.as_dict(),
            **self.stats.as_dict(), "stable": self.stable,
            "stability": self.stability_reason, "generator_behind": self.generator_behind,
            "generator_note": self.generator_note, "error_details": self.error_details,
            "send_lag_p99_ms": round(self.send_lag_p99_ms, 3), "missed": self.missed,
            "p99_from_send_ms": round(self.p99_from_send_ms, 3),
            "windows": [w.summary() for w in self.windows], "server": self.server.as_dict(),
            "aborted": self.aborted, "aborted_at_s": self.aborted_at_s,
        }


def stability_throughput(window: WindowStats, spec: LoadSpec) -> float:
    """The throughput the stability rule compares. Open loop: answers per request sent, scaled
    to the rate, because Poisson arrivals make the offered count itself vary from window to
    window (about 1/sqrt(n)); what must agree is how much of it the server answered."""
    s = window.stats
    if spec.mode == "open" and s.sent:
        return s.ok / s.sent * spec.rate
    return s.qps


def window_verdict(windows: list[WindowStats], spec: LoadSpec) -> stability.Verdict:
    return stability.check([w.stats.p99_ms for w in windows],
                           [stability_throughput(w, spec) for w in windows], spec.stability_pct,
                           usable=[not w.partial and w.stats.ok > 0 for w in windows])


def build_result(spec: LoadSpec, target: str, windows: list[WindowStats],
            verdict: stability.Verdict, stop_on_stable: bool, error_details: dict[str, str],
            server: ServerEvidence, label: str, missed: int = 0,
            stop_rule: bool | None = None) -> LoadResult:
    full = [w for w in windows if not w.partial] or windows
    if stop_rule is not None:
        chosen, stable = full, stop_rule
        reason = (f"the stop rule was met after {len(windows)} window(s)" if stop_rule else
                  f"the stop rule was not met in {len(windows)} window(s)")
    elif stop_on_stable:
        verdict = window_verdict(windows, spec) if not verdict.stable else verdict
        if verdict.stable:
            chosen = windows[verdict.first:verdict.first + stability.DEFAULT_COUNT]
        else:
            chosen = full[-stability.DEFAULT_COUNT:]
        stable, reason = verdict.stable, verdict.reason
        if not stable:
            reason = f"never stable in {len(full)} windows: {verdict.reason}"
    else:
        chosen, stable, reason = full, True, "stability rule off"
    stats = combine(chosen)
    behind, note = generator_check(spec, chosen, missed)
    service = LatencyStats(merge([w.service for w in chosen if w.service is not None]),
                           stats.span_s, stats.sent, stats.ok, dict(stats.errors))
    return LoadResult(spec=spec, target=target, stats=stats, windows=windows, stable=stable,
                      stability_reason=reason, generator_behind=behind, generator_note=note,
                      server=server, error_details=error_details, label=label, missed=missed,
                      service=service)


def generator_check(spec: LoadSpec, windows: Sequence[WindowStats],
                     missed: int = 0) -> tuple[bool, str]:
    """Did the generator keep its schedule? Late sends, or requests it never got to send."""
    if spec.mode != "open":
        return False, ""
    stats = combine(windows)
    lag = max((w.lag_p99_ms for w in windows), default=0.0)
    limit = max(LAG_LIMIT_MS, LAG_LIMIT_SHARE * stats.p99_ms)
    problems = []
    if lag > limit:
        problems.append(f"it sent the p99 request {lag:.1f} ms after its intended time "
                        f"(limit {limit:.1f} ms: the larger of {LAG_LIMIT_MS:g} ms and "
                        f"{LAG_LIMIT_SHARE:.0%} of the measured p99)")
    asked = stats.sent + missed
    if missed and missed > (1 - OFFERED_MIN_SHARE) * asked:
        problems.append(f"time ran out before it sent {missed} of the {asked} requests "
                        f"{spec.rate:g} req/s asks for ({stats.sent / asked:.0%} sent)")
    elif not stats.sent and not spec.max_requests:
        problems.append("it sent no request in the measured time")
    if not problems:
        return False, ""
    return True, ("; ".join(problems) + f" with {spec.worker_count()} worker process(es); the "
                  "latencies include that delay. Lower the rate, give the generator more "
                  "workers (--tfs-sla-workers), or run on a less loaded machine")
