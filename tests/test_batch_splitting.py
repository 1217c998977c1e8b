"""Large-batch splitting in the bundled server: oversized tasks are cut to fit
``max_execution_batch_size``, pieces span batches, outputs come back whole and in order."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from server_helpers import ServerProcess, metric_samples, predict_request

from pytest_tfserving.batching import BatchingParameters, parse_batching_text
from pytest_tfserving.bundled_server.task_split import piece_sizes
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tensors import to_numpy

MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
PROCESSED = ":tensorflow:serving:batching_session:processed_batch_size"
SPLITTING = """max_batch_size { value: 64 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 8 }
"""
NO_SPLITTING = """max_batch_size { value: 8 }
batch_timeout_micros { value: 0 }
num_batch_threads { value: 1 }
"""


def start(model: Path, tmp: Path, batching: str) -> ServerProcess:
    (tmp / "monitoring.txt").write_text(MONITORING)
    (tmp / "batching.txt").write_text(batching)
    srv = ServerProcess(model, "--enable_batching",
                        f"--batching_parameters_file={tmp / 'batching.txt'}",
                        f"--monitoring_config_file={tmp / 'monitoring.txt'}",
                        model_name="digits")
    srv.wait_available()
    return srv


@pytest.fixture(scope="module")
def splitting(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start(digits, tmp_path_factory.mktemp("split"), SPLITTING) as srv:
        yield srv


def processed_buckets(srv: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{srv.rest_url}/monitoring/prometheus/metrics",
                                timeout=10) as r:
        return metric_samples(r.read().decode(), PROCESSED + "_bucket")


def pixels(n: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32) * 16


def test_oversized_task_is_split_and_reassembled_in_order(splitting: ServerProcess,
                                                          digits_fns: Any) -> None:
    rows = pixels(29, seed=3)  # 29 > 8: pieces 8+8+8+5 (or the open batch's room first)
    resp = splitting.stub().Predict(predict_request("digits", {"pixels": rows}), timeout=30)
    got = to_numpy(resp.outputs["probabilities"])
    want = digits_fns["serving_default"](pixels=rows)["probabilities"].numpy()
    assert got.shape == (29, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    buckets = processed_buckets(splitting)
    assert buckets['{le="8"}'] == buckets['{le="+Inf"}'] >= 4, \
        "every executed batch must hold at most max_execution_batch_size=8 examples"


def test_concurrent_tasks_share_batches_across_splits(splitting: ServerProcess,
                                                      digits_fns: Any) -> None:
    sizes = [5, 7, 3, 11, 6]
    rows = [pixels(n, seed=10 + i) for i, n in enumerate(sizes)]
    futures = [splitting.stub().Predict.future(predict_request("digits", {"pixels": r}),
                                               timeout=30) for r in rows]
    for r, f in zip(rows, futures, strict=True):
        got = to_numpy(f.result().outputs["probabilities"])
        want = digits_fns["serving_default"](pixels=r)["probabilities"].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    buckets = processed_buckets(splitting)
    assert buckets['{le="8"}'] == buckets['{le="+Inf"}']


def test_task_above_max_batch_size_is_rejected_even_with_splitting(
        splitting: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        splitting.stub().Predict(predict_request("digits", {"pixels": pixels(65, 1)}),
                                 timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 65 is larger than maximum input batch size 64" in str(info.value.details())


def test_without_splitting_an_oversized_task_is_rejected(digits: Path, tmp_path: Path) -> None:
    with start(digits, tmp_path, NO_SPLITTING) as srv:
        with pytest.raises(grpc.RpcError) as info:
            srv.stub().Predict(predict_request("digits", {"pixels": pixels(9, 1)}), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 9 is larger than maximum input batch size 8" in \
            str(info.value.details())


def test_piece_sizes_fill_the_open_batch_first() -> None:
    assert piece_sizes(5, room=8, limit=8) == [5]
    assert piece_sizes(29, room=8, limit=8) == [8, 8, 8, 5]
    assert piece_sizes(20, room=3, limit=8) == [3, 8, 8, 1]
    assert piece_sizes(16, room=0, limit=8) == [8, 8]


def test_splitting_fields_round_trip_through_the_text_format() -> None:
    params = parse_batching_text(SPLITTING)
    assert params.enable_large_batch_splitting and params.max_execution_batch_size == 8
    assert params.execution_batch_size == 8
    assert parse_batching_text(params.to_text()) == params
    assert "enable_large_batch_splitting { value: true }" in params.to_text()
    assert BatchingParameters(max_batch_size=16).execution_batch_size == 16


def test_execution_size_above_max_batch_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_execution_batch_size=32 is above max_batch_size"):
        BatchingParameters(max_batch_size=16, enable_large_batch_splitting=True,
                           max_execution_batch_size=32)
