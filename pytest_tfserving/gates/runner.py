"""Run one gate for a test item: build its context, record the result whatever happens (a
crash or an interrupt is recorded too), and turn the verdict into a test outcome."""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any

import pytest

from pytest_tfserving.errors import TFServingError
from pytest_tfserving.gates.context import GateContext
from pytest_tfserving.gates.registry import gate_by_name
from pytest_tfserving.gates.result import GateResult
from pytest_tfserving.session import get_session
from pytest_tfserving.terminal import terminal_progress


def run_gate(name: str, request: pytest.FixtureRequest, keywords: dict[str, Any],
             origin: str, target: str = "", image: str = "") -> GateResult:
    session = get_session(request.config)
    ctx = GateContext(session=session, gate=gate_by_name(name), keywords=dict(keywords),
                      origin=origin, image=image, progress=terminal_progress(request.config),
                      fixture=request.getfixturevalue)
    try:
        ctx.check_keywords()
        result = ctx.gate.load()(ctx)
    except TFServingError as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        result = GateResult(name=name, passed=False, message=f"{exc}\n{notes}".rstrip(),
                            measured={"error": type(exc).__name__})
    except Exception as exc:  # a bug or an unexpected failure: the gate did not pass
        result = crashed(name, exc)
    except BaseException as exc:  # Ctrl-C, pytest.exit: recorded, then passed on
        session.record(_targeted(interrupted(name, exc), target))
        raise
    result = _targeted(result, target)
    session.record(result)
    record_properties(request, result)
    if result.skipped:
        pytest.skip(f"gate {name}: {result.message}")
    if not result.passed:
        verdict = "FAILED" if result.verdict == "FAIL" else result.verdict
        pytest.fail(f"gate {name} {verdict}: {result.message}", pytrace=False)
    return result


def _targeted(result: GateResult, target: str) -> GateResult:
    return dataclasses.replace(result, target=target) if target and not result.target \
        else result


def crashed(name: str, exc: BaseException) -> GateResult:
    """A gate that raised something it should not have: FAIL, with the error and where."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    return GateResult(name=name, passed=False,
                      message=f"the gate crashed with {type(exc).__name__}: {exc}{at}; it did "
                              "not run to a verdict, so the release gate cannot pass",
                      measured={"error": type(exc).__name__})


def interrupted(name: str, exc: BaseException) -> GateResult:
    return GateResult(name=name, passed=False,
                      message=f"interrupted ({type(exc).__name__}) before a verdict",
                      measured={"error": "interrupted"})


def not_run(name: str, target: str) -> GateResult:
    return GateResult(name=name, passed=False, target=target,
                      message="selected but never ran (the run stopped before it: -x, "
                              "--maxfail, an interrupt or a crash); the release gate cannot "
                              "pass without it",
                      measured={"error": "not run"})


def record_properties(request: pytest.FixtureRequest, result: GateResult) -> None:
    """The verdict, thresholds and measured figures as JUnit XML properties of the test."""
    record = request.node.user_properties
    record.append(("tfs_gate", result.name))
    record.append(("tfs_verdict", result.verdict))
    for prefix, values in (("threshold", result.threshold), ("measured", result.measured)):
        for key, value in values.items():
            if isinstance(value, (int, float, str, bool)):
                record.append((f"tfs_{prefix}_{key}", value))
