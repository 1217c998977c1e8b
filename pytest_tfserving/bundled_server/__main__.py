"""The bundled server's entry point: ``python -m pytest_tfserving.bundled_server
--model_base_path=... --port=...``."""

from __future__ import annotations

import os
import sys

# TF Serving's release binary is built without oneDNN (.bazelrc: --config=release, not mkl), so
# it runs TF's Eigen kernels; so does this server. The oneDNN kernels also abort the process on
# some malformed inputs where Eigen's answer INVALID_ARGUMENT (measured: a rank-3 image fed to a
# Conv2D, "Check failed: index >= 0 && index < num_total_dims"). Set before TF is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from pytest_tfserving.bundled_server.app import main  # noqa: E402 - after the oneDNN switch

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip TF's slow interpreter teardown: the stop is already clean
