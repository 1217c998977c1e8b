"""The default gate suite: one test item per built-in gate, collected when --tfs-model is set.

This module is collected by the plugin (not by file discovery) under the node id ``tfs-gates``.
"""

from __future__ import annotations

import pytest

from pytest_tfserving.session import get_session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_name" in metafunc.fixturenames:
        from pytest_tfserving.gates.registry import GATES

        chosen = get_session(metafunc.config).settings.gates
        names = [g.name for g in GATES if chosen == "all" or g.name in chosen]
        metafunc.parametrize("gate_name", names, ids=names)


def test_gate(gate_name: str, request: pytest.FixtureRequest) -> None:
    from pytest_tfserving.gates.runner import run_gate

    run_gate(gate_name, request, overrides={}, origin="default suite")
