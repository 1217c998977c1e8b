"""How a settings dataclass declares its ``--tfs-*`` options, and how marker keywords change it.

A gate (or the load generator, the launchers, INT8...) keeps its settings in a frozen dataclass
whose fields are declared with :func:`option`: the field's type and default, the option's name
(flag ``--tfs-NAME``, ini ``tfs_NAME``, env ``TFS_NAME``), its parser, help and the marker
keyword that overrides it. ``options.py`` registers and resolves every declared field; a marker
keyword goes through the same parser (:func:`apply_marker`), so a bad marker argument reads like
a bad flag. Nothing here imports a gate, a backend or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pytest_tfserving.errors import ConfigError

SPEC_KEY = "tfs_option"
T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """One option: where it is read from, how it is parsed, what a marker calls it."""

    name: str  # snake_case; "" for a marker-only keyword
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None
    multiple: bool = False  # repeatable flag; env/ini values split on commas/whitespace
    split_commas: bool = True  # multiple: env/ini values split on commas too (else whitespace)
    marker: str | None = None  # marker keyword (default: the field's name); "" = none
    join: str = ","  # how a marker's list value is joined before parsing
    from_marker: Callable[[Any], Any] | None = None  # a marker value that is not text

    @property
    def flag(self) -> str:
        return "--tfs-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "tfs_" + self.name

    @property
    def env(self) -> str:
        return "TFS_" + self.name.upper()

    @property
    def dest(self) -> str:
        return "tfs_" + self.name

    @property
    def empty(self) -> Any:
        """The value when nothing is given: the default, or () for a repeatable option."""
        if self.multiple and self.default is None:
            return ()
        return self.default

    def parse_marker_value(self, value: Any) -> Any:
        """A marker keyword's Python value, checked by the same parser as the flag's text."""
        if self.from_marker is not None:
            return self.from_marker(value)
        if value is None:
            return self.empty
        if self.multiple:
            items = [value] if isinstance(value, str) else list(value)
            return tuple(self.parse(_as_text(item, self.join)) for item in items)
        return self.parse(_as_text(value, self.join))


def _as_text(value: Any, join: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return join.join(_as_text(item, join) for item in value)
    if isinstance(value, (int, float, str)) or hasattr(value, "__fspath__"):
        return str(value)
    raise ValueError(f"expected text, a number or a list, not {type(value).__name__}")


def option(name: str, default: Any, parse: Callable[[str], Any], help: str, *,
           metavar: str | None = None, marker: str | None = None, multiple: bool = False,
           split_commas: bool = True, join: str = ",",
           from_marker: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field backed by option ``name`` (``""``: a marker-only keyword)."""
    spec = Option(name=name, help=help, parse=parse, default=default, metavar=metavar,
                  multiple=multiple, split_commas=split_commas, marker=marker, join=join,
                  from_marker=from_marker)
    return dataclasses.field(default=spec.empty, metadata={SPEC_KEY: spec})


def declared(cls: type) -> Iterator[tuple[str, Option]]:
    """(field name, option) for each declared field of a settings dataclass."""
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(SPEC_KEY)
        if isinstance(spec, Option):
            yield f.name, spec


def marker_keywords(cls: type) -> dict[str, tuple[str, Option]]:
    """marker keyword -> (field name, option), derived from the dataclass."""
    out: dict[str, tuple[str, Option]] = {}
    for field_name, spec in declared(cls):
        keyword = field_name if spec.marker is None else spec.marker
        if keyword:
            out[keyword] = (field_name, spec)
    return out


def apply_marker(settings: T, keywords: Mapping[str, Any], origin: str) -> T:
    """``settings`` with the marker's keywords that belong to its class applied (others are
    ignored here: the caller checks that each keyword belongs to one of the gate's classes)."""
    known = marker_keywords(type(settings))
    changes: dict[str, Any] = {}
    for keyword, value in keywords.items():
        if keyword not in known:
            continue
        field_name, spec = known[keyword]
        try:
            changes[field_name] = spec.parse_marker_value(value)
        except (ValueError, TypeError) as exc:
            reason = str(exc) or type(exc).__name__
            where = f" (option {spec.flag})" if spec.name else ""
            raise ConfigError(f"Invalid value {value!r} for argument {keyword}= of {origin}: "
                              f"{reason}. {spec.help}{where}") from None
    return dataclasses.replace(settings, **changes) if changes else settings  # type: ignore[type-var]
