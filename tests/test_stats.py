"""Pure parts of the load package: HDR stats and the p99 interval, perf_analyzer's stability
rule, TF Serving Prometheus evidence (read from the bundled server's own exporter), the max_qps
search, the hypothesis strategies, and the parent <-> worker protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.load import stability
from pytest_tfserving.load.server_metrics import evidence, parse
from pytest_tfserving.load.stats import (
    LatencyStats,
    WindowStats,
    combine,
    new_histogram,
    percentile_ci_ms,
)
from pytest_tfserving.model import Signature, TensorSpec
from pytest_tfserving.strategies import tfs_inputs


def stats_of(latencies_us: list[int], span_s: float = 1.0,
             errors: dict[str, int] | None = None) -> LatencyStats:
    hist = new_histogram()
    for value in latencies_us:
        hist.record_value(value)
    errors = errors or {}
    return LatencyStats(hist, span_s, len(latencies_us) + sum(errors.values()),
                        len(latencies_us), errors)


# --- stats ---------------------------------------------------------------------------------

def test_percentiles_rates_and_errors() -> None:
    s = stats_of(list(range(1000, 101_000, 100)), span_s=2.0, errors={"UNAVAILABLE": 10})
    assert s.count == 1000
    assert s.p50_ms == pytest.approx(50.9, rel=0.01)
    assert s.p99_ms == pytest.approx(99.9, rel=0.01)
    assert s.max_ms == pytest.approx(100.9, rel=0.01)
    assert s.qps == 500.0  # successful answers per second
    assert s.offered_qps == 505.0
    assert s.error_rate == pytest.approx(10 / 1010)
    assert s.as_dict()["errors"] == {"UNAVAILABLE": 10}


def test_p99_interval_brackets_the_p99_and_narrows_with_samples() -> None:
    rng = np.random.default_rng(1)
    small = stats_of([int(v) for v in rng.exponential(5000, 200) + 1])
    large = stats_of([int(v) for v in rng.exponential(5000, 20000) + 1])
    for s in (small, large):
        lo, hi = s.p99_ci_ms()
        assert lo <= s.p99_ms <= hi
    width_small = small.p99_ci_ms()[1] - small.p99_ci_ms()[0]
    width_large = large.p99_ci_ms()[1] - large.p99_ci_ms()[0]
    assert width_large < width_small
    assert percentile_ci_ms(new_histogram(), 99) == (0.0, 0.0)


def test_merging_windows_adds_counts_spans_and_errors() -> None:
    a = WindowStats(0, stats_of([1000] * 10, 1.0, {"UNAVAILABLE": 1}), new_histogram())
    b = WindowStats(1, stats_of([3000] * 10, 1.0, {"DEADLINE_EXCEEDED": 2}), new_histogram())
    merged = combine([a, b])
    assert merged.ok == 20 and merged.span_s == 2.0
    assert merged.errors == {"UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 2}
    assert merged.p99_ms == pytest.approx(3.0, rel=0.01)


def test_percentile_out_of_range_says_so() -> None:
    with pytest.raises(ValueError, match=r"percentile 120 is out of range"):
        stats_of([1]).percentile(120)


# --- stability -----------------------------------------------------------------------------

def test_three_consecutive_windows_within_tolerance_are_stable() -> None:
    v = stability.check([30, 10.0, 10.5, 10.2], [100, 100, 98, 101], tolerance_pct=10)
    assert v.stable and v.first == 1
    assert "agree within 5.0%" in v.reason


def test_spread_in_p99_or_throughput_is_unstable_and_names_which() -> None:
    p99 = stability.check([10, 12, 10], [100, 100, 100], tolerance_pct=10)
    assert not p99.stable and p99.reason.startswith("p99 of the last 3 windows spread 20.0%")
    qps = stability.check([10, 10, 10], [100, 80, 100], tolerance_pct=10)
    assert not qps.stable and qps.reason.startswith("throughput")


def test_too_few_or_non_consecutive_usable_windows_are_not_stable() -> None:
    assert "2 usable window(s), 3 needed" in stability.check([1, 1], [1, 1]).reason
    gap = stability.check([1, 1, 1, 1], [5, 5, 5, 5], usable=[True, True, False, True])
    assert not gap.stable and "not consecutive" in gap.reason
    with pytest.raises(ValueError, match=r"tolerance_pct=-1 must be >= 0"):
        stability.check([1, 1, 1], [1, 1, 1], tolerance_pct=-1)


# --- server evidence -----------------------------------------------------------------------

def test_batch_sizes_queue_delay_and_latency_from_tf_serving_metric_names() -> None:
    from pytest_tfserving.bundled_server.metrics import Metrics

    metrics = Metrics()
    metrics.record_request("ctr", "predict", "GRPC", "OK", 900.0)
    before = parse(metrics.render())
    for size, delays in ((8, [400.0] * 8), (3, [900.0] * 3), (1, [50.0])):
        metrics.record_batch(size, size, delays)
    for _ in range(12):
        metrics.record_request("ctr", "predict", "GRPC", "OK", 2000.0)
    metrics.record_request("ctr", "predict", "GRPC", "INVALID_ARGUMENT", 10.0)
    metrics.record_request("other_model", "predict", "GRPC", "OK", 5.0)
    ev = evidence(before, parse(metrics.render()), "ctr")
    assert ev.available and ev.batching_seen
    assert ev.requests == {"OK": 12, "INVALID_ARGUMENT": 1}  # deltas, this model only
    assert ev.batch_sizes is not None and ev.batch_sizes.count == 3
    assert ev.mean_batch_size == pytest.approx(4.0)
    assert ev.batch_sizes.buckets() == {"1": 1, "3-4": 1, "5-8": 1}
    assert ev.queuing is not None and ev.queuing.mean == pytest.approx(
        (8 * 400 + 3 * 900 + 50) / 12)
    assert ev.latency is not None and ev.latency.count == 12
    d = ev.as_dict()
    assert d["batches"] == 3 and d["mean_batch_size"] == 4.0
    assert "3 batches, mean size 4.0" in ev.summary()


def test_no_metrics_page_is_reported_not_invented() -> None:
    ev = evidence(parse(""), parse(""), "m")
    assert not ev.available
    assert "--monitoring_config_file" in ev.summary()


# --- max_qps ---------------------------------------------------------------------------------

def test_max_qps_search_brackets_the_knee() -> None:
    from pytest_tfserving.load.result import LoadResult
    from pytest_tfserving.load.search import max_qps
    from pytest_tfserving.load.server_metrics import ServerEvidence
    from pytest_tfserving.load.spec import LoadSpec

    knee = 1234.0
    rates: list[float] = []

    def measured(rate: float) -> LoadResult:
        # latency measured from a server model whose p99 crosses 20 ms at the knee; 3060
        # requests: enough for the confidence rules to decide (a 0.1 % error limit needs 2995
        # error-free requests at 95 %)
        rates.append(rate)
        p99_us = int(5000 if rate <= knee else 50_000)
        stats = stats_of([1000] * 3000 + [p99_us] * 60, span_s=3060 / rate)
        return LoadResult(LoadSpec(rate=rate), "t", stats, [], True, "", False, "",
                          ServerEvidence(False))

    found = max_qps(measured, p99_ms=20, lo=100, hi=10_000, precision=0.02)
    assert knee * 0.97 <= found.rate <= knee
    assert rates[:5] == [100, 200, 400, 800, 1600]  # doubling, then bisection
    assert found.headroom(800) == pytest.approx(found.rate / 800)
    assert all(t.passed == (t.rate <= knee) for t in found.trials)
    assert {t.verdict for t in found.trials} == {"PASS", "FAIL"}
    with pytest.raises(ConfigError, match=r"need 0 < lo < hi"):
        max_qps(measured, p99_ms=20, lo=10, hi=5)


# --- strategies ------------------------------------------------------------------------------

SIG = Signature("serving_default", "tensorflow/serving/predict", {
    "user_id": TensorSpec("user_id", "user_id:0", "DT_INT64", (None,)),
    "dense": TensorSpec("dense", "dense:0", "DT_FLOAT", (None, 8)),
    "seq": TensorSpec("seq", "seq:0", "DT_INT32", (None, None)),
}, {})


@settings(max_examples=25, deadline=None)
@given(inputs=tfs_inputs(SIG))
def test_tfs_inputs_match_the_signature(inputs: dict[str, np.ndarray]) -> None:
    assert set(inputs) == {"user_id", "dense", "seq"}
    batch = inputs["user_id"].shape[0]
    assert 1 <= batch <= 8
    assert inputs["dense"].shape == (batch, 8) and inputs["dense"].dtype == np.float32
    assert inputs["seq"].shape[0] == batch and inputs["seq"].dtype == np.int32
    assert (inputs["user_id"] >= 0).all() and inputs["user_id"].dtype == np.int64
    assert np.all(np.abs(inputs["dense"]) <= 1)


def test_tfs_inputs_rejects_unknown_overrides() -> None:
    with pytest.raises(ConfigError, match=r"unknown input\(s\) \['nope'\]"):
        tfs_inputs(SIG, overrides={"nope": None})  # type: ignore[dict-item]


def test_open_loop_stability_compares_answered_share_not_poisson_counts() -> None:
    from pytest_tfserving.load.result import stability_throughput
    from pytest_tfserving.load.spec import LoadSpec

    spec = LoadSpec(rate=300)
    # Poisson windows send 288 and 318 requests; all answered: the same throughput for the rule
    low = WindowStats(0, stats_of([1000] * 288, 1.0), new_histogram())
    high = WindowStats(1, stats_of([1000] * 318, 1.0), new_histogram())
    assert stability_throughput(low, spec) == stability_throughput(high, spec) == 300
    shed = WindowStats(2, stats_of([1000] * 150, 1.0, {"RESOURCE_EXHAUSTED": 150}),
                       new_histogram())
    assert stability_throughput(shed, spec) == 150
    closed = LoadSpec(mode="closed", concurrency=2)
    assert stability_throughput(low, closed) == 288


def test_count_over_counts_ok_requests_above_the_target_in_every_window() -> None:
    from pytest_tfserving.load.stats import count_over

    first = WindowStats(0, stats_of([1000] * 90 + [30_000] * 10), new_histogram())
    second = WindowStats(1, stats_of([5000] * 45 + [25_000] * 5, errors={"UNAVAILABLE": 7}),
                         new_histogram())
    assert count_over([first, second], 20.0) == (15, 150)  # errors are in neither count
    assert count_over([first, second], 30.0) == (0, 150)  # 30 ms itself is not over
    assert count_over([first, second], 29.9) == (10, 150)
    assert count_over([first, second], 0.5) == (150, 150)
    assert count_over([], 20.0) == (0, 0)


# --- the parent <-> worker protocol ----------------------------------------------------------

def test_worker_configs_split_the_spec_and_survive_the_pipe(tmp_path: Path) -> None:
    from pytest_tfserving.load.protocol import WorkerConfig
    from pytest_tfserving.load.spec import LoadSpec

    spec = LoadSpec(rate=300, mode="closed", concurrency=5, max_requests=7, duration_s=2,
                    window_s=1, stability_pct=0, seed=3, timeline=True)
    configs = [WorkerConfig.from_spec(spec, "h:1", tmp_path / "p.bin", i, 2, "/m") for i in
               range(2)]
    assert [c.concurrency for c in configs] == [3, 2]
    assert [c.max_requests for c in configs] == [4, 3]
    assert [c.rate for c in configs] == [150, 150]
    assert [c.max_windows for c in configs] == [2, 2]  # no stop rule: exactly the duration
    assert configs[1].timeline_file == str(tmp_path / "timeline1.bin")
    assert WorkerConfig.from_spec(spec, "h:1", tmp_path / "p.bin", 0, 1, "/m",
                                  stop_rule=True).max_windows == spec.max_windows
    assert [WorkerConfig.decode(c.encode()) for c in configs] == configs
    with pytest.raises(ValueError, match=r"unknown worker config field\(s\) \['nope'\]"):
        WorkerConfig.decode('{"target": "h:1", "payload_file": "p", "nope": 1}')


def test_reports_and_commands_round_trip_and_windows_merge() -> None:
    from pytest_tfserving.load import protocol as p

    hist = new_histogram()
    hist.record_value(2000)
    encoded = hist.encode().decode("ascii")
    reports = [p.WindowReport(index=0, hist=encoded, lag=encoded, service=encoded,
                              errors={"UNAVAILABLE": i}, sent=3, ok=1, span_s=1.0 - i / 10,
                              partial=bool(i)) for i in range(2)]
    for message in [*reports, p.Ready(4), p.Fatal("no"), p.Done({"X": "y"}, 5, 1)]:
        assert p.parse_report(p.encode(message)) == message
    for command in [p.Start(12.5), p.Stop(), p.Abort()]:
        assert p.parse_command(p.encode(command)) == command
    with pytest.raises(ValueError, match=r"unknown command kind 'ready'"):
        p.parse_command(p.encode(p.Ready(1)))
    window = p.merge_windows(0, reports)
    assert (window.stats.sent, window.stats.ok, window.stats.errors) == (6, 2, {"UNAVAILABLE": 1})
    assert window.stats.span_s == 1.0 and window.partial and window.stats.p50_ms == 2.0


def test_response_version_read_from_the_serialized_predict_response() -> None:
    from tensorflow_serving.apis import predict_pb2

    from pytest_tfserving.load.timeline import response_version

    response = predict_pb2.PredictResponse()
    response.outputs["y"].float_val.extend([1.0, 2.0])
    assert response_version(response.SerializeToString()) == -1  # no model_spec
    response.model_spec.name = "m"
    response.model_spec.version.value = 1234567890123
    assert response_version(response.SerializeToString()) == 1234567890123
    response.model_spec.version.value = 0
    assert response_version(response.SerializeToString()) == 0
    assert response_version(b"\xff\xff") == -1  # not a message
