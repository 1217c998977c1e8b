"""Request sources: warmup records, .npz files, and inputs synthesized from a signature."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import Signature, TensorSpec

Inputs = dict[str, np.ndarray[Any, Any]]


def predict_request(model_name: str, signature_name: str, inputs: Mapping[str, Any],
                    version: int | None = None, output_filter: tuple[str, ...] = ()) -> Any:
    """A PredictRequest proto for ``inputs`` (numeric arrays travel as tensor_content)."""
    from tensorflow_serving.apis import predict_pb2

    from pytest_tfserving.tensors import from_numpy

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        from_numpy(value, request.inputs[key])
    request.output_filter.extend(output_filter)
    return request


def synthesize_tensor(spec: TensorSpec, batch_size: int, rng: np.random.Generator,
                      free_dim: int = 1, unknown_rank_scalar: bool = False
                      ) -> np.ndarray[Any, Any]:
    """A plausible value for ``spec``: dim 0 unknown -> batch_size, other unknown dims ->
    ``free_dim``; unknown rank -> a vector of batch_size (a scalar with
    ``unknown_rank_scalar``: the other common guess for a placeholder without a shape)."""
    if spec.shape is None:
        shape: tuple[int, ...] = () if unknown_rank_scalar else (batch_size,)
    else:
        shape = tuple(
            (batch_size if i == 0 else free_dim) if d is None else d
            for i, d in enumerate(spec.shape)
        )
    dtype = spec.numpy_dtype
    if spec.is_string:
        out = np.empty(shape, dtype=object)
        out.fill(b"")
        return out
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        high = 100 if dtype in ("int8", "uint8") else 10_000
        return rng.integers(0, high, size=shape).astype(dtype)
    if dtype.startswith(("float", "complex")) or dtype == "bfloat16":
        return rng.random(size=shape).astype("float32" if dtype == "bfloat16" else dtype)
    raise ConfigError(f"Cannot synthesize input {spec.key!r} of dtype {spec.dtype}; provide "
                      "requests (warmup records or --tfs-requests=FILE.npz).")


def synthesize_inputs(signature: Signature, batch_size: int = 1, seed: int = 0,
                      unknown_rank_scalar: bool = False) -> Inputs:
    rng = np.random.default_rng(seed)
    return {key: synthesize_tensor(spec, batch_size, rng,
                                   unknown_rank_scalar=unknown_rank_scalar)
            for key, spec in signature.inputs.items()}


def read_npz(path: Path, what: str = ".npz",
             fix: str = "Save it with numpy.savez(path, <input>=array, ...)") -> Inputs:
    """Every array of a .npz file (object arrays refused); errors name the file and the fix."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise ConfigError(f"{what} file {str(path)!r} does not exist; pass an existing "
                          "file.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {what} {str(path)!r} as .npz ({exc}). {fix}; object "
                          "arrays are not allowed.") from None


def load_npz_inputs(path: Path, signature: Signature) -> Inputs:
    """Arrays named after the signature's inputs (extra arrays such as ``labels`` ignored)."""
    arrays = read_npz(path, "request data")
    missing = sorted(set(signature.inputs) - set(arrays))
    if missing:
        raise ConfigError(
            f"{path} lacks array(s) {missing} for signature {signature.name!r} (it has "
            f"{sorted(arrays)}). Name the arrays after the signature's inputs: "
            f"{', '.join(s.describe() for s in signature.inputs.values())}."
        )
    return {k: arrays[k] for k in signature.inputs}


def warmup_inputs(model_version_dir: Path, signature_name: str,
                  limit: int = 1000) -> list[Inputs]:
    """Inputs of the PredictRequests in the warmup file that target ``signature_name``."""
    from pytest_tfserving.model import WARMUP_RELATIVE_PATH
    from pytest_tfserving.tensors import to_numpy
    from pytest_tfserving.tfrecord import read_records

    path = model_version_dir / WARMUP_RELATIVE_PATH
    if not path.is_file():
        return []
    from tensorflow_serving.apis import prediction_log_pb2

    found: list[Inputs] = []
    for raw in read_records(path, limit=limit):
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        if (request.model_spec.signature_name or "serving_default") != signature_name:
            continue
        found.append({k: to_numpy(v) for k, v in request.inputs.items()})
    return found
