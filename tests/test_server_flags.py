"""The bundled server's command line (pure parsing) and its exit code 2 on a bad one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_tfserving.bundled_server.flag_table import (
    FlagError,
    parse_flags,
    parse_monitoring_config,
)


def test_flags_both_forms_and_booleans() -> None:
    f = parse_flags(["--port", "9000", "--rest_api_port=9001", "--model_base_path=/m",
                     "--enable_batching", "--enable_model_warmup=false",
                     "--num_request_iterations_for_warmup", "3", "--bind_address=127.0.0.1"])
    assert (f.port, f.rest_api_port, f.model_base_path) == (9000, 9001, "/m")
    assert f.enable_batching is True and f.enable_model_warmup is False
    assert f.num_request_iterations_for_warmup == 3 and f.bind_address == "127.0.0.1"


def test_flag_defaults_are_tf_servings() -> None:
    f = parse_flags(["--model_base_path=/m"])
    assert (f.port, f.rest_api_port, f.model_name) == (8500, 0, "default")
    assert f.enable_model_warmup is True and f.enable_batching is False
    assert f.bind_address == "0.0.0.0"


@pytest.mark.parametrize("argv, needle", [
    (["--model_base_path=/m", "--no_such_flag=1"], "Unknown flag --no_such_flag"),
    (["--model_base_path=/m", "--port=abc"], "Invalid value 'abc' for --port"),
    (["--model_base_path=/m", "--enable_batching=maybe"], "--enable_batching"),
    (["--port=1"], "Missing --model_base_path"),
])
def test_bad_flags_name_the_flag_and_list_supported(argv: list[str], needle: str) -> None:
    with pytest.raises(FlagError) as info:
        parse_flags(argv)
    assert needle in str(info.value)
    assert "Supported flags: --port, --grpc_socket_path, --rest_api_port" in str(info.value)


def test_monitoring_config() -> None:
    cfg = parse_monitoring_config(
        'prometheus_config {\n  enable: true,\n  path: "/metrics/x"\n}\n', "m.txt")
    assert cfg.prometheus_enabled and cfg.prometheus_path == "/metrics/x"
    assert not parse_monitoring_config("", "m.txt").prometheus_enabled
    with pytest.raises(FlagError, match="prometheus_config"):
        parse_monitoring_config("garbage", "m.txt")


def test_unknown_flag_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_tfserving.bundled_server", "--model_base_path=/m",
         "--bogus=1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "Unknown flag --bogus" in lines[0] and "--model_base_path" in lines[0]


def test_every_tf_serving_flag_is_parsed_with_its_default() -> None:
    from dataclasses import fields

    from pytest_tfserving.bundled_server.flag_table import (
        FLAG_TABLE,
        TF_SERVING_FLAG_COUNT,
        ServerFlags,
    )

    ours = {"bind_address"}
    assert len(set(FLAG_TABLE) - ours) == TF_SERVING_FLAG_COUNT
    types = {f.name: f.type for f in fields(ServerFlags)}
    parsed = parse_flags(["--model_base_path=/m"])
    for name, spec in FLAG_TABLE.items():
        assert types[name] == spec.kind, name
        if name != "model_base_path":
            assert getattr(parsed, name) == spec.default, name
    assert parsed.max_num_load_retries == 5
    assert parsed.load_retry_interval_micros == 60_000_000
    assert parsed.file_system_poll_wait_seconds == 1
    assert parsed.model_config_file_poll_wait_seconds == 0


def test_thread_and_warmup_flags_resolve_as_tf_serving() -> None:
    f = parse_flags(["--model_base_path=/m", "--tensorflow_session_parallelism=3"])
    assert f.intra_inter_threads == (3, 3) and f.warmup_iterations == 1
    f = parse_flags(["--model_base_path=/m", "--tensorflow_intra_op_parallelism=2",
                     "--tensorflow_inter_op_parallelism=1", "--saved_model_tags=serve,gpu"])
    assert f.intra_inter_threads == (2, 1) and f.tags == ("serve", "gpu")
    assert parse_flags(["--model_config_file=/c"]).model_base_path == ""
    with pytest.raises(FlagError, match="--tensorflow_session_parallelism"):
        parse_flags(["--model_base_path=/m", "--tensorflow_session_parallelism=1",
                     "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"])


def test_readme_flag_table_is_generated_from_the_flag_table() -> None:
    from server_helpers import ROOT

    from pytest_tfserving.bundled_server.flag_table import FLAG_TABLE, markdown_table

    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- flags:begin -->\n", 1)[1].split("\n<!-- flags:end -->", 1)[0]
    assert block == markdown_table(), \
        "regenerate: python -m pytest_tfserving.bundled_server.flag_table"
    for name in FLAG_TABLE:
        assert f"`--{name}`" in block
