"""Serving the INT8 model: staged copy with model.tflite, served with --prefer_tflite_model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.int8.serve import stage_int8_version

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "fixtures" / "models" / "digits"
DIGITS_EVAL = ROOT / "fixtures" / "data" / "digits_eval.npz"


@pytest.mark.skipif(not DIGITS_EVAL.is_file(), reason="fixture models not built")
def test_staged_int8_version_serves_with_prefer_tflite(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from pytest_tfserving.int8.eval_data import load_npz
    from pytest_tfserving.int8.quantize import convert
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.launchers.server_flags import model_server_flags
    from pytest_tfserving.model import inspect_model

    model = inspect_model(DIGITS)
    signature = model.signature("serving_default")
    tflite = convert(model.version_dir, signature,
                     representative=load_npz(DIGITS_EVAL).rows_as_samples(20))
    staged = stage_int8_version(model.version_dir, model.version, model.name, tflite, tmp_path)
    assert staged == tmp_path / "digits" / str(model.version)
    assert (staged / "saved_model.pb").read_bytes() == \
        (model.version_dir / "saved_model.pb").read_bytes()
    assert (staged / "variables").is_dir()
    assert not (model.version_dir / "model.tflite").exists()  # the original stays untouched
    runner = Interpreter(model_path=str(staged / "model.tflite")).get_signature_runner(
        "serving_default")
    out = runner(pixels=np.zeros((2, 64), np.float32))
    assert out["probabilities"].shape == (2, 10)
    config = ServeConfig(model_name="digits", version_dir=staged, version=model.version,
                         prefer_tflite=True)
    flags = model_server_flags(config, 8500, 8501, "/models/digits", str(tmp_path))
    assert "--prefer_tflite_model=true" in flags


def test_stage_rejects_a_file_that_is_not_tflite(tmp_path):
    version_dir = tmp_path / "src" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"not a TFLite flatbuffer.*expected b'TFL3'"):
        stage_int8_version(version_dir, 1, "m", b"\x00" * 16, tmp_path / "out")


def test_int8_serve_runs_the_served_gates_on_the_tflite_model(pytester):
    """--tfs-int8-serve: the bundled server loads model.tflite with LiteRT
    (--prefer_tflite_model) and the serving gate compares it with LiteRT in-process."""
    pytester.makepyfile(
        """
        import numpy as np

        def test_served_is_the_int8_model(tfs_server, tfs_client):
            assert tfs_server.config.prefer_tflite
            assert "Reading TFLite model from" in tfs_server.logs()
            out = tfs_client.predict({"pixels": np.zeros((2, 64), np.float32)})
            assert out["probabilities"].shape == (2, 10)
        """
    )
    result = pytester.runpytest_subprocess(
        f"--tfs-model={DIGITS}", f"--tfs-eval-data={DIGITS_EVAL}", "--tfs-int8-serve=true",
        "--tfs-backend=bundled", "--tfs-gates=serving", "--tfs-signatures=serving_default",
        "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["serving*PASS*", "*reference=LiteRT model.tflite*"])
