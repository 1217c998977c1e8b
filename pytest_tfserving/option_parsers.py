"""The parsers every ``--tfs-*`` option uses: text in, typed value out, ``ValueError(reason)`` on
bad input (the resolver adds the value and where it came from)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN passes every comparison
        raise ValueError("must be a finite number")
    return value


def _bounded(convert: Callable[[str], Any], ok: Callable[[Any], bool],
             reason: str) -> Callable[[str], Any]:
    """A parser: ``convert`` the text, then require ``ok`` of the value (else ``reason``)."""
    def parse(raw: str) -> Any:
        value = convert(raw)
        if not ok(value):
            raise ValueError(reason)
        return value

    return parse


positive_float: Callable[[str], float] = _bounded(_number, lambda v: v > 0, "must be a number > 0")
non_negative_float: Callable[[str], float] = _bounded(_number, lambda v: v >= 0,
                                                      "must be a number >= 0")
fraction: Callable[[str], float] = _bounded(_number, lambda v: 0 <= v <= 1,
                                            "must be a fraction between 0 and 1")
open_fraction: Callable[[str], float] = _bounded(_number, lambda v: 0 < v < 1,
                                                 "must be a fraction strictly between 0 and 1")


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        value = _number(raw)  # "4.0" from a marker's 4.0 is a whole number; "4.5" is not
        if value in (float("inf"), float("-inf")) or value != int(value):
            raise ValueError("must be a whole number") from None
        return int(value)


non_negative_int: Callable[[str], int] = _bounded(_integer, lambda v: v >= 0,
                                                  "must be an integer >= 0")
positive_int: Callable[[str], int] = _bounded(_integer, lambda v: v >= 1,
                                              "must be an integer >= 1")


def int_list(raw: str) -> tuple[int, ...]:
    return tuple(positive_int(x) for x in raw.replace(",", " ").split())


def names(raw: str) -> tuple[str, ...]:
    return tuple(x for x in raw.replace(",", " ").split())


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must be a non-empty path")
    return Path(raw).expanduser()


def existing_file(raw: str) -> Path:
    value = path(raw)
    if not value.is_file():
        raise ValueError("no such file")
    return value


def existing_path(raw: str) -> Path:
    value = path(raw)
    if not value.exists():
        raise ValueError("no such file or directory")
    return value
