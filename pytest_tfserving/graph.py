"""A SavedModel's serving graph: what runs when a signature is called (reachability from its
outputs, its inputs cut out), its string ops, and each input's graph dtype (pure analysis).

What runs when TF Serving answers a signature is what is reachable from the signature's output
tensors, with the signature's input tensors cut out:

* TF1 SavedModels: walk back from the output tensors through the top-level graph (data and
  control inputs). TF Serving feeds a signature's inputs *by tensor name*, and TF's session
  rewrites a fed tensor ``op:i`` into a feed node before pruning (``subgraph::FeedInputs``), so
  nothing upstream of a fed tensor runs. The cut is per tensor, as in TF: feeding ``op:0`` cuts
  only that output; when ``op:1`` (or a control edge ``^op``) is still needed, ``op`` runs
  with all its inputs. A control edge from a fed node is cut only when the node is a
  ``Placeholder`` (TF rewires those; any other fed node still runs for its control edges). This
  is what makes ``serving_default`` of TF Serving's ``saved_model_half_plus_two_cpu`` clean:
  its input ``x:0`` is an ``Identity`` of a ``ParseExample`` that only the classify/regress
  signatures (fed ``tf_example:0``) run.
* TF2 SavedModels: the top-level output is a ``StatefulPartitionedCall`` whose attribute ``f``
  names a function in ``graph_def.library``; every function-valued attribute (``f``,
  ``then_branch``/``else_branch``, ``cond``/``body``, ``branches``, ...) and every node whose op
  *is* a library function is followed recursively. Inside a function body the walk starts from
  ``FunctionDef.ret``, ``FunctionDef.control_ret`` and the body's stateful ops (TF's function
  runtime keeps stateful ops even when no output depends on them). The top-level graph is cut
  at the signature's inputs as for TF1 (the inputs are ``Placeholder``s, or a
  ``PlaceholderWithDefault`` whose default is not computed when fed); a function body never
  crosses its arguments: an argument is not a node of the body, and the walk follows the call
  site's inputs in the caller instead.

Nodes not reachable this way (the checkpoint saver's ``StringJoin``/``SaveV2``/``RestoreV2``,
initializers) are never reported. What counts as a string op is :mod:`pytest_tfserving.op_kinds`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ModelError
from pytest_tfserving.op_kinds import base_dtype, classify, dtype_name, op_def, output_types

TOP_LEVEL = "<top-level graph>"
CONTROL = -1  # the "output index" of a control edge ("^node")
# Ops whose outgoing control edges TF moves to the feed node when one of their outputs is fed.
_FEED_MOVES_CONTROL_EDGES = frozenset({"Placeholder", "PlaceholderV2"})
_MAX_CALL_DEPTH = 64


@dataclass(frozen=True)
class OpFinding:
    """One reachable string (or unknown) op on one signature's serving path."""

    signature: str
    op_type: str
    node: str
    function: str  # enclosing function name, or TOP_LEVEL
    dtype: str  # "DT_STRING" or "unknown"
    reason: str  # what made it a finding, e.g. "input 'serialized' is DT_STRING"
    kind: str  # "string" | "unknown"
    family: str | None  # the string-heavy family, e.g. "string hashing"
    call_path: tuple[str, ...]  # call-node names from the top-level graph down to this body
    runtime_names: tuple[str, ...] = ()  # node names after Grappler inlines the calls

    @property
    def where(self) -> str:
        return self.node if self.function == TOP_LEVEL else f"{self.function}/{self.node}"

    def as_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "node": self.node, "function": self.function,
                "signature": self.signature, "dtype": self.dtype, "reason": self.reason,
                "kind": self.kind, "family": self.family, "call_path": list(self.call_path)}


@dataclass(frozen=True)
class ReachedNode:
    node: Any  # NodeDef
    function: str  # TOP_LEVEL or the FunctionDef name
    call_path: tuple[str, ...]

    @property
    def runtime_name(self) -> str:
        return "/".join((*self.call_path, self.node.name))


@dataclass
class SignatureReach:
    """Everything reachable from one signature's outputs."""

    signature: str
    nodes: list[ReachedNode] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    # the signature's fed input tensors ("x:0") and where the walk actually stopped at one
    # ("x:0", or "^x" for a cut control edge of a fed Placeholder)
    fed: frozenset[tuple[str, int]] = frozenset()
    cut_at: set[str] = field(default_factory=set)
    # called function name -> the ReachedNode of a call site, for calls the library lacks
    missing_functions: dict[str, ReachedNode] = field(default_factory=dict)

    def op_types(self) -> set[str]:
        return {r.node.op for r in self.nodes}


@dataclass(frozen=True)
class InputDtype:
    """A signature input's declared dtype against the dtype of the graph tensor it names."""

    signature: str
    key: str
    tensor: str
    declared: str  # the SignatureDef's dtype, e.g. "DT_FLOAT"
    graph: str | None  # the graph tensor's dtype (ref types as their base), None: unresolved
    problem: str | None  # why the declaration cannot be trusted; None when it matches
    note: str = ""  # why ``graph`` could not be resolved (then it is not checked)

    @property
    def effective(self) -> str:
        """The dtype TF really accepts for this feed: the graph's when known."""
        return self.graph or self.declared

    def as_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "input": self.key, "tensor": self.tensor,
                "declared_dtype": self.declared, "graph_dtype": self.graph,
                "problem": self.problem, "note": self.note}


# --- the graph -----------------------------------------------------------------------------------

def _ref_node(ref: str) -> str:
    """The node a NodeDef input refers to: "^ctl", "node:0" or "node:output_arg:0"."""
    return ref.lstrip("^").split(":", 1)[0]


def _parse_ref(ref: str) -> tuple[str, int]:
    """(node, output index) of a graph-level input or tensor name: "^ctl" (index CONTROL),
    "node:1" or "node" (index 0). A function body's "node:output_arg:0" gives its node and 0:
    a body's flat output index is not needed, since nothing is fed inside a body."""
    if ref.startswith("^"):
        return ref[1:], CONTROL
    parts = ref.split(":")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return parts[0], 0


def tensor_names(info: Any) -> list[str]:
    """The graph tensors one SignatureDef TensorInfo names: its ``name``, a sparse tensor's
    three components, or a composite tensor's components (recursively)."""
    kind = info.WhichOneof("encoding")
    if kind == "coo_sparse":
        sparse = info.coo_sparse
        return [n for n in (sparse.values_tensor_name, sparse.indices_tensor_name,
                            sparse.dense_shape_tensor_name) if n]
    if kind == "composite_tensor":
        return [n for c in info.composite_tensor.components for n in tensor_names(c)]
    return [info.name] if info.name else []


def _called_functions(node: Any, library: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    if node.op in library:
        names.append(node.op)
    for key in sorted(node.attr):
        value = node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "func" and value.func.name:
            names.append(value.func.name)
        elif kind == "list":
            names += [f.name for f in value.list.func if f.name]
    return names


class SavedModelGraph:
    """The serving MetaGraph of one SavedModel, indexed for reachability queries."""

    def __init__(self, meta_graph: Any, source: str = "saved_model.pb") -> None:
        self.source = source
        self.meta_graph = meta_graph
        graph_def = meta_graph.graph_def
        self.top: dict[str, Any] = {n.name: n for n in graph_def.node}
        self.functions: dict[str, Any] = {f.signature.name: f for f in graph_def.library.function}
        self._bodies: dict[str, dict[str, Any]] = {}
        self._reach: dict[str, SignatureReach] = {}
        self._findings: dict[str, list[OpFinding]] = {}

    @classmethod
    def load(cls, version_dir: Path) -> SavedModelGraph:
        from pytest_tfserving.model import read_saved_model, serving_meta_graph

        meta_graph = serving_meta_graph(read_saved_model(version_dir), version_dir)
        return cls(meta_graph, str(version_dir / "saved_model.pb"))

    @property
    def signature_names(self) -> list[str]:
        return sorted(k for k in self.meta_graph.signature_def if not k.startswith("__"))

    def _body(self, function: str) -> dict[str, Any]:
        if function not in self._bodies:
            self._bodies[function] = {n.name: n for n in self.functions[function].node_def}
        return self._bodies[function]

    def all_nodes(self) -> Iterator[tuple[str, Any]]:
        """Every node in the file (reachable or not) with its enclosing function."""
        for node in self.top.values():
            yield TOP_LEVEL, node
        for name in self.functions:
            for node in self._body(name).values():
                yield name, node

    def reach(self, signature: str) -> SignatureReach:
        """Nodes reachable from ``signature``'s outputs, following function calls."""
        if signature in self._reach:
            return self._reach[signature]
        defs = self.meta_graph.signature_def
        if signature not in defs or signature.startswith("__"):
            raise ModelError(
                f"Signature {signature!r} does not exist in {self.source}; it has: "
                f"{', '.join(self.signature_names) or '(none)'}. Use one of those names."
            )
        sig = defs[signature]
        fed = frozenset(_parse_ref(t) for _, info in sorted(sig.inputs.items())
                        for t in tensor_names(info))
        result = SignatureReach(signature, fed=fed)
        seeds = [_parse_ref(t) for _, info in sorted(sig.outputs.items())
                 for t in tensor_names(info)]
        missing = [name for name, _ in seeds if name not in self.top]
        if missing:
            raise ModelError(
                f"Signature {signature!r} in {self.source} names output node(s) {missing} that "
                "are not in the graph; the SavedModel is inconsistent. Re-export it."
            )
        self._walk(self.top, TOP_LEVEL, (), seeds, result, set(), (), fed)
        self._reach[signature] = result
        return result

    def _walk(self, nodes: Mapping[str, Any], function: str, call_path: tuple[str, ...],
              seeds: Iterable[tuple[str, int]], result: SignatureReach, visited_calls: set[Any],
              stack: tuple[str, ...], fed: frozenset[tuple[str, int]] = frozenset()) -> None:
        """Walk back from ``seeds`` (node, output index or CONTROL) through ``nodes``.

        A node runs when one of its outputs or its control edge is demanded and that demand is
        not fed; then all its inputs are demanded. ``fed`` is non-empty only for the top-level
        graph (a signature's inputs); a function body's arguments are not nodes of the body,
        so the walk never crosses them.
        """
        fed_nodes = {name for name, _ in fed}
        seen: set[str] = set()
        todo = list(seeds)
        while todo:
            name, index = todo.pop()
            if name not in nodes:
                continue  # a function argument, bound by the caller
            node = nodes[name]
            if name in fed_nodes:
                if (name, index) in fed:
                    result.cut_at.add(f"{name}:{index}")
                    continue
                if index == CONTROL and node.op in _FEED_MOVES_CONTROL_EDGES:
                    result.cut_at.add(f"^{name}")
                    continue
            if name in seen:
                continue
            seen.add(name)
            result.nodes.append(ReachedNode(node, function, call_path))
            todo += [_parse_ref(ref) for ref in node.input]
            for callee in _called_functions(node, self.functions):
                if callee not in self.functions:
                    result.missing_functions.setdefault(
                        callee, ReachedNode(node, function, call_path))
                    continue
                self._enter(callee, (*call_path, node.name), result, visited_calls, stack)

    def _enter(self, function: str, call_path: tuple[str, ...], result: SignatureReach,
               visited_calls: set[Any], stack: tuple[str, ...]) -> None:
        if function in stack or len(stack) >= _MAX_CALL_DEPTH:
            return  # recursion: the body is being walked already
        key = (function, call_path)
        if key in visited_calls:
            return
        visited_calls.add(key)
        result.functions.add(function)
        fdef = self.functions[function]
        body = self._body(function)
        seeds = [_parse_ref(v) for v in fdef.ret.values()]
        seeds += [(_ref_node(v), CONTROL) for v in fdef.control_ret.values()]
        seeds += [(n.name, CONTROL) for n in body.values() if _is_stateful(n.op, self.functions)]
        self._walk(body, function, call_path, seeds, result, visited_calls, (*stack, function))

    def tensor_dtype(self, tensor: str) -> tuple[int | None, str, bool]:
        """(dtype, "", False) of a top-level graph tensor ("node:1"); else (None, why, broken):
        ``broken`` when the tensor does not exist (no such node or output), not when only its
        dtype cannot be resolved (an op TF's registry lacks)."""
        name, index = _parse_ref(tensor)
        node = self.top.get(name)
        if node is None or index == CONTROL:
            return None, f"tensor {tensor!r} is not in the graph", True
        definition = (self.functions[node.op].signature if node.op in self.functions
                      else op_def(node.op))
        if definition is None:
            return None, (f"op {node.op!r} is not in TF's op registry, so the dtype of "
                          f"{tensor!r} is unknown"), False
        try:
            types = output_types(node, definition)
        except LookupError as exc:
            return None, f"{node.op} node {name!r}: {exc}", False
        if index >= len(types):
            return None, (f"tensor {tensor!r} is not in the graph: {node.op} node {name!r} has "
                          f"{len(types)} output(s)"), True
        return types[index], "", False

    def input_dtypes(self, signature: str) -> list[InputDtype]:
        """Each dense input of ``signature``: declared dtype against the graph tensor's dtype.

        TF Serving feeds the tensor by name; the session rejects a feed whose dtype is not the
        tensor's, whatever the SignatureDef says, and clients (model metadata, REST's JSON
        decoding) follow the SignatureDef. So a disagreement, or an input naming a tensor that
        does not exist, is a ``problem``. Sparse/composite inputs have no single dtype to compare
        and are skipped.
        """
        self.reach(signature)  # validates the name
        out: list[InputDtype] = []
        for key, info in sorted(self.meta_graph.signature_def[signature].inputs.items()):
            if info.WhichOneof("encoding") != "name":
                continue
            declared = dtype_name(info.dtype)
            dtype, why, broken = self.tensor_dtype(info.name)
            if dtype is None:
                out.append(InputDtype(signature, key, info.name, declared, None,
                                      why if broken else None, "" if broken else why))
                continue
            graph = dtype_name(base_dtype(dtype))
            problem = None
            if base_dtype(dtype) != base_dtype(info.dtype):
                problem = (f"the signature declares {declared} but graph tensor {info.name!r} "
                           f"is {graph}")
            out.append(InputDtype(signature, key, info.name, declared, graph, problem))
        return out

    def findings(self, signature: str) -> list[OpFinding]:
        """String and unknown ops reachable from ``signature`` (one per node, in walk order)."""
        if signature in self._findings:
            return self._findings[signature]
        reach = self.reach(signature)
        grouped: dict[tuple[str, str], tuple[OpFinding, list[str]]] = {}
        for reached in reach.nodes:
            node = reached.node
            key = (reached.function, node.name)
            if key in grouped:
                grouped[key][1].append(reached.runtime_name)
                continue
            verdict = classify(node, is_function_call=node.op in self.functions)
            if verdict.kind == "clean":
                continue
            finding = OpFinding(signature=signature, op_type=node.op, node=node.name,
                                function=reached.function, dtype=verdict.dtype,
                                reason=verdict.reason, kind=verdict.kind, family=verdict.family,
                                call_path=reached.call_path)
            grouped[key] = (finding, [reached.runtime_name])
        out = [_with_runtime_names(f, names) for f, names in grouped.values()]
        for callee, site in sorted(reach.missing_functions.items()):
            out.append(OpFinding(
                signature=signature, op_type=site.node.op, node=site.node.name,
                function=site.function, dtype="unknown", kind="unknown", family=None,
                reason=f"calls function {callee!r}, which is not in the SavedModel's function "
                       "library, so its body cannot be checked", call_path=site.call_path))
        out.sort(key=lambda f: (f.function, f.node))
        self._findings[signature] = out
        return out

    def string_ops_anywhere(self) -> list[tuple[str, Any]]:
        """String ops in the whole file, reachable or not (for 'not on the serving path')."""
        out = []
        for function, node in self.all_nodes():
            if classify(node, is_function_call=node.op in self.functions).kind == "string":
                out.append((function, node))
        return out


def _with_runtime_names(finding: OpFinding, names: list[str]) -> OpFinding:
    return replace(finding, runtime_names=tuple(dict.fromkeys(names)))


def _is_stateful(op_type: str, library: Mapping[str, Any]) -> bool:
    if op_type in library:
        return True  # a direct function call: follow it like a stateful call
    definition = op_def(op_type)
    return bool(definition is not None and definition.is_stateful and op_type != "_Arg")

