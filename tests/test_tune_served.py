"""The tuner against real bundled servers: batching invariance names the example a batched
config changes, and a tiny end-to-end search on ctr_direct stops every server it starts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from server_helpers import save_batch_centring_model

from pytest_tfserving.batching import BatchingParameters, parse_batching_text
from pytest_tfserving.batching_invariance import check_invariance
from pytest_tfserving.session import TFSSession
from pytest_tfserving.tune.output import details, table, write_recommended
from pytest_tfserving.tune.runner import TuneSettings, standalone_session, tune_session
from pytest_tfserving.tune.space import SearchSpace


def session_for(model: Path, batching: BatchingParameters | None = None) -> TFSSession:
    return standalone_session(model, "bundled", batching)


@pytest.fixture(scope="module")
def batch_mean_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x - mean(x over the batch): right alone, wrong once batched with others."""
    return save_batch_centring_model(tmp_path_factory.mktemp("centre") / "centre")


def test_invariance_disqualifies_a_batch_dependent_model(batch_mean_model: Path) -> None:
    session = session_for(batch_mean_model, BatchingParameters(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1,
        allowed_batch_sizes=(4, 8)))
    try:
        server = session.server()
        verdict = check_invariance(server.client(), "serving_default",
                                   {"x": np.arange(6, dtype=np.float32)})
    finally:
        session.stop_servers()
    assert not verdict.ok
    assert re.match(r"example \d: output 'y' differs when coalesced into batches",
                    verdict.problem), verdict.problem


def test_invariance_holds_for_ctr_direct_with_padding(ctr_direct: Path) -> None:
    from pytest_tfserving.predict_requests import synthesize_inputs

    session = session_for(ctr_direct, BatchingParameters(  # its warmup records hold 1..32
        max_batch_size=32, batch_timeout_micros=100_000, num_batch_threads=1,
        allowed_batch_sizes=(4, 32)))
    try:
        server = session.server()
        examples = synthesize_inputs(session.model().signature("serving_default"), 6, seed=1)
        verdict = check_invariance(server.client(), "serving_default", examples)
    finally:
        session.stop_servers()
    assert verdict.ok, verdict.problem
    assert verdict.examples == 6


def test_tiny_end_to_end_search_on_ctr_direct(ctr_direct: Path, tmp_path: Path) -> None:
    session = session_for(ctr_direct)
    space = SearchSpace(max_batch_size=(16, 32, 64), batch_timeout_micros=(0, 1000),
                        num_batch_threads=(0,), pow2_ladder=False, intra_op_threads=(0,),
                        inter_op_threads=(0,))
    settings = TuneSettings(p99_ms=50, sla_qps=50, budget_s=180, screen_s=0.5, confirm_s=1.0,
                            est_screen_cost_s=25, est_confirm_cost_s=30, leaders=1,
                            invariance_examples=4)
    lines: list[str] = []
    outcome = tune_session(session, settings, space=space, progress=lines.append)
    assert session.servers() == []
    pids = [t.result.details.get("server_pid") for t in outcome.tried]
    assert pids and all(isinstance(p, int) for p in pids)
    assert not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids if p)
    assert outcome.recommended is not None, "\n".join(table(outcome))
    assert outcome.recommended.stage == "confirm"
    assert outcome.spent_s <= settings.budget_s + 40  # a trial started within budget may overrun
    rec = outcome.recommended.result
    assert rec.qps > 0 and rec.cpu_s_per_1k is not None and rec.cpu_s_per_1k > 0
    assert outcome.current is not None and outcome.off is not None
    # the warmup records hold up to 32 examples: max_batch_size 16 could not even load
    assert all(t.candidate.batching is None or t.candidate.batching.max_batch_size >= 32
               for t in outcome.tried)
    path = tmp_path / "batching.txt"
    flags = write_recommended(outcome, path)
    assert flags.startswith("tensorflow_model_server")
    if outcome.recommended.candidate.batching is not None:
        assert parse_batching_text(path.read_text()) == outcome.recommended.candidate.batching
        assert rec.mean_batch_size is not None and rec.mean_batch_size >= 1
    info = details(outcome, path)
    assert {"configs", "recommended", "current", "off"} <= set(info)
    assert len(info["configs"]) == len(outcome.tried)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
