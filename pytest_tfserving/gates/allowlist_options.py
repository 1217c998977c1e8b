"""The allowlist options of the string-op gates (``--tfs-string-op-allow``,
``--tfs-string-input-allow`` and the markers' ``allow=``), and their check against the model:
an exact entry that names no op type TensorFlow knows, or no input of the model, is a typo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_tfserving.errors import ConfigError

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.op_allowlist import AllowEntry

GLOB_CHARS = set("*?[")


def op_allowlist(raw: str) -> Any:
    from pytest_tfserving.op_allowlist import parse_allowlist

    return parse_allowlist(raw, "op")


def input_allowlist(raw: str) -> Any:
    from pytest_tfserving.op_allowlist import parse_allowlist

    return parse_allowlist(raw, "input")


def op_allow_marker(value: Any) -> Any:
    from pytest_tfserving.op_allowlist import allow_entries

    return allow_entries(value, "op", "marker")


def input_allow_marker(value: Any) -> Any:
    from pytest_tfserving.op_allowlist import allow_entries

    return allow_entries(value, "input", "marker")


def check_op_names(entries: tuple[AllowEntry, ...], flag: str, source: str) -> None:
    """Exact op-type entries must name an op TensorFlow registers (globs are left alone)."""
    exact = [e for e in entries if e.kind == "op" and not GLOB_CHARS & set(e.pattern)]
    if not exact:
        return
    from tensorflow.python.framework import op_def_registry

    unknown = [e.pattern for e in exact if op_def_registry.get(e.pattern) is None]
    if unknown:
        raise ConfigError(
            f"{flag} names op type(s) {', '.join(unknown)} that TensorFlow does not know (from "
            f"{source}); op types are case-sensitive, e.g. AsString, StringToHashBucketFast, "
            "ParseExampleV2. Use 'glob:node/name/*=reason' to allow by node name.")


def check_input_names(entries: tuple[AllowEntry, ...], model: ModelInfo, flag: str,
                      source: str) -> None:
    """Exact input entries must name an input (or signature/input) of the model."""
    names = {key for sig in model.signatures.values() for key in sig.inputs}
    names |= {f"{sig.name}/{key}" for sig in model.signatures.values() for key in sig.inputs}
    unknown = [e.pattern for e in entries if not GLOB_CHARS & set(e.pattern)
               and e.pattern not in names]
    if unknown:
        raise ConfigError(
            f"{flag} names input(s) {', '.join(unknown)} that no signature of "
            f"{model.version_dir} has (from {source}); its inputs: {', '.join(sorted(names))}.")


def source_of(sources: Mapping[str, str], name: str) -> str:
    return sources.get(name, "marker")
