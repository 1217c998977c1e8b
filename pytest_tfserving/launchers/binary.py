"""``tensorflow_model_server`` from PATH or ``--tfs-binary`` as a local process.

Same flags as every launcher (launchers/server_flags.py), its own process group, log captured to
a file, ``--tfs-env`` in its environment (e.g. ``LD_PRELOAD`` for tcmalloc).
"""

from __future__ import annotations

import os
import shutil

from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.process import ProcessLauncher

BINARY_NAME = "tensorflow_model_server"


def binary_on_path() -> str | None:
    """The tensorflow_model_server on PATH, if any."""
    return shutil.which(BINARY_NAME)

class BinaryLauncher(ProcessLauncher):
    kind = "binary"
    display_name = "tensorflow_model_server"

    def __init__(self, config: ServeConfig, settings: BackendSettings | None = None) -> None:
        settings = settings or BackendSettings()
        super().__init__(config, env=settings.env_dict())
        self.binary: str | None = str(settings.binary) if settings.binary else None

    def command_prefix(self) -> list[str]:
        binary = self.binary or binary_on_path()
        if not binary:
            raise ServerStartError(
                "tensorflow_model_server is not on PATH "
                f"(PATH={os.environ.get('PATH', '')}). Install TF Serving, pass "
                "--tfs-binary=PATH, or use --tfs-backend=docker or --tfs-backend=bundled."
            )
        return [os.path.abspath(binary)]
