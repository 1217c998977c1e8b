"""The bundled TF-Serving-compatible server (``python -m pytest_tfserving.bundled_server``)."""

from __future__ import annotations

import sys

from pytest_tfserving.launchers.process import ProcessLauncher


class BundledLauncher(ProcessLauncher):
    """The bundled server as a local process."""

    kind = "bundled"
    display_name = "bundled server"

    def command_prefix(self) -> list[str]:
        return [sys.executable, "-m", "pytest_tfserving.bundled_server"]

    def extra_flags(self) -> list[str]:
        return ["--bind_address=127.0.0.1"]

    def image_or_binary(self) -> str:
        return f"{sys.executable} -m pytest_tfserving.bundled_server"
