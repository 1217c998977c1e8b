"""The ``serving`` gate's batching-invariance check: how it picks the examples it sends, and,
against the real bundled server, a model whose answers depend on the batch failing the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from server_helpers import save_batch_centring_model

from pytest_tfserving.gates.batching_invariance import (
    batch_rows,
    examples_from,
    wanted_examples,
)


def _ctr(n: int, start: int = 0) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    return {"user_id": ids, "dense": np.ones((n, 8), np.float32) * ids[:, None]}


def test_the_check_sends_at_least_four_examples() -> None:
    assert wanted_examples(1) == 4
    assert wanted_examples(4) == 4
    assert wanted_examples(16) == 16


def test_batch_rows_needs_one_shared_batch_dimension() -> None:
    assert batch_rows(_ctr(3)) == 3
    assert batch_rows({"a": np.zeros(2), "b": np.zeros((3, 1))}) is None
    assert batch_rows({"a": np.float32(1.0)}) is None


def test_examples_are_stacked_from_requests_of_the_same_shape_in_order() -> None:
    odd = {"user_id": np.zeros(5, np.int64), "dense": np.zeros((5, 4), np.float32)}
    examples, why = examples_from(_ctr(1), [_ctr(1), odd, _ctr(2, 10), _ctr(3, 20)], 4)
    assert why == "" and examples is not None
    assert examples["user_id"].tolist() == [0, 10, 11, 20]
    assert examples["dense"].shape == (4, 8)


def test_too_few_examples_or_a_scalar_input_say_why() -> None:
    examples, why = examples_from(_ctr(1), [_ctr(1)], 4)
    assert examples is None
    assert why.startswith("only 1 example(s) to send; the check needs at least 2. Fix: ")
    examples, why = examples_from({"x": np.float32(1.0)}, [{"x": np.float32(1.0)}], 4)
    assert examples is None and "scalar input (no batch dimension)" in why


@pytest.fixture(scope="module")
def centring_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_batch_centring_model(tmp_path_factory.mktemp("centre") / "centre")


def _serving_gate(pytester: pytest.Pytester, model: Path, *flags: str) -> dict[str, object]:
    report = pytester.path / "r.json"
    pytester.runpytest_subprocess(
        f"--tfs-model={model}", "--tfs-backend=bundled", "--tfs-gates=serving",
        f"--tfs-report={report}", "-p", "no:cacheprovider", *flags)
    (gate,) = json.loads(report.read_text())["gates"]
    assert isinstance(gate, dict)
    return gate


@pytest.mark.xdist_group("bundled-e2e")
def test_a_batch_dependent_model_fails_the_serving_gate(pytester: pytest.Pytester,
                                                       centring_model: Path) -> None:
    # a long batch timeout and one batch thread: the concurrent single-example requests are
    # coalesced (and padded to 4) for sure
    gate = _serving_gate(pytester, centring_model, "--tfs-max-batch-size=8",
                         "--tfs-batch-timeout-micros=200000", "--tfs-num-batch-threads=1",
                         "--tfs-allowed-batch-sizes=4,8")
    assert gate["passed"] is False
    message = str(gate["message"])
    assert message.startswith("serving_default: answers change under batching (playbook "
                              "defaults, command line --tfs-max-batch-size, "), message
    assert "--tfs-allowed-batch-sizes): example " in message
    assert ("output 'y' differs when coalesced into batches" in message
            or "output 'y' differs when sent in one request" in message), message
    assert "Fix: make each output row depend on its own example only" in message
    details = gate["details"]
    assert isinstance(details, dict)
    verdict = details["invariance"]["serving_default"]
    assert verdict["ok"] is False and verdict["examples"] == 4
    assert verdict["max_abs_diff"] > 0.01
    # the one request of 4 examples still matches the in-process call: only batching is wrong
    assert details["per_signature"]["serving_default"]["compared"] is True
    assert "differs from the in-process call" not in message


@pytest.mark.xdist_group("bundled-e2e")
def test_without_batching_the_check_is_skipped(pytester: pytest.Pytester,
                                               centring_model: Path) -> None:
    gate = _serving_gate(pytester, centring_model, "--tfs-batching=off")
    assert gate["passed"] is True, gate["message"]
    details = gate["details"]
    assert isinstance(details, dict)
    assert details["invariance"] == {"serving_default": {"skipped": "batching off"}}
