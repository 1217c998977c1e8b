"""Server-side evidence from TF Serving's Prometheus page: read the same way from real TF Serving
and from the bundled server.

TF Serving (``--monitoring_config_file`` with ``prometheus_config { enable: true }``) exports its
monitoring metrics at ``/monitoring/prometheus/metrics`` on the REST port, named
``:tensorflow:serving:<name>``; latencies are in microseconds. The names read here:

- ``request_count{model_name, status}`` (counter)
- ``request_latency{model_name, API, entrypoint}`` (histogram, us)
- ``batching_session:queuing_latency{thread_pool_name}`` (histogram, us)
- ``batching_session:processed_batch_size`` (histogram: examples per batch run)

The gate scrapes the page before and after the measurement and reads the differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = ":tensorflow:serving:"
REQUEST_COUNT = PREFIX + "request_count"
REQUEST_LATENCY = PREFIX + "request_latency"
QUEUING_LATENCY = PREFIX + "batching_session:queuing_latency"
PROCESSED_BATCH_SIZE = PREFIX + "batching_session:processed_batch_size"

Labels = tuple[tuple[str, str], ...]


@dataclass
class BucketHistogram:
    """A Prometheus histogram: cumulative counts per upper bound (the last bound is +Inf)."""

    bounds: list[float]
    cumulative: list[float]
    sum: float = 0.0

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def minus(self, before: BucketHistogram | None) -> BucketHistogram:
        if before is None or before.bounds != self.bounds:
            return BucketHistogram(list(self.bounds), list(self.cumulative), self.sum)
        pairs = zip(self.cumulative, before.cumulative, strict=True)
        return BucketHistogram(list(self.bounds), [a - b for a, b in pairs],
                               self.sum - before.sum)

    def plus(self, other: BucketHistogram) -> BucketHistogram:
        if other.bounds != self.bounds:
            raise ValueError("cannot add histograms with different bucket bounds "
                             f"({self.bounds[:3]}... vs {other.bounds[:3]}...)")
        pairs = zip(self.cumulative, other.cumulative, strict=True)
        return BucketHistogram(list(self.bounds), [a + b for a, b in pairs],
                               self.sum + other.sum)

    def quantile(self, q: float) -> float:
        """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
        if not self.count:
            return 0.0
        rank = q * self.count
        prev_bound, prev_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank:
                if bound == float("inf"):
                    return prev_bound
                inside = cum - prev_count
                frac = (rank - prev_count) / inside if inside else 1.0
                return prev_bound + (bound - prev_bound) * frac
            prev_bound, prev_count = bound, cum
        return prev_bound

    def buckets(self) -> dict[str, int]:
        """Non-empty buckets as ``{"lo-hi": count}`` (integer-valued metrics such as sizes)."""
        out: dict[str, int] = {}
        prev_bound, prev_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            n = int(round(cum - prev_count))
            if n:
                lo = int(prev_bound) + 1
                if bound == float("inf"):
                    label = f">{int(prev_bound)}"
                elif lo >= int(bound):
                    label = str(int(bound))
                else:
                    label = f"{lo}-{int(bound)}"
                out[label] = n
            prev_bound, prev_count = bound, cum
        return out


@dataclass
class Snapshot:
    """One scrape: counters and histograms keyed by (name, labels)."""

    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    histograms: dict[tuple[str, Labels], BucketHistogram] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.counters and not self.histograms

    def counter_by(self, name: str, label: str, where: Mapping[str, str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for (metric, labels), value in self.counters.items():
            got = dict(labels)
            if metric == name and _matches(got, where):
                key = got.get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out

    def histogram(self, name: str, where: Mapping[str, str]) -> BucketHistogram | None:
        found: BucketHistogram | None = None
        for (metric, labels), hist in self.histograms.items():
            if metric == name and _matches(dict(labels), where):
                found = hist if found is None else found.plus(hist)
        return found


def _matches(labels: Mapping[str, str], where: Mapping[str, str]) -> bool:
    """Label filters apply only where the metric has that label (batching metrics have none)."""
    return all(labels.get(k, v) == v for k, v in where.items())


def parse(text: str) -> Snapshot:
    """Parse Prometheus exposition text (TF Serving's or prometheus_client's)."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = Snapshot()
    if not text.strip():
        return snap
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            grouped: dict[Labels, BucketHistogram] = {}
            for sample in family.samples:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                hist = grouped.setdefault(labels, BucketHistogram([], []))
                if sample.name.endswith("_bucket"):
                    hist.bounds.append(float(sample.labels["le"]))
                    hist.cumulative.append(float(sample.value))
                elif sample.name.endswith("_sum"):
                    hist.sum = float(sample.value)
            for labels, hist in grouped.items():
                order = sorted(range(len(hist.bounds)), key=lambda i: hist.bounds[i])
                hist.bounds = [hist.bounds[i] for i in order]
                hist.cumulative = [hist.cumulative[i] for i in order]
                snap.histograms[(family.name, labels)] = hist
        elif family.type in ("counter", "gauge", "untyped"):
            for sample in family.samples:
                # prometheus_client's parser names counter samples <name>_total
                labels = tuple(sorted(sample.labels.items()))
                snap.counters[(family.name, labels)] = float(sample.value)
    return snap


@dataclass
class ServerEvidence:
    """What the server says happened between two scrapes."""

    available: bool
    requests: dict[str, float] = field(default_factory=dict)  # status -> count
    latency: BucketHistogram | None = None  # us
    queuing: BucketHistogram | None = None  # us
    batch_sizes: BucketHistogram | None = None
    note: str = ""

    @property
    def batching_seen(self) -> bool:
        return self.batch_sizes is not None and self.batch_sizes.count > 0

    @property
    def mean_batch_size(self) -> float:
        return self.batch_sizes.mean if self.batch_sizes else 0.0

    def as_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "note": self.note}
        out: dict[str, Any] = {"available": True,
                               "requests": {k: int(v) for k, v in self.requests.items()}}
        if self.latency is not None and self.latency.count:
            out["latency_mean_ms"] = round(self.latency.mean / 1000, 3)
            out["latency_p99_ms"] = round(self.latency.quantile(0.99) / 1000, 3)
        if self.queuing is not None and self.queuing.count:
            out["queue_delay_mean_ms"] = round(self.queuing.mean / 1000, 3)
            out["queue_delay_p99_ms"] = round(self.queuing.quantile(0.99) / 1000, 3)
        if self.batch_sizes is not None and self.batch_sizes.count:
            out["batches"] = int(self.batch_sizes.count)
            out["mean_batch_size"] = round(self.batch_sizes.mean, 2)
            out["batch_size_p99"] = round(self.batch_sizes.quantile(0.99), 1)
            out["batch_sizes"] = self.batch_sizes.buckets()
        if self.note:
            out["note"] = self.note
        return out

    def summary(self) -> str:
        if not self.available:
            return f"server metrics unavailable ({self.note})"
        parts = []
        if self.latency is not None and self.latency.count:
            parts.append(f"server p99 ~{self.latency.quantile(0.99) / 1000:.2f} ms "
                         f"(mean {self.latency.mean / 1000:.2f} ms)")
        if self.batch_sizes is not None and self.batch_sizes.count:
            parts.append(f"{int(self.batch_sizes.count)} batches, mean size "
                         f"{self.batch_sizes.mean:.1f}, sizes {self.batch_sizes.buckets()}")
        else:
            parts.append("no batches recorded (batching off, or the server exports no "
                         "processed_batch_size)")
        if self.queuing is not None and self.queuing.count:
            parts.append(f"queue delay mean {self.queuing.mean / 1000:.2f} ms, p99 "
                         f"~{self.queuing.quantile(0.99) / 1000:.2f} ms")
        return "; ".join(parts)


def evidence(before: Snapshot, after: Snapshot, model_name: str) -> ServerEvidence:
    """The differences between two scrapes, for one model."""
    if after.empty:
        return ServerEvidence(False, note="the metrics page was empty or unreachable; serve with "
                                          "--monitoring_config_file (prometheus_config enabled)")
    where = {"model_name": model_name}
    after_req = after.counter_by(REQUEST_COUNT, "status", where)
    before_req = before.counter_by(REQUEST_COUNT, "status", where)
    requests = {k: v - before_req.get(k, 0.0) for k, v in after_req.items()}

    def diff(name: str, filt: Mapping[str, str]) -> BucketHistogram | None:
        now = after.histogram(name, filt)
        return now.minus(before.histogram(name, filt)) if now is not None else None

    return ServerEvidence(
        True, requests={k: v for k, v in requests.items() if v},
        latency=diff(REQUEST_LATENCY, where), queuing=diff(QUEUING_LATENCY, {}),
        batch_sizes=diff(PROCESSED_BATCH_SIZE, {}),
    )


def scrape(metrics_url: str | None, timeout: float = 5.0) -> Snapshot:
    """Fetch and parse the page; an empty snapshot when there is none or it cannot be read."""
    import urllib.error
    import urllib.request

    if not metrics_url:
        return Snapshot()
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
            return parse(response.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return Snapshot()
