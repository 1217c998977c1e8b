"""Validating a warmup file against its model: everything TF Serving would reject or silently
skip when it replays the file at load, and records that would change the served state.

TensorFlow (through the ``tensorflow_serving.apis`` protos) is imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    ModelInfo,
    Signature,
    TensorSpec,
)
from pytest_tfserving.warmup_contract import MAX_RECORDS
from pytest_tfserving.warmup_file import (
    SUPPORTED_KINDS,
    example_count,
    read_prediction_logs,
    record_signatures,
    tensor_text,
)
from pytest_tfserving.warmup_make import make_command

if TYPE_CHECKING:
    from pytest_tfserving.servability import SignatureTraits

_KIND_METHOD = {"classify_log": CLASSIFY_METHOD, "regress_log": REGRESS_METHOD}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a warmup file, and the 0-based records it applies to (none: the
    whole file). The same problem in many records is reported once."""

    message: str
    records: tuple[int, ...] = ()

    def __str__(self) -> str:
        if not self.records:
            return self.message
        if len(self.records) == 1:
            return f"record {self.records[0]}: {self.message}"
        shown = ", ".join(str(r) for r in self.records[:5])
        more = f", ... ({len(self.records)} records)" if len(self.records) > 5 else ""
        return f"records {shown}{more}: {self.message}"


def missing_file_problem(model: ModelInfo, signatures: Sequence[str] = (),
                         path: Path | None = None) -> str:
    """What to say when the model has no warmup file (at ``path``, default its own), with the
    command that makes one."""
    return (f"no warmup file at {path or model.warmup_file}: TF Serving starts this model cold "
            "and the first requests after every release pay for it. Make one: "
            f"`{make_command(model, signatures)}` (or --from-npz FILE with real inputs).")


def validate_warmup_file(model: ModelInfo, path: Path | str | None = None, *,
                         batching: bool = False) -> list[Problem]:
    """Everything TF Serving would reject or silently skip in ``path`` (default: the model's
    own ``assets.extra/tf_serving_warmup_requests``), and records that change the served state
    at every load. With ``batching`` (the server runs with ``--enable_batching``), also the
    predict records its batching session rejects, which fail the model load. Empty list: the
    file is good."""
    path = Path(path) if path is not None else model.warmup_file
    if not path.is_file():
        return [Problem(missing_file_problem(model, path=path))]
    by_message: dict[str, list[int]] = {}
    problems: list[Problem] = []
    count = 0
    state = _StateCheck(model)
    try:
        for index, log in read_prediction_logs(path):
            count += 1
            messages = _check_record(model, log)
            if not messages:
                messages = state.problems(log) + (_batching_problems(log) if batching else [])
            for message in messages:
                by_message.setdefault(message, []).append(index)
    except ConfigError as exc:
        problems.append(Problem(
            f"{exc} TF Serving fails to load the model when its warmup file is malformed."
        ))
    problems[:0] = [Problem(m, tuple(r)) for m, r in by_message.items()]
    if count == 0 and not problems:
        problems.append(Problem(f"{path} holds no records, so nothing is warmed. "
                                f"Regenerate it: `{make_command(model)}`."))
    if count > MAX_RECORDS:
        problems.append(Problem(
            f"{path} holds {count} records; TF Serving allows at most {MAX_RECORDS} and fails the "
            f"model load beyond that. Keep <= {MAX_RECORDS} (e.g. one record per batch size per "
            "signature)."
        ))
    return problems


def _check_record(model: ModelInfo, log: Any) -> list[str]:
    kind = log.WhichOneof("log_type")
    if kind is None:
        return ["empty PredictionLog (no predict_log/classify_log/regress_log/"
                "multi_inference_log set): TF Serving skips it and warms nothing. Is this file "
                "a warmup file of PredictionLog records?"]
    if kind not in SUPPORTED_KINDS:
        return [f"log type {kind!r} is not supported for warmup (TF Serving fails the model "
                f"load with Unimplemented). Use one of {', '.join(SUPPORTED_KINDS)}."]
    if kind == "predict_log":
        request = log.predict_log.request
        return _check_predict(model, request.model_spec.signature_name, request.inputs)
    if kind in _KIND_METHOD:
        request = getattr(log, kind).request
        return _check_examples(model, request.model_spec.signature_name, _KIND_METHOD[kind],
                               request.input)
    problems: list[str] = []
    request = log.multi_inference_log.request
    if not request.tasks:
        problems.append("multi_inference_log has no tasks")
    for task in request.tasks:
        problems += _check_examples(model, task.model_spec.signature_name, task.method_name,
                                    request.input)
    return problems


class _StateCheck:
    """Records that call a signature which writes variables, and Classify/Regress records for
    a signature that does not take tf.Example (graph analysed on first need)."""

    def __init__(self, model: ModelInfo) -> None:
        self.model = model
        self._traits: dict[str, SignatureTraits] = {}
        self._graph: Any = None

    def traits(self, name: str) -> SignatureTraits:
        if name not in self._traits:
            from pytest_tfserving.servability import signature_traits

            if self._graph is None:
                from pytest_tfserving.graph import SavedModelGraph

                self._graph = SavedModelGraph.load(self.model.version_dir)
            self._traits[name] = signature_traits(self.model.signature(name), self._graph)
        return self._traits[name]

    def problems(self, log: Any) -> list[str]:
        out = []
        kind = log.WhichOneof("log_type")
        for name in record_signatures(log):
            traits = self.traits(name)
            if kind in _KIND_METHOD and not traits.takes_examples:
                inputs = ", ".join(s.describe() for s in
                                   self.model.signature(name).inputs.values()) or "no input"
                out.append(f"a {kind} record sends serialized tf.Examples, but signature "
                           f"{name!r} takes {inputs}, not one string tensor of tf.Example: "
                           "TF Serving feeds the examples to it and fails the model load. "
                           "Use a predict_log record for this signature.")
            problem = traits.state_problem()
            if problem:
                out.append(f"{problem}, and TF Serving replays every warmup record at each "
                           "load (--num_request_iterations_for_warmup times), so each release "
                           "starts from a changed state. Warm read-only signatures only: "
                           f"`{make_command(self.model)} --force` leaves this one out.")
        return out


def _batching_problems(log: Any) -> list[str]:
    """Why TF Serving's batching session rejects this predict record (failing the load)."""
    if log.WhichOneof("log_type") != "predict_log":
        return []
    request = log.predict_log.request
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    fix = ("Leave the signature out of the warmup file, or give its inputs a batch dimension "
           "and re-export.")
    if not request.inputs:
        return [f"the predict request for signature {name!r} has no input, and with "
                "--enable_batching TF Serving's batching session rejects it ('Batching Run() "
                f"must have at least one input tensor'), which fails the model load. {fix}"]
    scalars = sorted(k for k, v in request.inputs.items() if not v.tensor_shape.dim)
    if scalars:
        return [f"the predict request for signature {name!r} has scalar input(s) "
                f"{', '.join(repr(k) for k in scalars)}, and with --enable_batching TF "
                "Serving's batching session rejects it ('Batching Run() input tensors must "
                f"have at least one dimension'), which fails the model load. {fix}"]
    return []


def _signature(model: ModelInfo, name: str) -> tuple[Signature | None, str]:
    name = name or DEFAULT_SIGNATURE
    signature = model.signatures.get(name)
    if signature is None:
        known = ", ".join(sorted(model.signatures)) or "(none)"
        return None, (f"signature {name!r} does not exist in {model.version_dir} (it has: "
                      f"{known}); TF Serving fails the model load. Regenerate the warmup file "
                      "for this export.")
    return signature, ""


def _check_predict(model: ModelInfo, signature_name: str, inputs: Mapping[str, Any]) -> list[str]:
    signature, error = _signature(model, signature_name)
    if signature is None:
        return [error]
    problems: list[str] = []
    expected = ", ".join(s.describe() for s in signature.inputs.values())
    unknown = sorted(set(inputs) - set(signature.inputs))
    missing = sorted(set(signature.inputs) - set(inputs))
    for key in unknown:
        problems.append(f"input {key!r} is not an input of signature {signature.name!r}; it "
                        f"takes {expected}. Rename it or regenerate the warmup file.")
    for key in missing:
        problems.append(f"input {signature.inputs[key].describe()} of signature "
                        f"{signature.name!r} is missing from the request; TF Serving rejects "
                        "requests without every input.")
    for key in sorted(set(inputs) & set(signature.inputs)):
        problems += _check_tensor(signature, signature.inputs[key], inputs[key])
    return problems


def _check_tensor(signature: Signature, spec: TensorSpec, proto: Any) -> list[str]:
    from pytest_tfserving.tensors import TensorConversionError, dtype_name, to_numpy

    got = dtype_name(proto.dtype)
    where = f"input {spec.key!r} of signature {signature.name!r}"
    if got != spec.dtype:
        return [f"{where} has dtype {got} in the warmup record but the signature wants "
                f"{spec.dtype}. Cast the values to {spec.numpy_dtype} and regenerate."]
    text, shape = tensor_text(proto)
    if spec.shape is not None:
        want = "[" + ",".join("-1" if d is None else str(d) for d in spec.shape) + "]"
        if len(shape) != len(spec.shape):
            return [f"{where} has shape {list(shape)} (rank {len(shape)}) but the signature "
                    f"wants {want} (rank {len(spec.shape)}). Reshape the values and regenerate."]
        bad = [i for i, (d, w) in enumerate(zip(shape, spec.shape, strict=True))
               if w is not None and d != w]
        if bad:
            return [f"{where} has shape {list(shape)} but the signature wants {want} (dim "
                    f"{bad[0]} must be {spec.shape[bad[0]]}). Reshape the values and "
                    "regenerate."]
    try:
        to_numpy(proto)
    except TensorConversionError as exc:
        return [f"{where} ({text}) cannot be decoded: {exc}. Rebuild the TensorProto with "
                "tf.make_tensor_proto or pytest_tfserving.tensors.from_numpy."]
    return []


def _check_examples(model: ModelInfo, signature_name: str, method: str,
                    model_input: Any) -> list[str]:
    signature, error = _signature(model, signature_name)
    if signature is None:
        return [error]
    problems: list[str] = []
    if signature.method_name != method:
        problems.append(f"signature {signature.name!r} has method {signature.method_name!r} but "
                        f"the record is a {method.rsplit('/', 1)[-1]} request; TF Serving "
                        "rejects it. Use a predict_log record for this signature.")
    if example_count(model_input) == 0:
        problems.append("the request holds no tf.Example (input.example_list is empty), so "
                        "nothing is run. Add examples.")
    return problems
