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
    several = len(settings.serving.images) > 1 and session.backend() == "docker"
    images = settings.serving.images if several else ("",)
    cases: list[tuple[str, str]] = []
    ids: list[str] = []
    for gate in GATES:
        if settings.gates != "all" and gate.name not in settings.gates:
            continue
        if settings.gates == "all" and not gate.default_on:  # e.g. tune: only when asked
            continue
        for image in images if gate.needs_server else ("",):
            cases.append((gate.name, image))
            ids.append(f"{gate.name}@{image}" if image else gate.name)
    metafunc.parametrize(("gate_name", "image"), cases, ids=ids)


def test_gate(gate_name: str, image: str, request: pytest.FixtureRequest) -> None:
    from pytest_tfserving.gates.runner import run_gate

    run_gate(gate_name, request, overrides={}, origin="default suite", target=image,
             image=image)
