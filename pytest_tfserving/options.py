"""Registers the declared ``--tfs-*`` options with pytest and resolves them into settings.

Options are declared next to the code that uses them (``option_spec.option`` fields of a frozen
settings dataclass); this module only collects those classes, adds a flag and an ini key for each
field, and resolves a class from the command line > env > ini > default, keeping the source of
each value for messages. A value that does not parse raises ``pytest.UsageError`` naming the
value, where it came from, and what would be valid. It imports no gate and no backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from pytest_tfserving import option_parsers as p
from pytest_tfserving.option_spec import Option, declared

T = TypeVar("T")
GROUP = "tfserving"


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "command line --tfs-x", "env TFS_X", "ini tfs_x in FILE", "default"


def all_options(classes: Iterable[type]) -> list[Option]:
    """Every option the classes declare, once each; a name declared twice is a bug."""
    seen: dict[str, tuple[type, Option]] = {}
    for cls in dict.fromkeys(classes):
        for _, spec in declared(cls):
            if not spec.name:
                continue
            if spec.name in seen and seen[spec.name][0] is not cls:
                raise ValueError(f"option {spec.flag} declared by both "
                                 f"{seen[spec.name][0].__qualname__} and {cls.__qualname__}")
            seen[spec.name] = (cls, spec)
    return [spec for _, spec in seen.values()]


def help_text(spec: Option) -> str:
    text = f"{spec.help} [env {spec.env}, ini {spec.ini}]"
    if spec.default not in (None, ()):
        text += f" (default: {spec.default})"
    return text


def add_options(parser: pytest.Parser, classes: Sequence[type]) -> None:
    group = parser.getgroup(GROUP, "TF Serving release gate (pytest-tfserving)")
    for spec in all_options(classes):
        # a boolean flag given bare (--tfs-tune) means true; --tfs-tune=false still parses
        bare = {"nargs": "?", "const": "true"} if spec.parse is p.boolean and \
            not spec.multiple else {}
        group.addoption(
            spec.flag, dest=spec.dest, default=None, metavar=spec.metavar,
            action="append" if spec.multiple else "store",
            help=help_text(spec).replace("%", "%%"),  # argparse %-formats help strings
            **bare,
        )
        parser.addini(spec.ini, help=spec.help, default=None)


def resolve_class(config: pytest.Config, cls: type[T]) -> tuple[T, dict[str, str]]:
    """An instance of ``cls`` from the options its fields declare, and the source of each
    value by option name (marker-only fields keep their defaults)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field_name, spec in declared(cls):
        if not spec.name:
            continue
        resolved = resolve(config, spec)
        values[field_name] = resolved.value
        sources[spec.name] = resolved.source
    return cls(**values), sources


def resolve(config: pytest.Config, spec: Option) -> Resolved:
    """The value of one option: command line > env > ini > default."""
    raw_cli = config.getoption(spec.dest, default=None)
    if raw_cli is not None:
        source = f"command line {spec.flag}"
        if spec.multiple:
            return Resolved(tuple(_parse(spec, r, source) for r in raw_cli), source)
        return Resolved(_parse(spec, raw_cli, source), source)
    env = os.environ.get(spec.env)
    if env is not None and env.strip() != "":
        return Resolved(_parse_maybe_many(spec, env, f"env {spec.env}"), f"env {spec.env}")
    ini = config.getini(spec.ini)
    if ini not in (None, "", []):
        ini_text = " ".join(ini) if isinstance(ini, list) else str(ini)
        source = f"ini {spec.ini} in {config.inipath or 'ini file'}"
        return Resolved(_parse_maybe_many(spec, ini_text, source), source)
    return Resolved(spec.empty, "default")


def _parse_maybe_many(spec: Option, raw: str, source: str) -> Any:
    if spec.multiple:
        text = raw.replace(",", " ") if spec.split_commas else raw
        return tuple(_parse(spec, part, source) for part in text.split())
    return _parse(spec, raw, source)


def _parse(spec: Option, raw: str, source: str) -> Any:
    try:
        return spec.parse(raw.strip())
    except (ValueError, TypeError) as exc:
        reason = str(exc) or type(exc).__name__
        raise pytest.UsageError(
            f"Invalid value {raw!r} for {spec.flag} from {source}: {reason}. {spec.help}"
        ) from None


def usage_error(message: str, sources: Sequence[str] = ()) -> pytest.UsageError:
    where = f" (from {', '.join(sources)})" if sources else ""
    return pytest.UsageError(message + where)
