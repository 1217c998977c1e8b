"""The bundled server's entry point: ``python -m pytest_tfserving.bundled_server
--model_base_path=... --port=...``."""

from __future__ import annotations

import os
import sys

from pytest_tfserving.bundled_server.app import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip TF's slow interpreter teardown: the stop is already clean
