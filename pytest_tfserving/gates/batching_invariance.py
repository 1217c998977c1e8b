"""The ``serving`` gate's batching-invariance check (issue 14 item 5): a signature's examples
sent one by one, coalesced by the server's batcher and sent as one request must get the same
answers; the glue between the gate's requests and ``pytest_tfserving.batching_invariance``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from pytest_tfserving.client import TFServingClient

MIN_EXAMPLES = 4  # fewer rows than this rarely fill a batch the batcher pads
Inputs = Mapping[str, Any]
ArrayInputs = dict[str, "np.ndarray[Any, Any]"]


def wanted_examples(batch_size: int) -> int:
    """How many examples the check sends: the gate's request size, at least ``MIN_EXAMPLES``."""
    return max(batch_size, MIN_EXAMPLES)


def batch_rows(inputs: Inputs) -> int | None:
    """The batch dimension the inputs share (None: a scalar input, or dimensions that differ)."""
    import numpy as np

    sizes = {np.asarray(v).shape[0] if np.ndim(v) else None for v in inputs.values()}
    size = sizes.pop() if len(sizes) == 1 else None
    return None if size is None else int(size)


def _compatible(want: Inputs, other: Inputs) -> bool:
    """Same input names, dtypes and per-example shapes: rows of both can share a request."""
    import numpy as np

    if set(want) != set(other) or batch_rows(other) is None:
        return False
    for key, value in want.items():
        a, b = np.asarray(value), np.asarray(other[key])
        if a.dtype != b.dtype or a.shape[1:] != b.shape[1:]:
            return False
    return True


def examples_from(answered: Inputs, pool: Sequence[Inputs], rows: int) -> tuple[
        ArrayInputs | None, str]:
    """Up to ``rows`` examples stacked from the requests in ``pool`` shaped like the answered
    request (in order), or None and why there are fewer than two."""
    import numpy as np

    if batch_rows(answered) is None:
        return None, ("the request has a scalar input (no batch dimension), so it cannot be "
                      "split into single-example requests")
    parts = []
    have = 0
    for inputs in pool:
        if have >= rows:
            break
        if _compatible(answered, inputs):
            parts.append(inputs)
            have += batch_rows(inputs) or 0
    if min(have, rows) < 2:
        return None, (f"only {have} example(s) to send; the check needs at least 2. Fix: "
                      "raise --tfs-serving-batch-size, or add warmup records with more "
                      "examples")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts])[:rows] for k in answered}, ""


def check_signature(client: TFServingClient, name: str, examples: ArrayInputs, rtol: float,
                    atol: float, config: str) -> tuple[dict[str, Any], str, str]:
    """Run the check on one signature served with the batching ``config`` (where it came
    from): (the details entry, the failure text or "", a note when the check could not run)."""
    from pytest_tfserving.batching_invariance import check_invariance

    try:
        verdict = check_invariance(client, name, examples, rtol=rtol, atol=atol)
    except Exception as exc:  # noqa: BLE001 - e.g. single-example requests refused
        text = str(exc.details() if hasattr(exc, "details") else exc).strip()
        why = f"single-example requests failed: {text.splitlines()[0] if text else exc!r}"
        return {"skipped": why}, "", f"{name}: batching invariance not checked ({why})"
    if verdict.ok:
        return verdict.as_dict(), "", ""
    failure = (f"{name}: answers change under batching ({config}): {verdict.problem}. The "
               "model mixes the examples of a batch (e.g. a reduction over the batch axis, or "
               "batch normalization in training mode), so a client's answer depends on who "
               "else the batcher coalesced it with. Fix: make each output row depend on its "
               "own example only, or serve this model with batching off")
    return verdict.as_dict(), failure, ""
