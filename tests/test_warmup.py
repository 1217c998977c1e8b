"""Warmup files: validation against a model, making, inspecting, the CLI, the replay log line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_tfserving.cli import main
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import ModelInfo, inspect_model
from pytest_tfserving.tfrecord import read_records, write_records
from pytest_tfserving.warmup_contract import MAX_RECORDS, no_file_lines, parse_replay_lines
from pytest_tfserving.warmup_make import make_warmup_file
from pytest_tfserving.warmup_report import inspect_warmup_file
from pytest_tfserving.warmup_validation import validate_warmup_file


@pytest.fixture(scope="module")
def direct(ctr_direct: Path) -> ModelInfo:
    return inspect_model(ctr_direct)


@pytest.fixture(scope="module")
def strings(ctr_strings: Path) -> ModelInfo:
    return inspect_model(ctr_strings)


@pytest.fixture(scope="module")
def digits_model(digits: Path) -> ModelInfo:
    return inspect_model(digits)


def _logs(path: Path) -> list[Any]:
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r) for r in read_records(path)]


def _write(path: Path, logs: list[Any]) -> Path:
    write_records(path, [log.SerializeToString() for log in logs])
    return path


def _messages(model: ModelInfo, path: Path) -> list[str]:
    return [str(p) for p in validate_warmup_file(model, path)]


# --- static validation --------------------------------------------------------------------

def test_fixture_warmup_file_is_valid_and_summarized(direct: ModelInfo) -> None:
    assert validate_warmup_file(direct) == []
    summary = inspect_warmup_file(direct.warmup_file, direct)
    assert summary.count == 10
    assert summary.kinds() == {"predict_log": 10}
    assert summary.signatures() == {"serving_default": 10}
    assert summary.batch_sizes() == [1, 2, 3, 4, 8, 12, 16, 24, 31, 32]
    assert "dense=float[1,8]" in summary.records[0].describe()


def test_missing_file_fails_with_the_make_command(strings: ModelInfo) -> None:
    [problem] = validate_warmup_file(strings)
    text = str(problem)
    assert f"no warmup file at {strings.warmup_file}" in text
    assert (f"python -m pytest_tfserving warmup make --model {strings.version_dir} "
            "--synthetic 10") in text


def test_garbage_file_is_not_a_tfrecord(direct: ModelInfo, tmp_path: Path) -> None:
    garbage = tmp_path / "warmup"
    garbage.write_bytes(b"this is not a TFRecord file at all, just text\n" * 3)
    [message] = _messages(direct, garbage)
    assert "record 0" in message and "not a TFRecord file" in message
    assert "fails to load the model" in message


def test_tfrecord_of_other_protos_is_reported(direct: ModelInfo, tmp_path: Path) -> None:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].int64_list.value.append(3)
    path = tmp_path / "warmup"
    write_records(path, [example.SerializeToString()] * 2)
    [message] = _messages(direct, path)  # one problem reported for both records
    assert message.startswith("records 0, 1: empty PredictionLog")
    assert "TF Serving skips it and warms nothing" in message


def test_wrong_input_name_names_the_expected_inputs(direct: ModelInfo, tmp_path: Path) -> None:
    logs = _logs(direct.warmup_file)[:2]
    for log in logs:
        inputs = log.predict_log.request.inputs
        inputs["userid"].CopyFrom(inputs["user_id"])
        del inputs["user_id"]
    messages = _messages(direct, _write(tmp_path / "w", logs))
    assert any(m.startswith("records 0, 1: input 'userid' is not an input of signature "
                            "'serving_default'") and "user_id: int64[-1]" in m for m in messages)
    assert any("input user_id: int64[-1] of signature 'serving_default' is missing" in m
               for m in messages)


def _messages_with_input(model: ModelInfo, tmp_path: Path, key: str,
                         values: np.ndarray[Any, Any]) -> list[str]:
    """Validation messages for the model's first warmup record with input ``key`` replaced."""
    from pytest_tfserving.tensors import from_numpy

    logs = _logs(model.warmup_file)[:1]
    tensor = logs[0].predict_log.request.inputs[key]
    tensor.Clear()
    from_numpy(values, tensor)
    return _messages(model, _write(tmp_path / "w", logs))


def test_wrong_dtype_names_both_dtypes(direct: ModelInfo, tmp_path: Path) -> None:
    [message] = _messages_with_input(direct, tmp_path, "dense", np.zeros((1, 8), np.float64))
    assert message.startswith("record 0: input 'dense' of signature 'serving_default' has "
                              "dtype DT_DOUBLE")
    assert "wants DT_FLOAT" in message


def test_wrong_shape_names_the_dim(direct: ModelInfo, tmp_path: Path) -> None:
    [message] = _messages_with_input(direct, tmp_path, "dense", np.zeros((1, 7), np.float32))
    assert "has shape [1, 7] but the signature wants [-1,8] (dim 1 must be 8)" in message


def test_wrong_rank_is_reported(direct: ModelInfo, tmp_path: Path) -> None:
    [message] = _messages_with_input(direct, tmp_path, "user_id", np.zeros((1, 1), np.int64))
    assert "(rank 2) but the signature wants [-1] (rank 1)" in message


def test_unknown_signature_lists_the_real_ones(direct: ModelInfo, tmp_path: Path) -> None:
    logs = _logs(direct.warmup_file)[:1]
    logs[0].predict_log.request.model_spec.signature_name = "predict"
    [message] = _messages(direct, _write(tmp_path / "w", logs))
    assert "signature 'predict' does not exist" in message and "serving_default" in message


def test_too_many_records_fail_at_tf_servings_limit(direct: ModelInfo, tmp_path: Path) -> None:
    [first] = _logs(direct.warmup_file)[:1]
    at_limit = _write(tmp_path / "ok", [first] * MAX_RECORDS)
    assert validate_warmup_file(direct, at_limit) == []
    over = _write(tmp_path / "over", [first] * (MAX_RECORDS + 1))
    [message] = _messages(direct, over)
    assert "holds 1001 records; TF Serving allows at most 1000" in message


def test_session_run_and_empty_records_are_reported(direct: ModelInfo, tmp_path: Path) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    session_run = prediction_log_pb2.PredictionLog()
    session_run.session_run_log.request.feed.add()
    empty = prediction_log_pb2.PredictionLog()
    messages = _messages(direct, _write(tmp_path / "w", [session_run, empty]))
    assert any(m.startswith("record 0: log type 'session_run_log' is not supported")
               for m in messages)
    assert any(m.startswith("record 1: empty PredictionLog") for m in messages)


def test_classify_record_for_a_predict_signature(digits_model: ModelInfo,
                                                 tmp_path: Path) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.classify_log.request.model_spec.signature_name = "serving_default"
    log.classify_log.request.input.example_list.examples.add()
    [message] = _messages(digits_model, _write(tmp_path / "w", [log]))
    assert "signature 'serving_default' has method 'tensorflow/serving/predict'" in message
    assert "classify request" in message


# --- making -------------------------------------------------------------------------------

def test_make_synthetic_for_serialized_example_signature(strings: ModelInfo,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "w"
    count = make_warmup_file(strings, out, synthetic=7, batch_sizes=(1, 4), seed=3)
    assert count == 7
    assert validate_warmup_file(strings, out) == []
    summary = inspect_warmup_file(out)
    assert summary.batch_sizes() == [1, 4]
    assert [r.batch_size for r in summary.records] == [1, 4, 1, 4, 1, 4, 1]
    # Each record's strings are tf.Examples with the features the graph parses.
    from tensorflow.core.example import example_pb2

    raw = _logs(out)[1].predict_log.request.inputs["examples"].string_val[0]
    features = set(example_pb2.Example.FromString(raw).features.feature)
    assert features == {"user_id", "ad_id", "category_id", "dense"}


def test_make_from_npz_uses_the_rows_for_every_kind(digits_model: ModelInfo,
                                                    tmp_path: Path) -> None:
    npz = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "digits_eval.npz"
    out = tmp_path / "w"
    count = make_warmup_file(digits_model, out, from_npz=npz, records=3, batch_sizes=(2,))
    assert count == 9  # 3 records x classify, regress, serving_default
    assert validate_warmup_file(digits_model, out) == []
    summary = inspect_warmup_file(out)
    assert summary.kinds() == {"classify_log": 3, "regress_log": 3, "predict_log": 3}
    pixels = np.load(npz)["pixels"]
    from pytest_tfserving.tensors import to_numpy

    predict = [log for log in _logs(out) if log.WhichOneof("log_type") == "predict_log"]
    np.testing.assert_array_equal(to_numpy(predict[1].predict_log.request.inputs["pixels"]),
                                  pixels[2:4])
    classify = [log for log in _logs(out) if log.WhichOneof("log_type") == "classify_log"]
    first = classify[0].classify_log.request.input.example_list.examples[0]
    np.testing.assert_allclose(first.features.feature["pixels"].float_list.value, pixels[0])


def test_make_from_npz_without_the_inputs_says_which(direct: ModelInfo, tmp_path: Path) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, user_id=np.arange(4))
    with pytest.raises(ConfigError, match=r"lacks array\(s\) \['ad_id', 'category_id', "
                                          r"'dense'\].*it has \['user_id'\]"):
        make_warmup_file(direct, tmp_path / "w", from_npz=npz)


def test_make_refuses_to_overwrite_and_to_exceed_the_limit(direct: ModelInfo,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "w"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        make_warmup_file(direct, out, synthetic=1)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ConfigError, match="1001 exceeds TF Serving's limit of 1000"):
        make_warmup_file(direct, out, synthetic=1001, overwrite=True)
    with pytest.raises(ConfigError, match="exactly one source"):
        make_warmup_file(direct, out, overwrite=True)


# --- the server's log line ----------------------------------------------------------------

def test_replay_line_parsed_through_log_prefixes() -> None:
    text = (
        "2026-11-25 10:00:00.000001: I tensorflow_serving/servables/tensorflow/"
        "saved_model_warmup_util.cc:90] Starting to read warmup data for model at "
        "/models/m/1/assets.extra/tf_serving_warmup_requests with model-warmup-options \n"
        "2026-11-25T10:00:01.123456789Z 2026-11-25 10:00:01.000002: I tensorflow_serving/"
        "servables/tensorflow/saved_model_warmup_util.cc:195] Finished reading warmup data "
        "for model at /models/m/1/assets.extra/tf_serving_warmup_requests. Number of warmup "
        "records read: 10. Elapsed time (microseconds): 53219.\n"
        "I0000 00:00:1795635665.440326 11499 x.py:1] No warmup data file found at "
        "/models/other/1/assets.extra/tf_serving_warmup_requests\n"
    )
    [line] = parse_replay_lines(text)
    assert line.path == "/models/m/1/assets.extra/tf_serving_warmup_requests"
    assert (line.records, line.micros) == (10, 53219)
    assert no_file_lines(text) == ["/models/other/1/assets.extra/tf_serving_warmup_requests"]
    assert parse_replay_lines("Finished reading warmup data for model at x") == []


# --- the command line ---------------------------------------------------------------------

def test_cli_make_then_inspect(ctr_strings: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    assert main(["warmup", "make", "--model", str(ctr_strings), "--synthetic", "3",
                 "--batch-sizes", "1,8", "--out", str(out)]) == 0
    assert f"wrote 3 warmup record(s) to {out}" in capsys.readouterr().out
    assert main(["warmup", "inspect", str(out), "--model", str(ctr_strings)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 3 record(s)" in printed and "batch sizes: [1, 8]" in printed
    assert "valid for model 'ctr_strings' v1" in printed
    assert main(["warmup", "make", "--model", str(ctr_strings), "--synthetic", "3",
                 "--out", str(out)]) == 2
    assert "exists; pass overwrite=True (CLI: --force)" in capsys.readouterr().err


def test_cli_inspect_model_without_file_exits_1(ctr_strings: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warmup", "inspect", str(ctr_strings)]) == 1
    assert "warmup make --model" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(ctr_direct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["warmup", "make", "--model", str(ctr_direct)])
    assert exc.value.code == 2
    assert "one of the arguments --from-npz --synthetic is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["warmup", "make", "--model", str(ctr_direct), "--synthetic", "0"])
    assert "'0' must be >= 1" in capsys.readouterr().err


def test_python_dash_m_entry_point(ctr_direct: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_tfserving", "warmup", "inspect",
                           str(ctr_direct), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"records": 10' in done.stdout and '"problems": []' in done.stdout
