"""What a signature allows the gates to do with it, read from the SignatureDef and its graph.

Models nobody here wrote (TF Serving's own test models among them) have signatures that the
load, warmup and batching machinery cannot take as they are:

* **no batch dimension**: a signature with no inputs, or with a scalar input. TF Serving's
  batching session (``--enable_batching``) rejects every such call ("Batching Run() must have at
  least one input tensor" / "input tensors must have at least one dimension"), warmup records
  for it fail the model load, and the SLA load has nothing to merge.
* **unknown rank**: an input whose SignatureDef has no shape. A request can only be guessed
  (a batch vector, else a scalar).
* **writes variables**: an op on the serving path assigns to a variable (``AssignAdd``,
  ``AssignVariableOp``, ``Scatter*`` ...). Every call changes the served state, so its answers
  depend on what ran before (no reference to compare with), warmup replays it at every load,
  and load runs change it thousands of times.
* **declared dtype wrong**: the SignatureDef declares another dtype than the graph tensor it
  names (TF Serving's ``saved_model_half_plus_three``); clients that follow the declaration are
  rejected.

TensorFlow is imported only by the graph analysis (lazily, as in :mod:`pytest_tfserving.graph`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_tfserving.model import DEFAULT_SIGNATURE, ModelInfo, Signature

if TYPE_CHECKING:
    from pytest_tfserving.graph import SavedModelGraph

# Ops that write a variable (or a mutable table) when they run.
WRITE_OPS = (
    "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
    "AssignSubVariableOp", "Scatter*", "ResourceScatter*", "*StridedSliceAssign",
    "CountUpTo", "ResourceCountUpTo", "Apply*", "ResourceApply*", "SparseApply*",
    "ResourceSparseApply*", "LookupTableInsert*", "LookupTableRemove*", "LookupTableImport*",
)
_SHOWN = 3


def is_write_op(op_type: str) -> bool:
    return any(fnmatch.fnmatchcase(op_type, pattern) for pattern in WRITE_OPS)


@dataclass(frozen=True)
class SignatureTraits:
    """What one signature allows: batching, request synthesis, state, declared dtypes."""

    name: str
    inputs: tuple[str, ...]  # the input keys
    scalar_inputs: tuple[str, ...]  # inputs of shape [] (rank 0)
    unknown_rank_inputs: tuple[str, ...]  # inputs whose SignatureDef gives no shape
    writes: tuple[str, ...] = ()  # "AssignAdd 'incr_counter_op/AssignAdd'"
    dtype_problems: tuple[str, ...] = ()  # "input 'inputs': the signature declares ..."
    string_fed: tuple[str, ...] = ()  # inputs whose graph tensor is DT_STRING (fed strings)
    method_name: str = ""

    @property
    def takes_examples(self) -> bool:
        """A classify/regress signature with one input that is a string tensor in the graph:
        the Classify/Regress APIs feed it a [batch] vector of serialized tf.Examples."""
        from pytest_tfserving.model import CLASSIFY_METHOD, REGRESS_METHOD

        return (self.method_name in (CLASSIFY_METHOD, REGRESS_METHOD)
                and len(self.inputs) == 1 and self.string_fed == self.inputs)

    @property
    def stateful(self) -> bool:
        return bool(self.writes)

    def batching_reason(self) -> str | None:
        """What in this signature TF Serving's batching session rejects (no name), or None.
        (Classify/Regress feed a [batch] vector of tf.Examples, whatever shape is declared.)"""
        if self.takes_examples:
            return None
        if not self.inputs:
            return ("takes no inputs, so TF Serving's batching session has no batch dimension "
                    "to merge and rejects every call to it ('Batching Run() must have at least "
                    "one input tensor')")
        if self.scalar_inputs:
            names = ", ".join(repr(k) for k in self.scalar_inputs)
            return (f"takes scalar input(s) {names} (shape []), so TF Serving's batching "
                    "session has no batch dimension to merge and rejects every call to it "
                    "('Batching Run() input tensors must have at least one dimension')")
        return None

    def batching_problem(self) -> str | None:
        """Why TF Serving's batching session rejects every call to this signature, or None."""
        reason = self.batching_reason()
        return None if reason is None else f"signature {self.name!r} {reason}"

    def batching_fix(self) -> str:
        what = ("give the signature an input with a leading batch dimension" if not self.inputs
                else "give every input a leading batch dimension (shape [-1, ...])")
        return (f"Fix: {what} and re-export, or, if production serves this model without "
                "--enable_batching, gate it the same way: --tfs-batching=off")

    def writes_text(self) -> str:
        shown = ", ".join(self.writes[:_SHOWN])
        more = f" and {len(self.writes) - _SHOWN} more" if len(self.writes) > _SHOWN else ""
        return f"{shown}{more}"

    def state_problem(self) -> str | None:
        """Why calling this signature changes the served model, or None."""
        if not self.writes:
            return None
        return (f"signature {self.name!r} writes variables ({self.writes_text()}): every call "
                "changes the served state")


def signature_traits(signature: Signature, graph: SavedModelGraph | None) -> SignatureTraits:
    """The traits of ``signature``; without ``graph`` only the SignatureDef's (no state or
    dtype analysis)."""
    scalar = tuple(k for k, s in signature.inputs.items() if s.shape == ())
    unknown = tuple(k for k, s in signature.inputs.items() if s.shape is None)
    writes: list[str] = []
    dtype_problems: list[str] = []
    string_fed = [k for k, spec in signature.inputs.items() if spec.is_string]
    if graph is not None:
        for reached in graph.reach(signature.name).nodes:
            if is_write_op(reached.node.op):
                text = f"{reached.node.op} {reached.runtime_name!r}"
                if text not in writes:
                    writes.append(text)
        dtypes = graph.input_dtypes(signature.name)
        dtype_problems = [f"input {d.key!r}: {d.problem}" for d in dtypes if d.problem]
        string_fed = [d.key for d in dtypes if d.effective == "DT_STRING"]
    return SignatureTraits(signature.name, tuple(signature.inputs), scalar, unknown,
                           tuple(writes), tuple(dtype_problems), tuple(string_fed),
                           signature.method_name)


def model_traits(model: ModelInfo, graph: SavedModelGraph | None = None,
                 names: list[str] | None = None) -> dict[str, SignatureTraits]:
    """Traits of ``names`` (default: every served signature), loading the graph if not given."""
    if graph is None:
        from pytest_tfserving.graph import SavedModelGraph

        graph = SavedModelGraph.load(model.version_dir)
    chosen = names if names is not None else sorted(model.served_signatures())
    return {name: signature_traits(model.signature(name), graph) for name in chosen}


def load_signature_choice(model: ModelInfo, chosen: str | None,
                          option: str = "--tfs-sla-signature=NAME") -> tuple[str | None, str]:
    """The signature a load (or a metric) should use, or (None, why it cannot tell).

    The explicit choice, else ``serving_default``, else the only served signature. With several
    served signatures and no ``serving_default``, picking one by name would put a verdict on a
    signature production traffic may never call.
    """
    if chosen:
        model.signature(chosen)  # a clear error for an unknown name
        return chosen, ""
    served = model.served_signatures()
    if DEFAULT_SIGNATURE in served:
        return DEFAULT_SIGNATURE, ""
    if len(served) == 1:
        return next(iter(served)), ""
    if not served:
        return None, (f"model {model.name!r} ({model.version_dir}) has no predict/classify/"
                      "regress signature")
    return None, (f"model {model.name!r} has no '{DEFAULT_SIGNATURE}' signature and "
                  f"{len(served)} served ones ({', '.join(sorted(served))}), so there is no "
                  f"telling which one production traffic calls; name it with {option}")
