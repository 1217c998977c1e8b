"""Reads GateResults and presents them: terminal table and JSON. Never decides a verdict."""

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


def fmt_mapping(mapping: dict[str, Any], limit: int = 60) -> str:
    text = " ".join(f"{k}={_fmt_value(v)}" for k, v in mapping.items()
                    if not isinstance(v, (dict, list)) or len(str(v)) < 40)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_target(target: str) -> str:
    """A test node id shortened to its test name for the table (the JSON keeps the node id)."""
    return target.rsplit("::", 1)[-1] if "::" in target else target


def gate_table(results: Sequence[GateResult], width: int = 120) -> list[str]:
    """Rows: gate, verdict, threshold, measured. Long values are cut; the JSON has them whole."""
    names = [r.name + (f" [{short_target(r.target)}]" if r.target else "") for r in results]
    name_width = max([4, *map(len, names)])
    col = max(24, (width - name_width - 13) // 2)
    rows = [("gate", "verdict", "threshold", "measured")]
    for name, r in zip(names, results):
        rows.append((name, r.verdict, fmt_mapping(r.threshold, col), fmt_mapping(r.measured, col)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def header_line(backend: dict[str, Any], model: dict[str, Any] | None) -> str:
    what = backend.get("image_or_binary") or "-"
    name = f"{model['name']} v{model['version']}" if model else "(no model)"
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
