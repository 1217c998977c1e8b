"""The bundled server's metrics, as TF Serving's: names, labels, units and buckets.

Confirmed in tensorflow/serving: ``servables/tensorflow/util.cc`` (request_count,
request_latency, runtime_latency, request_example_counts, request_example_count_total),
``batching/batching_session.cc`` (queuing_latency, wrapped_run_count), ``batching/batching_util.h``
(input_batch_size, processed_batch_size, padding_size), ``servables/tensorflow/
saved_model_warmup_util.cc`` (model_warmup_latency, model_warmup_records_read). Latencies are in
microseconds. TF's monitoring name ``/tensorflow/serving/x`` is exported as
``:tensorflow:serving:x`` (``util/prometheus_exporter.cc``), counters without a ``_total``
suffix, histograms as ``_bucket{le=...}``, ``_sum``, ``_count``. The samples live in a
prometheus_client ``CollectorRegistry`` (``Metrics.registry``); ``render()`` writes the page the
way TF Serving's exporter does, so a parser reads both alike.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.registry import Collector

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS_READ = ":tensorflow:serving:model_warmup_records_read"
THREAD_POOL_NAME = "batch_threads"  # SharedBatchScheduler's default thread_pool_name


def exponential(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """monitoring::Buckets::Exponential: ``count`` limits, then DBL_MAX (+Inf)."""
    out, bound = [], scale
    for _ in range(count):
        out.append(bound)
        bound *= growth
    return tuple(out)


LATENCY_BUCKETS = exponential(10, 1.8, 33)
QUEUING_BUCKETS = exponential(100, 1.2, 52)
BATCH_BUCKETS = exponential(1, 2, 14)
EXAMPLE_BUCKETS = exponential(1, 2, 15)


def _num(value: float) -> str:
    """absl::StrCat(double): six significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


class _Histogram:
    def __init__(self, limits: Sequence[float]) -> None:
        self.limits = tuple(limits)
        self.counts = [0] * (len(self.limits) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.limits, value)] += 1
        self.sum += value


class _Family:
    def __init__(self, name: str, doc: str, kind: str, labels: tuple[str, ...],
                 limits: Sequence[float] = ()) -> None:
        self.name, self.doc, self.kind, self.labels, self.limits = name, doc, kind, labels, limits
        self.cells: dict[tuple[str, ...], _Histogram | list[int]] = {}

    def observe(self, values: tuple[str, ...], value: float) -> None:
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = _Histogram(self.limits)
        assert isinstance(cell, _Histogram)
        cell.add(value)

    def inc(self, values: tuple[str, ...], by: int = 1) -> None:
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = [0]
        assert isinstance(cell, list)
        cell[0] += by


class Metrics(Collector):
    """All metrics of one server process; every ``record_*`` is thread-safe and cheap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        f = _Family
        self._families = {
            REQUEST_COUNT: f(REQUEST_COUNT, "The total number of requests.", "counter",
                             ("model_name", "status")),
            REQUEST_LATENCY: f(REQUEST_LATENCY, "Distribution of wall time (in microseconds) "
                               "for Tensorflow Serving request.", "histogram",
                               ("model_name", "API", "entrypoint"), LATENCY_BUCKETS),
            RUNTIME_LATENCY: f(RUNTIME_LATENCY, "Distribution of wall time (in microseconds) "
                               "for Tensorflow runtime.", "histogram",
                               ("model_name", "API", "runtime"), LATENCY_BUCKETS),
            EXAMPLE_COUNTS: f(EXAMPLE_COUNTS, "The number of tensorflow.Examples per request.",
                              "histogram", ("model",), EXAMPLE_BUCKETS),
            EXAMPLE_COUNT_TOTAL: f(EXAMPLE_COUNT_TOTAL, "The total number of "
                                   "tensorflow.Examples.", "counter", ("model",)),
            QUEUING_LATENCY: f(QUEUING_LATENCY, "Distribution of wall time spent (in "
                               "microseconds) in queuing", "histogram", ("thread_pool_name",),
                               QUEUING_BUCKETS),
            WRAPPED_RUN_COUNT: f(WRAPPED_RUN_COUNT, "Total count of run calls on the wrapped "
                                 "session", "counter", ()),
            INPUT_BATCH_SIZE: f(INPUT_BATCH_SIZE, "Tracks the batch size distribution on the "
                                "inputs.", "histogram", (), BATCH_BUCKETS),
            PROCESSED_BATCH_SIZE: f(PROCESSED_BATCH_SIZE, "Tracks the batch size distribution "
                                    "on processing.", "histogram", (), BATCH_BUCKETS),
            PADDING_SIZE: f(PADDING_SIZE, "Tracks the padding size distribution on batches.",
                            "histogram", ("execution_batch_size",), BATCH_BUCKETS),
            WARMUP_LATENCY: f(WARMUP_LATENCY, "Distribution of wall time (in microseconds) for "
                              "warming up the model.", "histogram", ("model_path", "status"),
                              LATENCY_BUCKETS),
            WARMUP_RECORDS_READ: f(WARMUP_RECORDS_READ, "Total number of warmup records read "
                                   "during model warmup.", "counter", ("model_path", "status")),
        }
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- recording -------------------------------------------------------------------------
    def record_request(self, model: str, api: str, entrypoint: str, status: str,
                       latency_us: float) -> None:
        with self._lock:
            if status == "OK":  # TF Serving records latency of successful requests only
                self._families[REQUEST_LATENCY].observe((model, api, entrypoint), latency_us)
            self._families[REQUEST_COUNT].inc((model, status))

    def record_runtime(self, model: str, api: str, latency_us: float) -> None:
        with self._lock:
            self._families[RUNTIME_LATENCY].observe((model, api, "TF1"), latency_us)

    def record_examples(self, model: str, n: int) -> None:
        with self._lock:
            self._families[EXAMPLE_COUNTS].observe((model,), n)
            self._families[EXAMPLE_COUNT_TOTAL].inc((model,), n)

    def record_input_batch_size(self, size: int, times: int = 1) -> None:
        with self._lock:
            fam = self._families[INPUT_BATCH_SIZE]
            for _ in range(times):
                fam.observe((), size)

    def record_batch(self, size: int, padded: int, queue_delays_us: Sequence[float]) -> None:
        with self._lock:
            fam = self._families
            fam[PADDING_SIZE].observe((str(padded),), padded - size)
            fam[PROCESSED_BATCH_SIZE].observe((), padded)
            fam[WRAPPED_RUN_COUNT].inc(())
            for delay in queue_delays_us:
                fam[QUEUING_LATENCY].observe((THREAD_POOL_NAME,), delay)

    def record_warmup(self, model_path: str, status: str, latency_us: float,
                      records: int) -> None:
        with self._lock:
            self._families[WARMUP_LATENCY].observe((model_path, status), latency_us)
            self._families[WARMUP_RECORDS_READ].inc((model_path, status), records)

    # -- prometheus_client collector ---------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for fam in self._families.values():
                metric = Metric(fam.name, fam.doc, fam.kind)
                for values, cell in fam.cells.items():
                    labels = dict(zip(fam.labels, values, strict=True))
                    if isinstance(cell, list):
                        metric.add_sample(fam.name, labels, float(cell[0]))
                        continue
                    total = 0
                    bounds = [_num(x) for x in cell.limits] + ["+Inf"]
                    for bound, count in zip(bounds, cell.counts, strict=True):
                        total += count
                        metric.add_sample(fam.name + "_bucket", {**labels, "le": bound},
                                          float(total))
                    metric.add_sample(fam.name + "_sum", labels, cell.sum)
                    metric.add_sample(fam.name + "_count", labels, float(total))
                if metric.samples:
                    yield metric

    def render(self) -> str:
        """The Prometheus page, line for line as TF Serving's PrometheusExporter writes it."""
        lines: list[str] = []
        for metric in self.registry.collect():
            name = metric.samples[0].name if metric.type == "counter" else metric.name
            lines.append(f"# TYPE {name} {metric.type}")
            for s in metric.samples:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                lines.append(f"{s.name}{{{labels}}} {_num(s.value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
