"""Allowlists for the string-op gates: entries (op-type, node-name or input-name glob with a
reason) parsed from options and markers, and which findings they match.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tfserving.graph import OpFinding


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
