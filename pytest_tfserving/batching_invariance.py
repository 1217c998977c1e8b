"""Batching invariance: the answers to the same examples sent one by one, coalesced by the
server's batcher (concurrent single-example requests, padded to ``allowed_batch_sizes``) and
sent as one multi-example request must agree within the serving tolerance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pytest_tfserving.client import TFServingClient

Inputs = Mapping[str, np.ndarray[Any, Any]]
Outputs = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class Invariance:
    """The verdict: ``problem`` names the first example and output that differ ("" when none)."""

    examples: int
    max_abs_diff: float
    problem: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "examples": self.examples,
                "max_abs_diff": float(f"{self.max_abs_diff:.6g}"), "problem": self.problem,
                **({"note": self.note} if self.note else {})}


def rows(examples: Inputs) -> list[dict[str, np.ndarray[Any, Any]]]:
    """One single-example request per row of ``examples``."""
    n = {int(v.shape[0]) for v in examples.values()}
    if len(n) != 1:
        raise ValueError(f"examples must share their batch dimension, got {sorted(n)}")
    return [{k: v[i:i + 1] for k, v in examples.items()} for i in range(n.pop())]


def _diff(want: Outputs, got: Outputs, index: int, how: str, rtol: float,
          atol: float) -> tuple[float, str]:
    worst, problem = 0.0, ""
    for key, ref in sorted(want.items()):
        if key not in got:
            return worst, f"example {index}: output {key!r} missing when {how}"
        value = got[key]
        if value.shape != ref.shape:
            return worst, (f"example {index}: output {key!r} has shape {value.shape} when {how}, "
                           f"{ref.shape} alone")
        if ref.dtype.kind in "fc":
            diff = float(np.max(np.abs(value.astype(np.float64) - ref))) if ref.size else 0.0
            worst = max(worst, diff)
            if not problem and not np.allclose(value, ref, rtol=rtol, atol=atol, equal_nan=True):
                problem = (f"example {index}: output {key!r} differs when {how} (max abs diff "
                           f"{diff:.3g} > atol {atol:g} + rtol {rtol:g}); alone "
                           f"{np.ravel(ref)[:4].tolist()}, {how} {np.ravel(value)[:4].tolist()}")
        elif not problem and not np.array_equal(value, ref):
            problem = (f"example {index}: output {key!r} differs when {how}: alone "
                       f"{np.ravel(ref)[:4].tolist()}, {how} {np.ravel(value)[:4].tolist()}")
    return worst, problem


def check_invariance(client: TFServingClient, signature_name: str, examples: Inputs, *,
                     rtol: float = 1e-4, atol: float = 1e-5, timeout: float = 30.0) -> Invariance:
    """Send each example alone (one after another), then all at once as concurrent
    single-example requests (the batcher coalesces and pads them), then as one request; every
    answer must match the example's answer alone."""
    from pytest_tfserving.tensors import to_numpy

    singles = rows(examples)
    alone = [client.predict(r, signature_name, timeout=timeout) for r in singles]
    futures = [client.prediction.Predict.future(client.predict_request(r, signature_name),
                                                timeout=timeout) for r in singles]
    coalesced = [{k: to_numpy(p) for k, p in f.result().outputs.items()} for f in futures]
    note = ""
    whole: list[Outputs] = []
    try:
        together = client.predict(examples, signature_name, timeout=timeout)
        whole = [{k: v[i:i + 1] for k, v in together.items()} for i in range(len(singles))]
    except Exception as exc:  # noqa: BLE001 - e.g. larger than max_batch_size: noted, not fatal
        note = f"one request of {len(singles)} examples was refused: {exc}"[:300]
    worst, problem = 0.0, ""
    for how, answers in (("coalesced into batches", coalesced), ("sent in one request", whole)):
        for i, (want, got) in enumerate(zip(alone, answers, strict=False)):
            diff, why = _diff(want, got, i, how, rtol, atol)
            worst = max(worst, diff)
            problem = problem or why
    return Invariance(len(singles), worst, problem, note)
