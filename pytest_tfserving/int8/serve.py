"""Serve the INT8 model: a staged copy of the version dir with ``model.tflite`` beside
``saved_model.pb``, served with ``--prefer_tflite_model`` (TF Serving then loads the TFLite
flatbuffer instead of the SavedModel).

The copy keeps the original untouched (TF Serving reads the flatbuffer from the version dir
itself) and is removed when the session closes.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.staging import make_staging_dir

if TYPE_CHECKING:
    from pytest_tfserving.int8.int8_options import Int8Options
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.session import TFSSession

TFLITE_NAME = "model.tflite"
_CACHE_KEY = "int8:serve_config"


def stage_int8_version(version_dir: Path, version: int, model_name: str, tflite: bytes,
                       root: Path) -> Path:
    """Copy ``version_dir`` to ``root/model_name/<version dir name>`` and write
    ``model.tflite`` there. The version dir keeps its name when it is all digits (TF Serving's
    ``00000123`` stays ``00000123``: the log lines and warmup paths then name what was gated)."""
    if not tflite[4:8] == b"TFL3":
        raise ConfigError(f"The INT8 model is not a TFLite flatbuffer (file identifier "
                          f"{tflite[4:8]!r}, expected b'TFL3'); pass a .tflite file.")
    name = version_dir.name if version_dir.name.isdigit() else str(version)
    staged = root / model_name / name
    shutil.copytree(version_dir, staged, ignore=shutil.ignore_patterns(TFLITE_NAME))
    (staged / TFLITE_NAME).write_bytes(tflite)
    return staged


def int8_tflite_bytes(session: TFSSession, int8: Int8Options) -> bytes:
    """--tfs-int8-model, else full-integer PTQ of the default signature, calibrated like the
    gate (eval data, else warmup records, else synthesized inputs)."""
    from pytest_tfserving.int8.eval_data import default_eval_data, validate
    from pytest_tfserving.int8.quantize import convert, representative_samples

    artifact = int8.int8_model
    if artifact is not None:
        try:
            return Path(artifact).read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read --tfs-int8-model {str(artifact)!r}: {exc}.") from None
    model = session.model()
    signature = model.signature(int8.signature or "serving_default")
    data = default_eval_data(int8)
    if data is not None:
        data = validate(data, signature)
    samples, _ = representative_samples(int8.calibration, int8.samples, signature,
                                        model.version_dir, data)
    return convert(model.version_dir, signature, representative=samples)


def int8_serve_config(session: TFSSession, int8: Int8Options) -> ServeConfig:
    """The ServeConfig that serves the INT8 model (staged once per session)."""
    cached = session.cache.get(_CACHE_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    model = session.model()
    tflite = int8_tflite_bytes(session, int8)
    root = make_staging_dir("tfs-int8-serve-")
    session.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    staged = stage_int8_version(model.version_dir, model.version, model.name, tflite, root)
    serve = dataclasses.replace(session.float_serve_config(), version_dir=staged,
                                prefer_tflite=True, label="int8")
    session.cache[_CACHE_KEY] = serve
    return serve


