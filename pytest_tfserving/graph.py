"""Op inventory of a SavedModel and reachability from a signature's outputs (pure analysis).

What runs when TF Serving answers a signature is what is reachable from the signature's output
tensors:

* TF1 SavedModels: walk back from the output tensors through the top-level graph (data and
  control inputs).
* TF2 SavedModels: the top-level output is a ``StatefulPartitionedCall`` whose attribute ``f``
  names a function in ``graph_def.library``; every function-valued attribute (``f``,
  ``then_branch``/``else_branch``, ``cond``/``body``, ``branches``, ...) and every node whose op
  *is* a library function is followed recursively. Inside a function body the walk starts from
  ``FunctionDef.ret``, ``FunctionDef.control_ret`` and the body's stateful ops (TF's function
  runtime keeps stateful ops even when no output depends on them).

Nodes not reachable this way (the checkpoint saver's ``StringJoin``/``SaveV2``/``RestoreV2``,
initializers) are never reported.

A reachable node is a *string op* when one of its inputs, outputs or type attributes is
``DT_STRING`` (resolved from TF's OpDef registry plus the node's attributes), or when its op type
is one of the string-heavy families below. Ops missing from the registry (custom ops such as
tf-text's) are reported as *unknown*: they cannot be checked, so they are never silently passed.

Only the OpDef registry needs TensorFlow; it is imported lazily (the first call costs ~5 s).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ModelError

TOP_LEVEL = "<top-level graph>"
STRING_DTYPE = "DT_STRING"
_DT_STRING, _DT_STRING_REF = 7, 107
_MAX_CALL_DEPTH = 64

# String-heavy op families (globs on the op type): the playbook's latency killers.
STRING_FAMILIES: dict[str, str] = {
    "ParseExample*": "tf.Example parsing",
    "ParseSingleExample": "tf.Example parsing",
    "ParseSequenceExample*": "tf.SequenceExample parsing",
    "ParseSingleSequenceExample": "tf.SequenceExample parsing",
    "DecodeCSV": "CSV parsing",
    "DecodeJSONExample": "JSON tf.Example parsing",
    "DecodeProto*": "proto parsing",
    "EncodeProto": "proto serialization",
    "AsString": "number-to-string conversion",
    "StringToNumber": "string-to-number conversion",
    "StringToHashBucket*": "string hashing",
    "_TensorToHashBucketFast": "string hashing (Grappler-fused AsString + hash)",
    "StringSplit*": "string splitting",
    "Regex*": "regular expression",
    "StaticRegex*": "regular expression",
    "Substr": "substring",
    "StringFormat": "string formatting",
    "ReduceJoin": "string joining",
    "StringJoin": "string joining",
    "String*": "string manipulation",
    "Unicode*": "unicode processing",
    "DecodeBase64": "base64", "EncodeBase64": "base64",
    "*HashTable*": "lookup table",
    "LookupTable*": "lookup table",
    "InitializeTable*": "lookup table",
}

# Ops that only move a tensor (or call a function we descend into): a DT_STRING on them is not
# string work by itself; whatever consumes the strings is reported instead.
CARRIER_OPS = frozenset({
    "Const", "HostConst", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN",
    "NoOp", "_Arg", "_Retval", "_DeviceArg", "_DeviceRetval", "StopGradient", "Snapshot",
    "Switch", "Merge", "Enter", "Exit", "NextIteration", "RefSwitch", "RefMerge", "RefEnter",
    "RefExit", "RefNextIteration", "LoopCond", "ControlTrigger",
})
CALL_OPS = frozenset({
    "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While", "StatelessWhile",
    "Case", "StatelessCase", "_If", "_While", "RemoteCall", "SymbolicGradient",
})


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
    # called function name -> the ReachedNode of a call site, for calls the library lacks
    missing_functions: dict[str, ReachedNode] = field(default_factory=dict)

    def op_types(self) -> set[str]:
        return {r.node.op for r in self.nodes}


# --- OpDef registry (lazy TF import) ---------------------------------------------------------

def op_def(op_type: str) -> Any | None:
    """The registered OpDef for ``op_type``, or None when TF does not know the op."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def _dtype_name(value: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return str(types_pb2.DataType.Name(value))
    except ValueError:
        return f"dtype#{value}"


def _is_string(dtype: int) -> bool:
    return dtype in (_DT_STRING, _DT_STRING_REF)


def _attr(node: Any, definition: Any | None, name: str) -> Any | None:
    """The node's attribute ``name``, else the OpDef default (SavedModels strip defaults)."""
    if name in node.attr:
        return node.attr[name]
    if definition is not None:
        for attr_def in definition.attr:
            if attr_def.name == name and attr_def.HasField("default_value"):
                return attr_def.default_value
    return None


def _arg_types(node: Any, definition: Any, arg: Any) -> list[int]:
    if arg.type:
        return [arg.type]
    if arg.type_attr:
        value = _attr(node, definition, arg.type_attr)
        return [value.type] if value is not None else []
    if arg.type_list_attr:
        value = _attr(node, definition, arg.type_list_attr)
        return list(value.list.type) if value is not None else []
    return []


def string_evidence(node: Any, definition: Any | None) -> list[str]:
    """Why ``node`` carries DT_STRING: its inputs/outputs per the OpDef, then type attributes."""
    evidence: list[str] = []
    if definition is not None:
        for label, args in (("input", definition.input_arg), ("output", definition.output_arg)):
            names = [a.name for a in args
                     if any(_is_string(t) for t in _arg_types(node, definition, a))]
            if names:
                plural = "s" if len(names) > 1 else ""
                evidence.append(f"{label}{plural} {', '.join(repr(n) for n in names)} DT_STRING")
        if evidence:
            return evidence
    for name in sorted(node.attr):
        value = node.attr[name]
        kind = value.WhichOneof("value")
        if kind == "type" and _is_string(value.type):
            evidence.append(f"attr '{name}' is DT_STRING")
        elif kind == "list" and any(_is_string(t) for t in value.list.type):
            evidence.append(f"attr '{name}' lists DT_STRING")
    return evidence


def string_family(op_type: str) -> str | None:
    for pattern, family in STRING_FAMILIES.items():
        if fnmatch.fnmatchcase(op_type, pattern):
            return family
    return None


@dataclass(frozen=True)
class Classification:
    kind: str  # "string" | "unknown" | "clean"
    dtype: str
    reason: str
    family: str | None


def classify(node: Any, is_function_call: bool = False) -> Classification:
    """Whether one node is a string op, an unknown op, or clean."""
    op_type = node.op
    if is_function_call or op_type in CALL_OPS:
        return Classification("clean", "", "function call (its body is analysed)", None)
    definition = op_def(op_type)
    family = string_family(op_type)
    evidence = string_evidence(node, definition)
    if definition is None:
        detail = "; ".join(evidence) if evidence else "its dtypes cannot be resolved"
        return Classification("unknown", STRING_DTYPE if evidence else "unknown",
                              f"op {op_type!r} is not in TF's op registry (custom op?); {detail}",
                              family)
    if op_type in CARRIER_OPS:
        return Classification("clean", "", "carrier op", None)
    if evidence:
        reason = "; ".join(evidence)
        if family:
            reason += f" ({family})"
        return Classification("string", STRING_DTYPE, reason, family)
    if family:
        return Classification("string", STRING_DTYPE, f"string-heavy op family ({family})",
                              family)
    return Classification("clean", "", "", None)


# --- the graph -----------------------------------------------------------------------------------

def _ref_node(ref: str) -> str:
    """The node a NodeDef input refers to: "^ctl", "node:0" or "node:output_arg:0"."""
    return ref.lstrip("^").split(":", 1)[0]


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
        result = SignatureReach(signature)
        outputs = [info.name for _, info in sorted(defs[signature].outputs.items())]
        seeds = [_ref_node(t) for t in outputs if t]
        missing = [s for s in seeds if s not in self.top]
        if missing:
            raise ModelError(
                f"Signature {signature!r} in {self.source} names output node(s) {missing} that "
                "are not in the graph; the SavedModel is inconsistent. Re-export it."
            )
        self._walk(self.top, TOP_LEVEL, (), seeds, result, set(), ())
        self._reach[signature] = result
        return result

    def _walk(self, nodes: Mapping[str, Any], function: str, call_path: tuple[str, ...],
              seeds: Iterable[str], result: SignatureReach, visited_calls: set[Any],
              stack: tuple[str, ...]) -> None:
        seen: set[str] = set()
        todo = [s for s in seeds if s in nodes]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            node = nodes[name]
            result.nodes.append(ReachedNode(node, function, call_path))
            for ref in node.input:
                target = _ref_node(ref)
                if target in nodes and target not in seen:
                    todo.append(target)  # else: a function argument, bound by the caller
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
        seeds = [_ref_node(v) for v in fdef.ret.values()]
        seeds += [_ref_node(v) for v in fdef.control_ret.values()]
        seeds += [n.name for n in body.values() if _is_stateful(n.op, self.functions)]
        self._walk(body, function, call_path, seeds, result, visited_calls, (*stack, function))

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
    from dataclasses import replace

    return replace(finding, runtime_names=tuple(dict.fromkeys(names)))


def _is_stateful(op_type: str, library: Mapping[str, Any]) -> bool:
    if op_type in library:
        return True  # a direct function call: follow it like a stateful call
    definition = op_def(op_type)
    return bool(definition is not None and definition.is_stateful and op_type != "_Arg")


# --- allowlists ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: an op-type glob, a node-name glob or an input-name glob + reason."""

    kind: str  # "op" | "node" | "input"
    pattern: str
    reason: str
    source: str = ""

    @property
    def text(self) -> str:
        prefix = "glob:" if self.kind == "node" else ""
        return f"{prefix}{self.pattern}={self.reason}"

    def matches(self, finding: OpFinding) -> bool:
        if self.kind == "op":
            return fnmatch.fnmatchcase(finding.op_type, self.pattern)
        if self.kind == "node":
            names = (finding.node, finding.where, *finding.runtime_names)
            return any(fnmatch.fnmatchcase(n, self.pattern) for n in names)
        return False

    def matches_input(self, signature: str, key: str) -> bool:
        return any(fnmatch.fnmatchcase(n, self.pattern) for n in (key, f"{signature}/{key}"))

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "pattern": self.pattern, "reason": self.reason,
                "source": self.source}


def parse_allow_entry(raw: str, kind: str, source: str = "") -> AllowEntry:
    """``OpType=reason``, ``glob:node/name/*=reason`` (kind "op"), or ``input=reason``."""
    text = raw.strip()
    pattern, sep, reason = text.partition("=")
    pattern, reason = pattern.strip(), reason.strip()
    if kind == "op" and pattern.startswith("glob:"):
        kind, pattern = "node", pattern[len("glob:"):].strip()
    example = ("AsString=legacy ids until v3 or glob:*/preprocess/*=reason" if kind != "input"
               else "examples=classify API needs tf.Example")
    if not sep or not pattern or not reason:
        raise ValueError(
            f"allowlist entry {text!r} needs PATTERN=REASON with both parts non-empty (the "
            f"reason is shown in the report), e.g. {example!r}")
    return AllowEntry(kind, pattern, reason, source)


def parse_allowlist(raw: str, kind: str, source: str = "") -> tuple[AllowEntry, ...]:
    """Entries separated by ';' or newlines (reasons may contain spaces and commas)."""
    parts = [p for line in raw.splitlines() for p in line.split(";") if p.strip()]
    return tuple(parse_allow_entry(p, kind, source) for p in parts)


def allow_entries(value: Any, kind: str, source: str) -> tuple[AllowEntry, ...]:
    """A marker's ``allow=``: a string, a list of strings, or a {pattern: reason} dict."""
    if value is None:
        return ()
    if isinstance(value, AllowEntry):
        return (value,)
    if isinstance(value, str):
        return parse_allowlist(value, kind, source)
    if isinstance(value, Mapping):
        return tuple(parse_allow_entry(f"{k}={v}", kind, source) for k, v in value.items())
    if isinstance(value, Iterable):
        return tuple(e for item in value for e in allow_entries(item, kind, source))
    raise ValueError(f"allow={value!r} ({type(value).__name__}) is not an allowlist; pass a list "
                     "of 'PATTERN=reason' strings or a {pattern: reason} dict")
