"""Serialized PredictRequests for the load generator, from every request source.

Sources, in the order the SLA gate prefers them: a user's ``tfs_requests`` fixture, an ``.npz``
file (``--tfs-sla-requests``), the model's warmup records (what the team says real traffic looks
like), and inputs synthesized from the signature. Requests are serialized once here; the workers
only send bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import ModelInfo, Signature

Inputs = Mapping[str, Any]
MAX_REQUESTS = 256  # distinct requests sent round robin


def predict_bytes(model_name: str, signature_name: str, inputs: Inputs,
                  version: int | None = None) -> bytes:
    from pytest_tfserving.predict_requests import predict_request

    return bytes(predict_request(model_name, signature_name, inputs, version).SerializeToString())


def retarget(raw: bytes, model_name: str, signature_name: str | None = None) -> bytes:
    """A serialized PredictRequest aimed at ``model_name`` (warmup records may name another)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(raw)
    request.model_spec.name = model_name
    if signature_name is not None:
        request.model_spec.signature_name = signature_name
    request.model_spec.ClearField("version")
    return bytes(request.SerializeToString())


def _batch_of(inputs: Inputs) -> int | None:
    sizes = {np.asarray(v).shape[0] for v in inputs.values() if np.asarray(v).ndim >= 1}
    return sizes.pop() if len(sizes) == 1 else None


def rebatch(inputs_list: Iterable[Inputs], batch_size: int) -> list[dict[str, Any]]:
    """Cut requests into requests of exactly ``batch_size`` rows (dim 0), dropping remainders."""
    out: list[dict[str, Any]] = []
    for inputs in inputs_list:
        n = _batch_of(inputs)
        if n is None:
            continue
        for start in range(0, n - batch_size + 1, batch_size):
            out.append({k: np.asarray(v)[start:start + batch_size] for k, v in inputs.items()})
            if len(out) >= MAX_REQUESTS:
                return out
    return out


def from_inputs(model_name: str, signature_name: str, inputs_list: Sequence[Any],
                batch_size: int | None = None) -> list[bytes]:
    """Requests from dicts of arrays, PredictRequest protos or already serialized bytes."""
    out: list[bytes] = []
    dicts: list[Inputs] = []
    for item in inputs_list:
        if isinstance(item, bytes):
            out.append(retarget(item, model_name, signature_name))
        elif hasattr(item, "SerializeToString"):
            out.append(retarget(item.SerializeToString(), model_name, signature_name))
        elif isinstance(item, Mapping):
            dicts.append(item)
        else:
            raise ConfigError(
                f"tfs_requests item of type {type(item).__name__} is not a request: give dicts "
                "of arrays ({input_name: array}), PredictRequest protos or serialized bytes.")
    if batch_size is not None and dicts:
        dicts = list(rebatch(dicts, batch_size)) or dicts
    out += [predict_bytes(model_name, signature_name, d) for d in dicts[:MAX_REQUESTS]]
    return out


def from_npz(path: Path, model_name: str, signature: Signature, batch_size: int) -> list[bytes]:
    from pytest_tfserving.predict_requests import load_npz_inputs

    arrays = load_npz_inputs(path, signature)
    requests = rebatch([arrays], batch_size)
    if not requests:
        raise ConfigError(f"{path} holds fewer rows than one request of batch_size {batch_size}; "
                          "lower the batch size or add rows.")
    return [predict_bytes(model_name, signature.name, r) for r in requests]


def from_warmup(model: ModelInfo, model_name: str, signature: Signature,
                batch_size: int | None) -> list[bytes]:
    """The warmup file's PredictRequests for ``signature`` (re-cut to ``batch_size`` if given)."""
    from pytest_tfserving.predict_requests import warmup_inputs

    records = warmup_inputs(model.version_dir, signature.name, limit=MAX_REQUESTS)
    if not records:
        return []
    if batch_size is not None:
        records = [dict(r) for r in rebatch(records, batch_size)]
    return [predict_bytes(model_name, signature.name, r) for r in records[:MAX_REQUESTS]]


def synthesized(model: ModelInfo, model_name: str, signature: Signature, batch_size: int,
                count: int = 32) -> list[bytes]:
    """Requests synthesized from the signature (tf.Example built from the graph's parse spec
    for a single serialized-example input)."""
    from pytest_tfserving.predict_requests import synthesize_inputs

    if any(spec.is_string for spec in signature.inputs.values()):
        from pytest_tfserving.examples import make_examples, parse_specs

        features = parse_specs(model)
        if len(signature.inputs) != 1 or not features:
            raise ConfigError(
                f"Cannot synthesize requests for signature {signature.name!r} of "
                f"{model.version_dir}: it has a string input that is not a serialized "
                "tf.Example parsed in the graph. Add a warmup file, pass --tfs-sla-requests="
                "FILE.npz or define a tfs_requests fixture.")
        key = next(iter(signature.inputs))
        out = []
        for seed in range(count):
            records = make_examples(features, batch_size, seed=seed)
            arr = np.empty(len(records), dtype=object)
            arr[:] = records
            out.append(predict_bytes(model_name, signature.name, {key: arr}))
        return out
    return [predict_bytes(model_name, signature.name,
                          synthesize_inputs(signature, batch_size=batch_size, seed=seed))
            for seed in range(count)]


def for_model(model: ModelInfo, model_name: str, signature_name: str, *,
              batch_size: int | None = None, npz: Path | None = None,
              user_requests: Sequence[Any] | None = None) -> tuple[list[bytes], str]:
    """Requests for a load run and a description of where they came from."""
    signature = model.signature(signature_name)
    if user_requests is not None:
        payloads = from_inputs(model_name, signature_name, list(user_requests), batch_size)
        if not payloads:
            raise ConfigError("The tfs_requests fixture returned no requests; return a "
                              "non-empty list of {input_name: array} dicts.")
        return payloads, f"tfs_requests fixture ({len(payloads)} requests)"
    if npz is not None:
        payloads = from_npz(npz, model_name, signature, batch_size or 1)
        return payloads, f"{npz} ({len(payloads)} requests of batch {batch_size or 1})"
    payloads = from_warmup(model, model_name, signature, batch_size)
    if payloads:
        what = f"batch {batch_size}" if batch_size else "their own batch sizes"
        return payloads, f"warmup records ({len(payloads)} requests, {what})"
    payloads = synthesized(model, model_name, signature, batch_size or 1)
    unknown = [k for k, spec in signature.inputs.items() if spec.shape is None]
    guess = (f"; input(s) {', '.join(repr(k) for k in unknown)} of unknown rank sent as "
             f"[{batch_size or 1}] vectors" if unknown else "")
    return payloads, f"synthesized from the signature ({len(payloads)} requests of batch " \
                     f"{batch_size or 1}{guess})"
