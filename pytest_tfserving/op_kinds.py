"""Which op is a string op, an unknown op or clean: dtypes from TF's OpDef registry plus the
node's attributes, and the string-heavy op families.

A node is a *string op* when one of its inputs, outputs or type attributes is ``DT_STRING``
(resolved from TF's OpDef registry plus the node's attributes), or when its op type is one of
the string-heavy families below. Ops missing from the registry (custom ops such as tf-text's)
are *unknown*: they cannot be checked, so they are never silently passed. Ops that only carry a
tensor, and function calls (their bodies are analysed instead), are clean.

Only the OpDef registry needs TensorFlow; it is imported lazily (the first call costs ~5 s).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

STRING_DTYPE = "DT_STRING"
_DT_STRING, _DT_STRING_REF = 7, 107
_REF_OFFSET = 100  # DT_FLOAT_REF == DT_FLOAT + 100 (types.proto)

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



def op_def(op_type: str) -> Any | None:
    """The registered OpDef for ``op_type``, or None when TF does not know the op."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def dtype_name(value: int) -> str:
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


def output_types(node: Any, definition: Any) -> list[int]:
    """The dtype of each output of ``node``, in output-index order (refs as ``*_REF``)."""
    out: list[int] = []
    for arg in definition.output_arg:
        if arg.number_attr:
            count = _attr(node, definition, arg.number_attr)
            base = _arg_types(node, definition, arg)
            if count is None or len(base) != 1:
                raise LookupError(f"output {arg.name!r}: attr {arg.number_attr!r} or its type "
                                  "is missing")
            types = base * int(count.i)
        elif arg.type_list_attr:
            if _attr(node, definition, arg.type_list_attr) is None:
                raise LookupError(f"output {arg.name!r}: attr {arg.type_list_attr!r} missing")
            types = _arg_types(node, definition, arg)
        else:
            types = _arg_types(node, definition, arg)
            if len(types) != 1:
                raise LookupError(f"output {arg.name!r}: attr {arg.type_attr!r} missing")
        out += [t + _REF_OFFSET if arg.is_ref and t < _REF_OFFSET else t for t in types]
    return out


def base_dtype(dtype: int) -> int:
    return dtype - _REF_OFFSET if dtype > _REF_OFFSET else dtype




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


