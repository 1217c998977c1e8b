"""Run one gate for a test item: record the result, turn the verdict into a test outcome."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_tfserving.errors import TFServingError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.registry import gate_by_name
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.session import get_session


def run_gate(name: str, request: pytest.FixtureRequest, overrides: dict[str, Any],
             origin: str, target: str = "", image: str = "") -> GateResult:
    session = get_session(request.config)
    gate = gate_by_name(name)
    ctx = GateContext(session=session, config=request.config, request=request,
                      overrides=dict(overrides), origin=origin, image=image)
    try:
        result = gate.load()(ctx)
    except TFServingError as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        result = GateResult(name=name, passed=False, message=f"{exc}\n{notes}".rstrip(),
                            measured={"error": type(exc).__name__})
    if target and not result.target:
        result = GateResult(**{**result.__dict__, "target": target})
    session.record(result)
    if result.skipped:
        pytest.skip(f"gate {name}: {result.message}")
    if not result.passed:
        pytest.fail(f"gate {name} FAILED: {result.message}", pytrace=False)
    return result
