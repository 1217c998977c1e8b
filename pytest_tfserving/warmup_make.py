"""Making a warmup file for a model: which signatures to warm (the plan), and records from real
inputs (an .npz) or synthesized ones, written as TF Serving replays them.

TensorFlow (through the ``tensorflow_serving.apis`` protos) is imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import CLASSIFY_METHOD, ModelInfo, Signature, TensorSpec
from pytest_tfserving.warmup_contract import MAX_RECORDS

if TYPE_CHECKING:
    from pytest_tfserving.servability import SignatureTraits

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # the playbook's max_batch_size is 32
DEFAULT_SYNTHETIC_RECORDS = 10

Inputs = dict[str, np.ndarray[Any, Any]]


def make_command(model: ModelInfo, signatures: Sequence[str] = ()) -> str:
    """The CLI command that writes a warmup file for ``model`` (quoted into fix messages)."""
    named = f" --signatures {','.join(signatures)}" if signatures else ""
    return f"python -m pytest_tfserving warmup make --model {model.version_dir} --synthetic " \
           f"{DEFAULT_SYNTHETIC_RECORDS}{named}"



def make_warmup_file(model: ModelInfo, out_path: Path | str | None = None, *,
                     from_npz: Path | str | None = None, synthetic: int | None = None,
                     records: int | None = None, seed: int = 0,
                     batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                     signatures: Sequence[str] = (), overwrite: bool = False) -> int:
    """Write a warmup file for ``model`` and return its record count.

    Per signature (default: every served one) ``synthetic`` records of synthesized inputs, or
    ``records`` (default 10) records cut from the arrays of ``from_npz`` (named after the
    signature's inputs, or after the tf.Example features its parse op reads). Batch sizes
    cycle through ``batch_sizes``. Classify and regress signatures that parse tf.Example (one
    input, a string tensor in the graph) get classify_log / regress_log records of tf.Examples,
    as the Classify/Regress APIs call them; every other signature, whatever its method name
    (a TF2 export names every signature predict; a TF1 regress signature may take floats), gets
    predict_log records. See :func:`warmup_plan` for the signatures left out by default.
    """
    out = Path(out_path) if out_path is not None else model.warmup_file
    if (from_npz is None) == (synthetic is None):
        raise ConfigError("Give exactly one source of warmup inputs: from_npz=FILE (real "
                          f"inputs) or synthetic=N (got from_npz={from_npz!r}, "
                          f"synthetic={synthetic!r}).")
    per_signature = synthetic if synthetic is not None else (records or DEFAULT_SYNTHETIC_RECORDS)
    names, _notes, traits = _plan(model, signatures)
    _check_counts(per_signature, len(names), batch_sizes)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=True (CLI: --force) to replace it, or "
                          "--out another path.")
    arrays = _load_npz(Path(from_npz)) if from_npz is not None else None
    rng = np.random.default_rng(seed)
    logs: list[bytes] = []
    for name in names:
        signature = model.signature(name)
        for i in range(per_signature):
            batch = batch_sizes[i % len(batch_sizes)]
            rows = _rows(arrays, i * batch, batch) if arrays is not None else None
            logs.append(_record(model, signature, batch, rows, rng,
                                examples_api=traits[name].takes_examples))
    from pytest_tfserving.tfrecord import write_records

    tmp = out.with_name(out.name + ".tmp")
    count = write_records(tmp, logs)
    tmp.replace(out)
    return count


def warmup_plan(model: ModelInfo, signatures: Sequence[str] = (), *,
                batching: bool = True) -> tuple[list[str], list[str]]:
    """The signatures to warm and notes on the ones left out or at risk.

    Default (no ``signatures``): every served signature except those that write variables
    (replaying them at each load changes the served state), those TF Serving's batching
    session rejects (no input, or a scalar input: their records fail the model load under
    ``--enable_batching``; kept when ``batching`` is False) and those whose declared input
    dtype is not the graph's (a record cannot fit both). Named ``signatures`` are warmed as
    asked, with a note on a risk; one that writes variables is refused. Raises ConfigError
    when nothing can be warmed.
    """
    names, notes, _traits = _plan(model, signatures, batching)
    return names, notes


def _plan(model: ModelInfo, signatures: Sequence[str], batching: bool = True
          ) -> tuple[list[str], list[str], dict[str, SignatureTraits]]:
    from pytest_tfserving.servability import model_traits

    if not signatures and not model.served_signatures():
        raise ConfigError(f"{model.version_dir} has no predict/classify/regress signature to "
                          "warm; export one with tf.saved_model.save(..., signatures=...).")
    for name in signatures:
        model.signature(name)  # a clear error for an unknown name
    traits = model_traits(model, names=list(signatures) or None)
    chosen: list[str] = []
    notes: list[str] = []
    for name, t in traits.items():
        risk = _risk(t, batching)
        state = t.state_problem()
        if state and signatures:
            raise ConfigError(
                f"Refusing to warm {name!r}: {state}, and TF Serving replays every warmup "
                "record at each load, so each release would start from a changed state. "
                "Warm read-only signatures only.")
        if state:
            notes.append(f"left out {name!r}: {state}, and warmup would replay it at every "
                         "load")
        elif risk and signatures:
            notes.append(f"{name!r} is warmed as asked, but {risk}")
            chosen.append(name)
        elif risk and t.batching_problem():
            notes.append(f"left out {name!r}: {risk}; if production serves without batching, "
                         f"warm it by name: --signatures {name}")
        elif risk:
            notes.append(f"left out {name!r}: {risk}")
        else:
            unknown = [k for k in t.unknown_rank_inputs if k not in t.string_fed]
            if unknown and not t.takes_examples:
                names = ", ".join(repr(k) for k in unknown)
                notes.append(f"{name!r}: input(s) {names} have no shape in the SignatureDef; "
                             "the records send them as [batch] vectors, which is a guess. Use "
                             "--from-npz with real inputs if the model wants another shape")
            chosen.append(name)
    if not chosen:
        raise ConfigError(
            f"No signature of {model.version_dir} can be warmed safely: "
            + "; ".join(notes) + ". TF Serving loads the model without warmup; make records "
            "yourself (pytest_tfserving.warmup_file.write_prediction_logs) if one is still wanted.")
    return chosen, notes, traits


def _risk(traits: SignatureTraits, batching: bool) -> str | None:
    """Why a warmup record for this signature could fail the model load, or None."""
    no_batch = traits.batching_problem()
    if no_batch and batching:
        return f"{no_batch}, so with --enable_batching its records fail the model load"
    if traits.dtype_problems:
        return (f"{'; '.join(traits.dtype_problems)}, so no record fits both the declaration "
                "and the graph (fix the SignatureDef)")
    return None


def _check_counts(per_signature: int, signatures: int, batch_sizes: Sequence[int]) -> None:
    if per_signature < 1:
        raise ConfigError(f"Record count {per_signature} must be >= 1.")
    if per_signature * signatures > MAX_RECORDS:
        raise ConfigError(
            f"{per_signature} records x {signatures} signature(s) = "
            f"{per_signature * signatures} exceeds TF Serving's limit of {MAX_RECORDS} warmup "
            "records. Ask for fewer records."
        )
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ConfigError(f"Batch sizes {list(batch_sizes)} must be integers >= 1, e.g. 1,8,32.")


def _load_npz(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    from pytest_tfserving.predict_requests import read_npz

    arrays = read_npz(path, "warmup source")
    empty = [k for k, a in arrays.items() if a.ndim == 0 or len(a) == 0]
    if empty or not arrays:
        raise ConfigError(f"{path} has no rows to cut requests from (empty or scalar arrays: "
                          f"{empty or 'no arrays'}). Store one row per example along axis 0.")
    return arrays


def _rows(arrays: Mapping[str, np.ndarray[Any, Any]], start: int,
          count: int) -> dict[str, np.ndarray[Any, Any]]:
    """``count`` rows from ``start``, wrapping around the shortest array."""
    n = min(len(a) for a in arrays.values())
    index = (np.arange(start, start + count) % n)
    return {k: a[index] for k, a in arrays.items()}


def _record(model: ModelInfo, signature: Signature, batch: int,
            rows: dict[str, np.ndarray[Any, Any]] | None, rng: np.random.Generator,
            examples_api: bool) -> bytes:
    from tensorflow_serving.apis import (
        classification_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    log = prediction_log_pb2.PredictionLog()
    if examples_api:
        examples = _examples(model, signature, batch, rows, rng)
        cls = (classification_pb2.ClassificationRequest if signature.method_name ==
               CLASSIFY_METHOD else regression_pb2.RegressionRequest)
        request = cls()
        request.model_spec.name = model.name
        request.model_spec.signature_name = signature.name
        for raw in examples:
            request.input.example_list.examples.add().ParseFromString(raw)
        target = (log.classify_log if signature.method_name == CLASSIFY_METHOD
                  else log.regress_log)
        target.request.CopyFrom(request)
        return bytes(log.SerializeToString(deterministic=True))
    from pytest_tfserving.predict_requests import predict_request

    inputs = _predict_inputs(model, signature, batch, rows, rng)
    log.predict_log.request.CopyFrom(predict_request(model.name, signature.name, inputs))
    return bytes(log.SerializeToString(deterministic=True))


def _predict_inputs(model: ModelInfo, signature: Signature, batch: int,
                    rows: dict[str, np.ndarray[Any, Any]] | None,
                    rng: np.random.Generator) -> Inputs:
    from pytest_tfserving.predict_requests import synthesize_tensor

    if rows is not None and set(signature.inputs) <= set(rows):
        return {k: _fit(rows[k], spec) for k, spec in signature.inputs.items()}
    string_inputs = [k for k, s in signature.inputs.items() if s.is_string]
    if len(signature.inputs) == 1 and string_inputs:  # serialized tf.Example
        key = string_inputs[0]
        arr = np.empty(batch, dtype=object)
        arr[:] = _examples(model, signature, batch, rows, rng)
        spec = signature.inputs[key]
        return {key: arr[:1].reshape(()) if spec.shape == () else arr}
    if rows is not None:
        raise ConfigError(
            f"The .npz lacks array(s) {sorted(set(signature.inputs) - set(rows))} for signature "
            f"{signature.name!r} (it has {sorted(rows)}). Name the arrays after its inputs: "
            f"{', '.join(s.describe() for s in signature.inputs.values())}, or pass "
            "signatures=[...] (CLI: --signatures) to warm only the ones it can feed."
        )
    if string_inputs:
        raise ConfigError(
            f"Cannot synthesize string input(s) {string_inputs} of signature "
            f"{signature.name!r}: synthetic strings would not look like real traffic. Give "
            "real inputs with from_npz (CLI: --from-npz FILE)."
        )
    return {k: synthesize_tensor(spec, batch, rng) for k, spec in signature.inputs.items()}


def _fit(values: np.ndarray[Any, Any], spec: TensorSpec) -> np.ndarray[Any, Any]:
    if spec.is_string:
        return values
    try:
        return values.astype(spec.numpy_dtype, casting="same_kind")
    except TypeError as exc:
        raise ConfigError(f"The .npz array {spec.key!r} has dtype {values.dtype}, which cannot "
                          f"become {spec.dtype} ({exc}). Store it as {spec.numpy_dtype}.") from None


def _examples(model: ModelInfo, signature: Signature, batch: int,
              rows: dict[str, np.ndarray[Any, Any]] | None,
              rng: np.random.Generator) -> list[bytes]:
    """Serialized tf.Examples for a signature that parses them: features from the graph's
    parse op, values from ``rows`` (arrays named after the features) or synthesized."""
    from pytest_tfserving.examples import make_examples, parse_specs

    features = parse_specs(model)
    if not features:
        raise ConfigError(
            f"Signature {signature.name!r} takes serialized tf.Example but no ParseExample op "
            "was found to say which features; write its warmup records yourself (see "
            "pytest_tfserving.warmup_file.write_prediction_logs)."
        )
    if rows is None:
        return make_examples(features, batch, seed=int(rng.integers(0, 2**31)))
    missing = [f.key for f in features if f.key not in rows]
    if missing:
        raise ConfigError(
            f"The .npz lacks feature array(s) {missing} to build tf.Examples for signature "
            f"{signature.name!r} (it has {sorted(rows)}). Name arrays after the parsed features: "
            f"{', '.join(f.key for f in features)}."
        )
    from tensorflow.core.example import example_pb2

    out: list[bytes] = []
    for i in range(batch):
        example = example_pb2.Example()
        for spec in features:
            values = np.asarray(rows[spec.key][i]).reshape(-1)
            feature = example.features.feature[spec.key]
            if spec.dtype == "DT_INT64":
                feature.int64_list.value.extend(int(v) for v in values)
            elif spec.dtype == "DT_FLOAT":
                feature.float_list.value.extend(float(v) for v in values)
            else:
                feature.bytes_list.value.extend(
                    v if isinstance(v, bytes) else str(v).encode() for v in values)
        out.append(example.SerializeToString())
    return out

