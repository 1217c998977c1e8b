"""``tensorflow_model_server`` from PATH or ``--tfs-binary`` as a local process."""

from __future__ import annotations

from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.serving.process import ProcessLauncher
from pytest_tfserving.serving.select import binary_on_path


class BinaryLauncher(ProcessLauncher):
    kind = "binary"
    display_name = "tensorflow_model_server"
    binary: str | None = None  # set from --tfs-binary by the session

    def command_prefix(self) -> list[str]:
        binary = self.binary or binary_on_path()
        if not binary:
            raise ServerStartError(
                "tensorflow_model_server is not on PATH. Install TF Serving, pass "
                "--tfs-binary=PATH, or use --tfs-backend=docker or --tfs-backend=bundled."
            )
        return [binary]
