"""SavedModel inspection from ``saved_model.pb`` alone: layout, versions, tags, signatures.

Nothing is loaded into a TensorFlow runtime here; only the protobuf definitions are used (which
import the ``tensorflow`` package, so this module is imported lazily by the plugin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving.errors import ModelError

if TYPE_CHECKING:
    from tensorflow.core.protobuf.meta_graph_pb2 import MetaGraphDef

SERVING_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SERVED_METHODS = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
WARMUP_RELATIVE_PATH = Path("assets.extra") / "tf_serving_warmup_requests"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output."""

    key: str  # the name clients use in requests (the signature map key)
    tensor_name: str  # the graph tensor ("serving_default_x:0")
    dtype: str  # TF enum name, e.g. "DT_INT64"
    shape: tuple[int | None, ...] | None  # None: unknown rank; None entries: unknown dims

    @property
    def numpy_dtype(self) -> str:
        """The numpy dtype name for this tensor ("int64", "float32", "object" for strings);
        a TF1 reference type (``DT_FLOAT_REF``) as its value type."""
        return DTYPE_TO_NUMPY.get(self.dtype.removesuffix("_REF"), "object")

    @property
    def is_string(self) -> bool:
        return self.dtype.removesuffix("_REF") == "DT_STRING"

    def describe(self) -> str:
        dims = "?" if self.shape is None else ",".join(
            "-1" if d is None else str(d) for d in self.shape)
        return f"{self.key}: {self.dtype.removeprefix('DT_').lower()}[{dims}]"

    def as_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor_name, "dtype": self.dtype,
                "shape": None if self.shape is None else [-1 if d is None else d
                                                          for d in self.shape]}


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def is_served(self) -> bool:
        return self.method_name in SERVED_METHODS

    def as_dict(self) -> dict[str, Any]:
        return {
            "method_name": self.method_name,
            "inputs": {k: v.as_dict() for k, v in self.inputs.items()},
            "outputs": {k: v.as_dict() for k, v in self.outputs.items()},
        }


@dataclass(frozen=True)
class ModelInfo:
    """A TF Serving model as the gates see it: the version served plus its signatures."""

    name: str
    base_path: Path  # directory holding numeric version dirs (or the version dir's parent)
    version: int
    version_dir: Path
    versions: tuple[int, ...]  # every numeric version found, ascending
    tags: tuple[str, ...]
    signatures: dict[str, Signature]
    tf2: bool  # object graph present: ops live in function library
    meta_graph_count: int = 1
    size_bytes: int = 0
    warnings: tuple[str, ...] = field(default=())

    @property
    def warmup_file(self) -> Path:
        return self.version_dir / WARMUP_RELATIVE_PATH

    def served_signatures(self) -> dict[str, Signature]:
        return {k: s for k, s in self.signatures.items() if s.is_served}

    def signature(self, name: str) -> Signature:
        try:
            return self.signatures[name]
        except KeyError:
            known = ", ".join(sorted(self.signatures)) or "(none)"
            raise ModelError(
                f"Signature {name!r} does not exist in {self.version_dir}; it has: {known}. "
                "Use one of those names."
            ) from None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.version_dir),
            "base_path": str(self.base_path),
            "version": self.version,
            "versions": list(self.versions),
            "tags": list(self.tags),
            "tf2": self.tf2,
            "size_bytes": self.size_bytes,
            "signatures": {k: s.as_dict() for k, s in self.signatures.items()},
        }


DTYPE_TO_NUMPY = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
    "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64",
    "DT_BOOL": "bool", "DT_STRING": "object", "DT_COMPLEX64": "complex64",
    "DT_COMPLEX128": "complex128",
}


def _is_version_dir(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def version_dirs(base: Path) -> dict[int, Path]:
    """Every version dir under ``base`` as TF Serving reads them: any all-digit name is a version,
    and its path is the dir as named (``00000123`` is version 123 at ``base/00000123``).

    When two names give one number (``1`` and ``001``), the first in name order is kept, so the
    choice is stable across polls.
    """
    found: dict[int, Path] = {}
    for child in sorted(base.iterdir(), key=lambda c: c.name):
        if child.name.isdigit() and child.is_dir():
            found.setdefault(int(child.name), child)
    return dict(sorted(found.items()))


def resolve_layout(path: Path) -> tuple[Path, int, Path, tuple[int, ...]]:
    """Return (base_path, version, version_dir, versions) for a base dir or a version dir."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"Model path {str(path)!r} does not exist. Pass --tfs-model=PATH to a "
                         "SavedModel base dir (with numeric version subdirs) or a version dir.")
    if not path.is_dir():
        raise ModelError(f"Model path {str(path)!r} is a file; pass the directory that holds "
                         "saved_model.pb (or its parent with numeric version dirs).")
    if _is_version_dir(path):
        version = int(path.name) if path.name.isdigit() else 1
        return path.parent if path.name.isdigit() else path, version, path, (version,)
    numeric = version_dirs(path)
    loadable = {v: d for v, d in numeric.items() if _is_version_dir(d)}
    if not loadable:
        if numeric:
            names = [d.name for d in numeric.values()]
            raise ModelError(
                f"Model path {str(path)!r} has version dirs {names} but none holds "
                "saved_model.pb. Export the model with tf.saved_model.save(model, "
                f"'{path}/<version>')."
            )
        raise ModelError(
            f"Model path {str(path)!r} is not a SavedModel: it has neither saved_model.pb nor "
            "numeric version subdirs (TF Serving layout: BASE/1/saved_model.pb). Point "
            "--tfs-model at the export directory."
        )
    version = max(loadable)
    return path, version, loadable[version], tuple(loadable)


def read_saved_model(version_dir: Path) -> Any:
    """Parse saved_model.pb (or .pbtxt); a clear ModelError when it is unreadable."""
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        else:
            text_format.Parse((version_dir / "saved_model.pbtxt").read_text(), proto)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeError) as exc:
        raise ModelError(
            f"{pb} is corrupt or not a SavedModel protobuf ({exc}). Re-export the model with "
            "tf.saved_model.save (or restore the file from the training job's artifacts)."
        ) from exc
    except OSError as exc:
        raise ModelError(f"Cannot read {pb}: {exc}. Check the path and its permissions.") from exc
    if not proto.meta_graphs:
        raise ModelError(f"{pb} holds no MetaGraph. Re-export the model with tf.saved_model.save.")
    return proto


def serving_meta_graph(proto: Any, where: Path) -> MetaGraphDef:
    for mg in proto.meta_graphs:
        if SERVING_TAG in mg.meta_info_def.tags:
            return mg
    tags = [list(mg.meta_info_def.tags) for mg in proto.meta_graphs]
    raise ModelError(
        f"{where} has no MetaGraph tagged 'serve' (found tags {tags}); TF Serving loads the "
        "'serve' tag. Export with tf.saved_model.save or tag the graph with "
        "tf.saved_model.SERVING."
    )


def _shape(proto: Any) -> tuple[int | None, ...] | None:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in proto.dim)


def _specs(tensor_map: Any) -> dict[str, TensorSpec]:
    """Specs of a SignatureDef's TensorInfo map. A TensorInfo without ``tensor_shape`` (old or
    hand-built exports, e.g. TF Serving's ``saved_model_half_plus_three``) declares no shape:
    unknown rank, not a scalar."""
    from tensorflow.core.framework import types_pb2

    return {
        key: TensorSpec(
            key=key,
            tensor_name=info.name,
            dtype=types_pb2.DataType.Name(info.dtype),
            shape=_shape(info.tensor_shape) if info.HasField("tensor_shape") else None,
        )
        for key, info in sorted(tensor_map.items())
    }


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inspect_model(path: Path | str, name: str | None = None,
                  version: int | None = None) -> ModelInfo:
    """Inspect a TF Serving model dir: the version TF Serving would serve (the latest), or
    ``version`` of the base dir (the one a ModelServerConfig's policy serves)."""
    base, latest, version_dir, versions = resolve_layout(Path(path))
    if version is None or version == latest:
        version = latest
    elif version in versions:
        version_dir = version_dirs(base)[version]
    else:
        raise ModelError(f"Model path {str(path)!r} has no version {version} holding "
                         f"saved_model.pb (loadable versions: {list(versions)}). Export that "
                         "version there, or change the model_version_policy.")
    proto = read_saved_model(version_dir)
    mg = serving_meta_graph(proto, version_dir)
    signatures = {
        key: Signature(key, sd.method_name, _specs(sd.inputs), _specs(sd.outputs))
        for key, sd in sorted(mg.signature_def.items())
        if not key.startswith("__")  # __saved_model_init_op and friends
    }
    warnings: list[str] = []
    if DEFAULT_SIGNATURE not in signatures:
        warnings.append(
            f"no '{DEFAULT_SIGNATURE}' signature (found {sorted(signatures)}); clients that "
            "omit signature_name will fail"
        )
    model_name = name or (base.name if base != version_dir else version_dir.name)
    return ModelInfo(
        name=model_name,
        base_path=base,
        version=version,
        version_dir=version_dir,
        versions=versions,
        tags=tuple(mg.meta_info_def.tags),
        signatures=signatures,
        tf2=mg.HasField("object_graph_def") and len(mg.object_graph_def.nodes) > 0,
        meta_graph_count=len(proto.meta_graphs),
        size_bytes=_dir_size(version_dir),
        warnings=tuple(warnings),
    )
