"""Static signature compatibility: would requests built for the baseline still be accepted?

TF Serving's Predict takes exactly a signature's inputs (an extra or a missing key is rejected
with "input size does not match signature"), feeds them by tensor name in the dtype the client
sent, and answers the outputs the signature declares. So, once the candidate becomes the latest
version, a client built for the baseline breaks when a served signature disappears or changes its
method, an input is removed, renamed or added, an input's dtype changes or its shape stops
accepting the baseline's, or an output it reads disappears or changes dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo, Signature, TensorSpec


@dataclass(frozen=True)
class Break:
    """One incompatibility: where (signature, input/output, key) and what changed."""

    signature: str
    kind: str  # "signature" | "method" | "input" | "output"
    key: str  # the input/output key ("" for signature-level breaks)
    change: str  # readable: "removed (candidate has: examples)", "dtype int64 -> string"

    def describe(self) -> str:
        where = f"signature {self.signature!r}"
        if self.key:
            where += f" {self.kind} {self.key!r}"
        return f"{where} {self.change}"

    def as_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "kind": self.kind, "key": self.key,
                "change": self.change}


def _dtype(spec: TensorSpec) -> str:
    return spec.dtype.removesuffix("_REF").removeprefix("DT_").lower()


def _shape_problem(old: TensorSpec, new: TensorSpec) -> str | None:
    """Why a tensor of the baseline's declared shape does not fit the candidate's, or None."""
    if old.shape is None or new.shape is None:
        return None  # an unknown rank accepts (or may produce) anything
    if len(old.shape) != len(new.shape):
        return (f"rank {len(old.shape)} -> {len(new.shape)} (shape {old.describe()} -> "
                f"{new.describe()})")
    for axis, (a, b) in enumerate(zip(old.shape, new.shape, strict=True)):
        if b is not None and a != b:
            return f"dimension {axis} {'-1' if a is None else a} -> {b} ({new.describe()})"
    return None


def _input_breaks(name: str, old: Signature, new: Signature) -> list[Break]:
    out: list[Break] = []
    added = sorted(set(new.inputs) - set(old.inputs))
    for key in sorted(old.inputs):
        if key not in new.inputs:
            hint = f" (candidate has: {', '.join(added)})" if added else ""
            out.append(Break(name, "input", key, f"removed or renamed{hint}"))
            continue
        a, b = old.inputs[key], new.inputs[key]
        if _dtype(a) != _dtype(b):
            out.append(Break(name, "input", key, f"dtype {_dtype(a)} -> {_dtype(b)}"))
        problem = _shape_problem(a, b)
        if problem:
            out.append(Break(name, "input", key, problem))
    for key in added:
        out.append(Break(name, "input", key, "added: requests built for the baseline do not "
                                             f"send it ({new.inputs[key].describe()})"))
    return out


def _output_breaks(name: str, old: Signature, new: Signature) -> list[Break]:
    out: list[Break] = []
    for key in sorted(old.outputs):
        if key not in new.outputs:
            have = ", ".join(sorted(new.outputs)) or "none"
            out.append(Break(name, "output", key, f"removed (candidate has: {have})"))
        elif _dtype(old.outputs[key]) != _dtype(new.outputs[key]):
            out.append(Break(name, "output", key, f"dtype {_dtype(old.outputs[key])} -> "
                                                  f"{_dtype(new.outputs[key])}"))
    return out


def signature_breaks(baseline: ModelInfo, candidate: ModelInfo,
                     signatures: list[str] | None = None) -> list[Break]:
    """Every way the candidate rejects or changes what clients of the baseline send and read,
    for the baseline's served signatures (or ``signatures``)."""
    served = baseline.served_signatures()
    names = signatures if signatures is not None else sorted(served)
    out: list[Break] = []
    for name in names:
        old = baseline.signatures.get(name)
        if old is None:
            continue
        new = candidate.signatures.get(name)
        if new is None:
            have = ", ".join(sorted(candidate.served_signatures())) or "none"
            out.append(Break(name, "signature", "", f"removed (candidate serves: {have})"))
            continue
        if new.method_name != old.method_name:
            out.append(Break(name, "method", "", f"method {old.method_name} -> "
                                                 f"{new.method_name}"))
        out += _input_breaks(name, old, new)
        out += _output_breaks(name, old, new)
    return out
