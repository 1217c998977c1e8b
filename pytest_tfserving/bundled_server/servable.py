"""One loaded SavedModel version, run the way TF Serving runs it: a TF1 Session and its signatures.

Loading (``load_servable``): a fresh ``tf.Graph`` and ``tf.compat.v1.Session`` (thread pools and
XLA from ``LoadOptions``), then ``tf.compat.v1.saved_model.loader.load``, which imports the
MetaGraph whose tag set equals ``LoadOptions.tags``, restores the variables and runs the init op
(tables, ``__saved_model_init_op``), as TF Serving's ``LoadSavedModel`` does. This loads TF1
graphs with reference variables as well as TF2/Keras SavedModels, including those that
``tf.saved_model.load`` cannot rebuild as Python objects (reported: TFX's TF-Keras taxi model,
"'_UserObject' object has no attribute 'add_slot'"). It fails where TF Serving fails: a Keras 3
model saved with ``tf.saved_model.save`` loads, but its signatures read variable handles that the
restore never writes, so every call is FAILED_PRECONDITION "Could not find variable" (Keras 3's
``model.export()`` serves). Signature metadata (method name, dtypes, shapes) comes from that
MetaGraph's ``signature_def`` map; the map is kept whole for GetModelMetadata.

Running (``SignatureRunner.run``): the signature's input tensors are fed and only the requested
outputs' tensors fetched (TF Serving fetches the output filter only), through a callable that
TF prepares once per distinct set of outputs (``Session::MakeCallable``: the pruned graph and its
executors are built once, then each call feeds numpy arrays straight to them). It is built by the
first call that asks for those outputs, as TF Serving's Session builds its executors on the first
``Run``: the cold start that warmup records exist to pay. The callable comes from
``Session._make_callable_from_options``, a private TF API: the public ``make_callable`` with
a ``feed_list`` goes through ``Session.run`` on every call (~5x the per-call cost, measured: CTR
model, batch 1, ~420 us vs ~75 us), so it is only the fallback when the private one is missing.
The graph is finalized after loading, so calls from many threads at once only run it. TF checks
a fed value's dtype (INVALID_ARGUMENT, the input named here). Shapes are not checked against
the signature's: as in TF Serving, a fed tensor replaces its placeholder, and only the ops that
cannot use its shape fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.errors import ModelError
from pytest_tfserving.model import read_saved_model, resolve_layout
from pytest_tfserving.tensors import DT_STRING, DTYPE_BY_NUMPY, NUMPY_BY_DTYPE, dtype_name

Arrays = dict[str, np.ndarray[Any, Any]]
_Call = Callable[..., Sequence[Any]]  # a prepared callable: feed arrays in, fetched values out

_REF_OFFSET = 100  # DT_FLOAT_REF == DT_FLOAT + 100: a reference variable's value is its dtype


@dataclass(frozen=True)
class LoadOptions:
    """How a SavedModel is loaded, as TF Serving's flags set it (0: TF's default).

    ``xla_cpu_jit`` sets the session's ``global_jit_level`` to ON_1. On CPU, TF auto-clusters
    only when the process also has ``TF_XLA_FLAGS=--tf_xla_cpu_global_jit`` (measured: no XLA
    compile without it). TF Serving's ``--xla_cpu_compilation_enabled`` differs: it only allows
    the XLA compilation a model asks for itself (``jit_compile=True``), which TF here always does.
    """

    tags: tuple[str, ...] = ("serve",)  # --saved_model_tags: the MetaGraph's exact tag set
    intra_op_threads: int = 0  # --tensorflow_intra_op_parallelism
    inter_op_threads: int = 0  # --tensorflow_inter_op_parallelism
    xla_cpu_jit: bool = False  # global_jit_level ON_1 for this session (see above)
    session_config: bytes = b""  # serialized ConfigProto (--tensorflow_session_config_file)


@dataclass(frozen=True)
class TensorInfo:
    key: str
    dtype: int  # tensorflow DataType enum
    shape: tuple[int, ...] | None  # -1: unknown dim; None: unknown rank

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return NUMPY_BY_DTYPE.get(self.dtype, np.dtype(object))


def _tensor_info(key: str, info: Any) -> TensorInfo:
    shp = info.tensor_shape
    shape = None if shp.unknown_rank else tuple(int(d.size) for d in shp.dim)
    dtype = int(info.dtype)
    if dtype > _REF_OFFSET:  # a TF1 reference variable's output: fetched as its value
        dtype -= _REF_OFFSET
    return TensorInfo(key, dtype, shape)


def _tf_error(exc: Exception) -> ServingError:
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None) or str(exc)
    try:
        grpc_code = next(c for c in grpc.StatusCode if c.value[0] == code)
    except StopIteration:
        grpc_code = grpc.StatusCode.INTERNAL
    return ServingError(grpc_code, message)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _dtype_mismatch(info: TensorInfo, arr: np.ndarray[Any, Any]) -> str | None:
    """Why ``arr`` cannot feed ``info``'s tensor; None when its dtype fits (or is unknown here)."""
    if info.dtype == DT_STRING:
        if arr.dtype.kind in "SU" or (arr.dtype.kind == "O" and all(
                isinstance(v, (bytes, str)) for v in arr.flat)):
            return None
        return f"has dtype {arr.dtype} but the signature expects DT_STRING (bytes)"
    if info.dtype not in NUMPY_BY_DTYPE:  # e.g. DT_BFLOAT16: no numpy dtype to compare
        return None
    got = DTYPE_BY_NUMPY.get(arr.dtype.newbyteorder("="))
    if got == info.dtype:
        return None
    got_name = dtype_name(got) if got is not None else f"numpy {arr.dtype}"
    return f"has dtype {got_name} but the signature expects {dtype_name(info.dtype)}"


class SignatureRunner:
    """Runs one signature in a Session: numpy arrays in, numpy arrays for the outputs asked out."""

    def __init__(self, name: str, method_name: str, inputs: dict[str, TensorInfo],
                 outputs: dict[str, TensorInfo], session: Any, tensor_names: Any,
                 model_name: str = "") -> None:
        """``tensor_names``: the SignatureDef (its inputs' and outputs' graph tensor names)."""
        import tensorflow as tf

        self.name = name
        self.model_name = model_name  # the served model's name (metrics labels)
        self.method_name = method_name
        self.inputs = inputs
        self.outputs = outputs
        self._session = session
        self._feed_keys = tuple(sorted(inputs))
        self._feed_names = [tensor_names.inputs[k].name for k in self._feed_keys]
        self._fetch_names = {k: tensor_names.outputs[k].name for k in outputs}
        self._all_outputs = tuple(sorted(outputs))
        self._op_error = tf.errors.OpError
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, ...], _Call] = {}  # built on first use, as TF's executors

    def run(self, arrays: Mapping[str, np.ndarray[Any, Any]],
            output_keys: tuple[str, ...] | None = None) -> Arrays:
        """Feed ``arrays`` (one per input key); fetch ``output_keys`` (None: every output)."""
        if output_keys is None:
            keys = self._all_outputs
        else:  # one callable per set of outputs, whatever order they are asked in
            keys = tuple(sorted(set(output_keys)))
        try:
            call = self._calls.get(keys) or self._prepared(keys)
            values = call(*[arrays[k] for k in self._feed_keys])
        except KeyError as exc:
            raise _invalid(f"input {exc} of signature {self.name!r} was not fed") from None
        except self._op_error as exc:
            raise self._feed_error(arrays, exc) or _tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise self._feed_error(arrays, exc) or _invalid(str(exc)) from None
        return {k: np.asarray(v) for k, v in zip(keys, values)}  # noqa: B905 - one per fetch

    def _prepared(self, keys: tuple[str, ...]) -> _Call:
        """The callable that fetches ``keys`` (sorted, unique); built once, thread-safely."""
        with self._lock:
            call = self._calls.get(keys)
            if call is None:
                call = self._calls[keys] = self._make_callable(keys)
        return call

    def _make_callable(self, keys: tuple[str, ...]) -> _Call:
        unknown = [k for k in keys if k not in self._fetch_names]
        if unknown:
            raise _invalid(
                f"output tensor alias not found in signature: {','.join(unknown)} Outputs "
                f"expected to be in the set {{{','.join(self._all_outputs)}}}.")
        from tensorflow.core.protobuf.config_pb2 import CallableOptions

        fetches = [self._fetch_names[k] for k in keys]
        make = getattr(self._session, "_make_callable_from_options", None)
        if make is None:  # the public API: correct, but Session.run's feed handling per call
            call: _Call = self._session.make_callable(fetches, feed_list=self._feed_names)
            return call
        prepared: _Call = make(CallableOptions(feed=self._feed_names, fetch=fetches))
        return prepared

    def _feed_error(self, arrays: Mapping[str, np.ndarray[Any, Any]],
                    exc: Exception) -> ServingError | None:
        """INVALID_ARGUMENT naming the input whose dtype TF rejected; None if none is off."""
        for key in self._feed_keys:
            problem = _dtype_mismatch(self.inputs[key], np.asarray(arrays[key]))
            if problem is not None:
                detail = getattr(exc, "message", None) or str(exc)
                return _invalid(f"input '{key}' {problem}: {detail}")
        return None


@dataclass
class Servable:
    name: str
    version: int
    version_dir: Path
    signatures: dict[str, SignatureRunner]
    signature_defs: Any  # protobuf map: key -> SignatureDef (all of them, as TF Serving)
    root: Any  # what holds the model's state: the Session (SavedModel), an interpreter (TFLite)
    # requests holding this version (TF Serving's ServableHandles): its unload waits for them
    _holders: int = field(default=0, repr=False)
    _released: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def acquire(self) -> None:
        """A request holds this version until ``release``: it is not closed under the request."""
        with self._released:
            self._holders += 1

    def release(self) -> None:
        with self._released:
            self._holders -= 1
            if self._holders <= 0:
                self._released.notify_all()

    def wait_released(self, timeout_s: float) -> bool:
        """Until no request holds this version (False: still held after ``timeout_s``)."""
        with self._released:
            return self._released.wait_for(lambda: self._holders <= 0, timeout_s)

    def close(self) -> None:
        """Release the model's state (the Session's variables, tables and executors).

        Idempotent. A call on one of its signatures afterwards fails with CANCELLED.
        """
        close = getattr(self.root, "close", None)
        if callable(close):
            close()


def find_version_dir(base_path: str) -> tuple[int, Path]:
    """The latest numeric version (TF Serving's default version policy)."""
    _, version, version_dir, _ = resolve_layout(Path(base_path))
    return version, version_dir


def _check_tags(version_dir: Path, tags: tuple[str, ...]) -> None:
    """A clear ModelError when no MetaGraph has exactly ``tags`` (TF Serving's match)."""
    found = [sorted(mg.meta_info_def.tags) for mg in read_saved_model(version_dir).meta_graphs]
    if sorted(set(tags)) in found:
        return
    wanted = ",".join(tags)
    raise ModelError(
        f"{version_dir} has no MetaGraph tagged {{{wanted}}} (found tag sets {found}). TF "
        "Serving loads the MetaGraph whose tags equal --saved_model_tags (default 'serve'): "
        f"start it with --saved_model_tags={','.join(found[0]) if found else 'serve'}, or "
        "re-export the model with tags=[tf.saved_model.SERVING]."
    )


def session_config(options: LoadOptions) -> Any:
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    config.ParseFromString(options.session_config)  # the file first; the thread flags override
    if options.intra_op_threads:
        config.intra_op_parallelism_threads = options.intra_op_threads
    if options.inter_op_threads:
        config.inter_op_parallelism_threads = options.inter_op_threads
    if options.xla_cpu_jit:
        config.graph_options.optimizer_options.global_jit_level = (
            config_pb2.OptimizerOptions.ON_1)
    return config


def _runners(session: Any, signature_defs: Any, model_name: str) -> dict[str, SignatureRunner]:
    """A runner per servable signature: not ``__saved_model_init_op`` and friends, and only
    signatures of plain tensors (a sparse or composite TensorInfo has no tensor name to feed)."""
    runners: dict[str, SignatureRunner] = {}
    for key, sd in signature_defs.items():
        infos = [*sd.inputs.values(), *sd.outputs.values()]
        if key.startswith("__") or any(i.WhichOneof("encoding") != "name" for i in infos):
            continue
        runners[key] = SignatureRunner(
            key, sd.method_name,
            {k: _tensor_info(k, v) for k, v in sd.inputs.items()},
            {k: _tensor_info(k, v) for k, v in sd.outputs.items()},
            session, sd, model_name,
        )
    return runners


def load_servable(name: str, version: int, version_dir: Path,
                  options: LoadOptions = LoadOptions()) -> Servable:
    """Load ``version_dir`` into a new Session (see the module docstring) with its signatures."""
    import tensorflow as tf

    _check_tags(version_dir, options.tags)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config(options))
    try:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, list(options.tags), str(version_dir))
        graph.finalize()
        signatures = _runners(session, meta_graph.signature_def, name)
    except BaseException:
        session.close()
        raise
    return Servable(name, version, version_dir, signatures, meta_graph.signature_def, session)


def is_string(info: TensorInfo) -> bool:
    return info.dtype == DT_STRING
