"""Cheap probe: can the docker backend run here? (Extended by the docker launcher work.)"""

from __future__ import annotations


def usable_reason() -> str | None:
    """None when Docker can serve the gate; else a short reason why not."""
    try:
        from pytest_tfserving.serving import docker as docker_launcher
    except ImportError:
        return "docker backend not available"
    reason: str | None = docker_launcher.unusable_reason()
    return reason
