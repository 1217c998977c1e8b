"""TF Serving warmup files: validate against a model, make, inspect, and read the server's line.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` when it loads a model
(``--enable_model_warmup``, on by default): a TFRecord file of ``PredictionLog`` protos, at most
1000 records, of kinds predict/classify/regress/multi_inference (``session_run_log`` fails the
load). Each record is replayed ``--num_request_iterations_for_warmup`` times, and the server then
logs ``Finished reading warmup data for model at <file>. Number of warmup records read: N.
Elapsed time (microseconds): T.`` where N counts records, not replays.

TensorFlow (through the ``tensorflow_serving.apis`` protos) is imported only inside functions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    ModelInfo,
    Signature,
    TensorSpec,
)

if TYPE_CHECKING:
    from pytest_tfserving.servability import SignatureTraits

MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords: more fails the model load
SUPPORTED_KINDS = ("predict_log", "classify_log", "regress_log", "multi_inference_log")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # the playbook's max_batch_size is 32
DEFAULT_SYNTHETIC_RECORDS = 10
_KIND_METHOD = {"classify_log": CLASSIFY_METHOD, "regress_log": REGRESS_METHOD}

# TF Serving's own line (glog prefix, docker timestamps etc. before it are tolerated).
FINISHED_LINE = re.compile(
    r"Finished reading warmup data for model at (?P<path>.+?)\. "
    r"Number of warmup records read: (?P<records>\d+)\. "
    r"Elapsed time \(microseconds\): (?P<micros>\d+)"
)
NO_FILE_LINE = re.compile(r"No warmup data file found at (?P<path>\S+)")

Inputs = dict[str, np.ndarray[Any, Any]]


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


@dataclass(frozen=True)
class RecordSummary:
    index: int
    kind: str  # "predict_log", ... or "empty"
    model_name: str
    signatures: tuple[str, ...]
    inputs: dict[str, str]  # key -> "int64[4,8]"; classify/regress: "examples" -> "3 tf.Example"
    batch_size: int | None

    def describe(self) -> str:
        sig = ",".join(self.signatures) or "-"
        ins = " ".join(f"{k}={v}" for k, v in self.inputs.items())
        return f"#{self.index:<4d} {self.kind:<20s} signature={sig:<16s} {ins}"


@dataclass(frozen=True)
class WarmupSummary:
    path: Path
    size_bytes: int
    records: tuple[RecordSummary, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.records)

    def kinds(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.records))

    def signatures(self) -> dict[str, int]:
        return dict(Counter(s for r in self.records for s in r.signatures))

    def batch_sizes(self) -> list[int]:
        return sorted({r.batch_size for r in self.records if r.batch_size is not None})

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "records": self.count,
                "kinds": self.kinds(), "signatures": self.signatures(),
                "batch_sizes": self.batch_sizes(), "problems": [str(p) for p in self.problems]}

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{self.path}: {self.count} record(s), {self.size_bytes} bytes",
               f"  kinds: {self.kinds()}", f"  signatures: {self.signatures()}",
               f"  batch sizes: {self.batch_sizes()}"]
        out += ["  " + r.describe() for r in self.records[:limit]]
        if self.count > limit:
            out.append(f"  ... {self.count - limit} more")
        out += [f"  PROBLEM {p}" for p in self.problems]
        return out


@dataclass(frozen=True)
class ReplayLine:
    """TF Serving's "Finished reading warmup data" line, parsed."""

    path: str
    records: int
    micros: int


def make_command(model: ModelInfo, signatures: Sequence[str] = ()) -> str:
    """The CLI command that writes a warmup file for ``model`` (quoted into fix messages)."""
    named = f" --signatures {','.join(signatures)}" if signatures else ""
    return f"python -m pytest_tfserving warmup make --model {model.version_dir} --synthetic " \
           f"{DEFAULT_SYNTHETIC_RECORDS}{named}"


def missing_file_problem(model: ModelInfo, signatures: Sequence[str] = ()) -> str:
    """What to say when the model has no warmup file, with the command that makes one."""
    return (f"no warmup file at {model.warmup_file}: TF Serving starts this model cold and the "
            "first requests after every release pay for it. Make one: "
            f"`{make_command(model, signatures)}` (or --from-npz FILE with real inputs).")


# --- reading ------------------------------------------------------------------------------

def _read_logs(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, PredictionLog) for each record; raises ConfigError for framing/parse errors."""
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    from pytest_tfserving.tfrecord import read_records

    for index, raw in enumerate(read_records(path)):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(raw)
        except DecodeError as exc:
            raise ConfigError(
                f"{path}: record {index} ({len(raw)} bytes) is not a PredictionLog protobuf "
                f"({exc}). Write records with PredictionLog.SerializeToString(), e.g. via "
                "`python -m pytest_tfserving warmup make`."
            ) from None
        yield index, log


def _tensor_text(proto: Any) -> tuple[str, tuple[int, ...]]:
    from pytest_tfserving.tensors import dtype_name

    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    name = dtype_name(proto.dtype).removeprefix("DT_").lower()
    return f"{name}[{','.join(str(d) for d in shape)}]", shape


def _example_count(model_input: Any) -> int:
    which = model_input.WhichOneof("kind")
    if which == "example_list":
        return len(model_input.example_list.examples)
    if which == "example_list_with_context":
        return len(model_input.example_list_with_context.examples)
    return 0


def _summarize(index: int, log: Any) -> RecordSummary:
    kind = log.WhichOneof("log_type") or "empty"
    inputs: dict[str, str] = {}
    batch: int | None = None
    signatures: tuple[str, ...] = ()
    model_name = ""
    if kind == "predict_log":
        request = log.predict_log.request
        model_name = request.model_spec.name
        signatures = (request.model_spec.signature_name or DEFAULT_SIGNATURE,)
        for key in sorted(request.inputs):
            text, shape = _tensor_text(request.inputs[key])
            inputs[key] = text
            if shape and batch is None:
                batch = shape[0]
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        model_name = request.model_spec.name
        signatures = (request.model_spec.signature_name or DEFAULT_SIGNATURE,)
        batch = _example_count(request.input)
        inputs["examples"] = f"{batch} tf.Example"
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        signatures = tuple(t.model_spec.signature_name or DEFAULT_SIGNATURE
                           for t in request.tasks)
        model_name = request.tasks[0].model_spec.name if request.tasks else ""
        batch = _example_count(request.input)
        inputs["examples"] = f"{batch} tf.Example"
    return RecordSummary(index, kind, model_name, signatures, inputs, batch)


def inspect_warmup_file(path: Path | str, model: ModelInfo | None = None) -> WarmupSummary:
    """Summarize a warmup file (every record); with ``model``, also list its problems.

    Raises ConfigError when the file is missing or not a TFRecord file of PredictionLogs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No warmup file at {path}. Make one with `python -m pytest_tfserving "
                          "warmup make --model MODEL_DIR --synthetic 10`.")
    records = tuple(_summarize(i, log) for i, log in _read_logs(path))
    problems = tuple(validate_warmup_file(model, path)) if model is not None else ()
    return WarmupSummary(path, path.stat().st_size, records, problems)


# --- validation ---------------------------------------------------------------------------

def validate_warmup_file(model: ModelInfo, path: Path | str | None = None, *,
                         batching: bool = False) -> list[Problem]:
    """Everything TF Serving would reject or silently skip in ``path`` (default: the model's
    own ``assets.extra/tf_serving_warmup_requests``), and records that change the served state
    at every load. With ``batching`` (the server runs with ``--enable_batching``), also the
    predict records its batching session rejects, which fail the model load. Empty list: the
    file is good."""
    path = Path(path) if path is not None else model.warmup_file
    if not path.is_file():
        if path == model.warmup_file:
            return [Problem(missing_file_problem(model))]
        return [Problem(
            f"no warmup file at {path}: TF Serving starts this model cold and the first "
            f"requests after every release pay for it. Make one: `{make_command(model)}` "
            "(or --from-npz FILE with real inputs)."
        )]
    by_message: dict[str, list[int]] = {}
    problems: list[Problem] = []
    count = 0
    state = _StateCheck(model)
    try:
        for index, log in _read_logs(path):
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


def _record_signatures(log: Any) -> list[str]:
    kind = log.WhichOneof("log_type")
    if kind == "multi_inference_log":
        return [t.model_spec.signature_name or DEFAULT_SIGNATURE
                for t in log.multi_inference_log.request.tasks]
    if kind in ("predict_log", "classify_log", "regress_log"):
        return [getattr(log, kind).request.model_spec.signature_name or DEFAULT_SIGNATURE]
    return []


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
        for name in _record_signatures(log):
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
    text, shape = _tensor_text(proto)
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
    if _example_count(model_input) == 0:
        problems.append("the request holds no tf.Example (input.example_list is empty), so "
                        "nothing is run. Add examples.")
    return problems


# --- making -------------------------------------------------------------------------------

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


def write_prediction_logs(path: Path | str, logs: Sequence[Any]) -> int:
    """Write PredictionLog protos (any you built yourself) as a warmup file."""
    from pytest_tfserving.tfrecord import write_records

    return write_records(Path(path), (bytes(log.SerializeToString()) for log in logs))


# --- the server's log ---------------------------------------------------------------------

def parse_replay_lines(log_text: str) -> list[ReplayLine]:
    """Every "Finished reading warmup data ..." line in a server log, in order."""
    return [ReplayLine(m["path"], int(m["records"]), int(m["micros"]))
            for m in FINISHED_LINE.finditer(log_text)]


def no_file_lines(log_text: str) -> list[str]:
    """Paths from "No warmup data file found at ..." lines."""
    return [m["path"] for m in NO_FILE_LINE.finditer(log_text)]
