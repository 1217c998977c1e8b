"""Cheap probe: can the docker backend run here? (Extended by the docker launcher work.)"""

from __future__ import annotations

from pytest_tfserving.launchers.backend_settings import BackendSettings


def usable_reason(settings: BackendSettings | None = None) -> str | None:
    """None when Docker can serve the gate; else a short reason why not."""
    try:
        from pytest_tfserving.launchers import docker_engine
    except ImportError:
        return "docker backend not available"
    reason: str | None = docker_engine.unusable_reason(settings or BackendSettings())
    return reason
