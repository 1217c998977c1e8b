"""The default gate suite: one test item per built-in gate, collected when --tfs-model is set.

With several ``--tfs-image`` values, every gate that needs a server runs once per image (as TFX
InfraValidator validates several serving tags); static gates run once. This module is collected
by the plugin (not by file discovery) under the node id ``tfs-gates``.
"""

from __future__ import annotations

import pytest

from pytest_tfserving.session import get_session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_name" not in metafunc.fixturenames:
        return
    from pytest_tfserving.gates.registry import GATES

    session = get_session(metafunc.config)
    settings = session.settings
    several = len(settings.backend.images) > 1 and session.backend() == "docker"
    images = settings.backend.images if several else ("",)
    chosen = settings.core.gates
    cases: list[tuple[str, str]] = []
    ids: list[str] = []
    for gate in GATES:
        if (chosen == "all" and not gate.in_default_suite and not gate.switched_on(settings)) \
                or (chosen != "all" and gate.name not in chosen):
            continue
        for image in images if gate.needs_server else ("",):
            cases.append((gate.name, image))
            ids.append(f"{gate.name}@{image}" if image else gate.name)
    metafunc.parametrize(("gate_name", "image"), cases, ids=ids)


def test_gate(gate_name: str, image: str, request: pytest.FixtureRequest) -> None:
    from pytest_tfserving.gates.runner import run_gate

    run_gate(gate_name, request, keywords={}, origin="default suite", target=image,
             image=image)
