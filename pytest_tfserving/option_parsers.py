"""The parsers every ``--tfs-*`` option uses: text in, typed value out, ``ValueError(reason)`` on
bad input (the resolver adds the value and where it came from)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def _number(raw: str) -> float:
    value = float(raw)
    if value != value:  # NaN passes every comparison below
        raise ValueError("must be a number, not NaN")
    return value


def positive_float(raw: str) -> float:
    value = _number(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def non_negative_float(raw: str) -> float:
    value = _number(raw)
    if value < 0:
        raise ValueError("must be a number >= 0")
    return value


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        value = float(raw)  # "4.0" from a marker's 4.0 is a whole number; "4.5" is not
        if value != int(value):
            raise ValueError("must be a whole number") from None
        return int(value)


def non_negative_int(raw: str) -> int:
    value = _integer(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def positive_int(raw: str) -> int:
    value = _integer(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def fraction(raw: str) -> float:
    value = _number(raw)
    if not 0 <= value <= 1:
        raise ValueError("must be a fraction between 0 and 1")
    return value


def open_fraction(raw: str) -> float:
    value = _number(raw)
    if not 0 < value < 1:
        raise ValueError("must be a fraction strictly between 0 and 1")
    return value


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
