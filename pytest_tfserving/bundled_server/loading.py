"""How a version dir becomes a servable: the platform's loader with the server's flags.

``tensorflow`` models load into a TF ``Session`` (``--saved_model_tags``, thread flags,
``--tensorflow_session_config_file``); ``tflite`` models, and ``model.tflite`` beside a
SavedModel under ``--prefer_tflite_model``, load into LiteRT. Failures become the status
TF Serving reports for the version.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from pytest_tfserving.bundled_server.flag_table import ServerFlags
from pytest_tfserving.bundled_server.logs import get_logger
from pytest_tfserving.bundled_server.manager import Loader
from pytest_tfserving.bundled_server.model_config import ModelConfig
from pytest_tfserving.bundled_server.servable import LoadOptions, Servable, load_servable
from pytest_tfserving.bundled_server.status import ServingError
from pytest_tfserving.errors import ModelError

TFLITE_FILE = "model.tflite"


def make_loader(flags: ServerFlags, session_config: bytes) -> Loader:
    intra, inter = flags.intra_inter_threads
    options = LoadOptions(tags=flags.tags, intra_op_threads=intra, inter_op_threads=inter,
                          session_config=session_config)

    def load(cfg: ModelConfig, version: int, version_dir: Path) -> Servable:
        log = get_logger()
        tflite = cfg.platform == "tflite" or (
            flags.prefer_tflite_model and (version_dir / TFLITE_FILE).is_file())
        log.info("Reading %s from: %s", "TFLite model" if tflite else "SavedModel", version_dir)
        try:
            if tflite:
                from pytest_tfserving.bundled_server.tflite_servable import load_tflite_servable

                servable = load_tflite_servable(cfg.name, version, version_dir)
            else:
                servable = load_servable(cfg.name, version, version_dir, options)
        except ServingError:
            raise
        except ModelError as exc:
            raise ServingError(grpc.StatusCode.DATA_LOSS, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - TF raises many kinds on a bad SavedModel
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Failed to load SavedModel {version_dir}: "
                               f"{type(exc).__name__}: {exc}") from None
        if not tflite:
            log.info("SavedModel load for tags { %s }; Status: success. Signatures: %s",
                     "; ".join(flags.tags), ", ".join(sorted(servable.signatures)))
        return servable

    return load
