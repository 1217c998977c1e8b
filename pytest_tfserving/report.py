"""Presenting GateResults: the terminal table and the JSON report (it never decides a verdict)."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_tfserving import __version__
from pytest_tfserving.gates.result import GateResult

SCHEMA_VERSION = 1


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 1e6:
            return f"{value:.4g}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}={_fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def fmt_mapping(mapping: dict[str, Any]) -> list[str]:
    """``key=value`` items of a threshold/measured dict (nested dicts and long lists stay in
    the JSON)."""
    return [f"{k}={_fmt_value(v)}" for k, v in mapping.items()
            if not isinstance(v, (dict, list)) or len(str(v)) < 40]


def _wrap(items: list[str], width: int) -> list[str]:
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(item if len(item) <= width else item[: width - 1] + "…")
    return lines or [""]


def short_target(target: str) -> str:
    """A test node id shortened to its test name for the table (the JSON keeps the node id)."""
    return target.rsplit("::", 1)[-1] if "::" in target else target


def gate_table(results: Sequence[GateResult], width: int = 120) -> list[str]:
    """Rows: gate, verdict, threshold, measured; long cells wrap onto continuation lines.
    Terminals narrower than the table need are given one block per gate instead."""
    names = [r.name + (f" [{short_target(r.target)}]" if r.target else "") for r in results]
    name_width = max([4, *map(len, names)])
    room = width - name_width - 13  # what the two value columns share
    if room < 70:
        return _stacked(names, results, width)
    longest = max([9, *(len(item) for r in results for item in fmt_mapping(r.threshold))])
    thresholds = [_wrap(fmt_mapping(r.threshold), max(20, min(longest, room // 2)))
                  for r in results]
    threshold_width = max([9, *(len(x) for cell in thresholds for x in cell)])
    measured_col = max(24, room - threshold_width)
    rows: list[tuple[str, str, list[str], list[str]]] = [
        (name, r.verdict, threshold, _wrap(_measured_items(r), measured_col))
        for name, r, threshold in zip(names, results, thresholds, strict=True)
    ]
    head = f"{'gate'.ljust(name_width)}  verdict  {'threshold'.ljust(threshold_width)}  measured"
    lines = [head, f"{'-' * name_width}  -------  {'-' * threshold_width}  --------"]
    for name, verdict, threshold, measured in rows:
        for i in range(max(len(threshold), len(measured))):
            cells = (name if i == 0 else "", verdict if i == 0 else "",
                     threshold[i] if i < len(threshold) else "",
                     measured[i] if i < len(measured) else "")
            lines.append(f"{cells[0].ljust(name_width)}  {cells[1].ljust(7)}  "
                         f"{cells[2].ljust(threshold_width)}  {cells[3]}".rstrip())
    return lines


def _measured_items(result: GateResult) -> list[str]:
    return fmt_mapping(result.measured) or (result.message.split() if result.skipped else [])


def _stacked(names: list[str], results: Sequence[GateResult], width: int) -> list[str]:
    lines: list[str] = []
    indent = " " * 15
    for name, result in zip(names, results, strict=True):
        lines.append(f"{result.verdict:<5} {name}")
        for label, items in (("threshold", fmt_mapping(result.threshold)),
                             ("measured", _measured_items(result))):
            for i, text in enumerate(_wrap(items, max(30, width - len(indent)))):
                if text:
                    lines.append(f"    {label + ':' if i == 0 else '':<11}{text}")
    return lines


def header_line(backend: dict[str, Any], model: dict[str, Any] | None) -> str:
    what = backend.get("image_or_binary") or "-"
    if not model:
        name = "(no model)"
    elif "name" in model and "error" not in model:
        name = f"{model['name']} v{model.get('version', '?')}"
    else:  # the model could not be read; the gates say why
        name = f"{model.get('path', '?')} (unreadable)"
    if model and model.get("model_config"):
        name += f" from model config {model['model_config']}"
    line = f"model {name}; backend {backend.get('kind') or 'not started'} ({what})"
    if backend.get("reason"):
        line += f"; {backend['reason']}"
    return line


def build_report(results: Sequence[GateResult], model: dict[str, Any] | None,
                 backend: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "tool": {"name": "pytest-tfserving", "version": __version__},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "machine": platform.machine()},
        "model": model or {},
        "backend": backend,
        "settings": settings,
        "passed": all(r.passed or r.skipped for r in results),
        "gates": [r.as_dict() for r in results],
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
