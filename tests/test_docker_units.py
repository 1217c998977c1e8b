"""Pure parts of the docker/binary/remote backends: parsers, ownership of labelled containers,
the engine probe's answer when no engine is there. No Docker engine needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.serving import docker as docker_backend
from pytest_tfserving.serving.backend_settings import (
    DEFAULT_IMAGE,
    BackendSettings,
    parse_env_pair,
    parse_host_port,
    parse_memory,
    parse_rest_address,
)
from pytest_tfserving.serving.select import choose_backend


def test_parsers_accept_the_documented_forms():
    assert parse_memory("2G") == "2g"
    assert parse_memory("512m") == "512m"
    assert parse_env_pair("LD_PRELOAD=/usr/lib/libtcmalloc.so.4") == (
        "LD_PRELOAD", "/usr/lib/libtcmalloc.so.4")
    assert parse_env_pair("EMPTY=") == ("EMPTY", "")
    assert parse_host_port("tfs.staging:8500") == "tfs.staging:8500"
    assert parse_host_port("grpc://10.0.0.1:8500") == "10.0.0.1:8500"
    assert parse_rest_address("tfs.staging:8501") == "http://tfs.staging:8501"
    assert parse_rest_address("https://tfs:8501/") == "https://tfs:8501"


@pytest.mark.parametrize("parser, raw", [
    (parse_memory, "lots"), (parse_memory, "2gb"), (parse_env_pair, "NOEQUALS"),
    (parse_env_pair, "1BAD=x"), (parse_host_port, "tfs.staging"),
    (parse_host_port, "tfs:99999"), (parse_host_port, ":8500"),
])
def test_parsers_reject_bad_values_with_a_reason(parser, raw):
    with pytest.raises(ValueError, match="expected"):
        parser(raw)


def test_default_image_is_a_pinned_official_tag():
    repository, _, tag = DEFAULT_IMAGE.partition(":")
    assert repository == "tensorflow/serving"
    assert tag and tag != "latest"
    assert BackendSettings().image == DEFAULT_IMAGE


def test_owner_alive_for_this_process_and_dead_for_an_exited_one():
    assert docker_backend.owner_alive(docker_backend.owner_labels())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    labels = {**docker_backend.owner_labels(), docker_backend.LABEL_PID: str(child.pid)}
    labels.pop(docker_backend.LABEL_PID_START, None)
    child.wait()
    assert not docker_backend.owner_alive(labels)


def test_a_reused_pid_is_not_the_owner():
    labels = {**docker_backend.owner_labels(), docker_backend.LABEL_PID_START: "1"}
    assert not docker_backend.owner_alive(labels)


def test_containers_of_another_host_are_never_judged_dead():
    labels = {docker_backend.LABEL_HOST: socket.gethostname() + "-elsewhere",
              docker_backend.LABEL_PID: "999999999"}
    assert docker_backend.owner_alive(labels)


def test_no_engine_gives_a_fast_reason_and_an_error_that_says_how_to_start_it(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    started = time.monotonic()
    reason = docker_backend.unusable_reason(BackendSettings())
    assert time.monotonic() - started < 5
    assert reason is not None and "no Docker engine answers at unix:///nonexistent" in reason
    with pytest.raises(ServerStartError) as info:
        docker_backend.connect(2)
    message = str(info.value)
    assert "unix:///nonexistent/docker.sock" in message
    assert "dockerd" in message and "--tfs-backend=bundled" in message


def test_auto_without_engine_or_binary_falls_back_to_bundled(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path))
    kind, why = choose_backend("auto", BackendSettings())
    assert kind == "bundled"
    assert "no Docker (no Docker engine answers" in why and "bundled" in why


def test_auto_without_engine_picks_the_binary_on_path(monkeypatch, tmp_path):
    shim = tmp_path / "tensorflow_model_server"
    shim.write_text("#!/bin/sh\nexit 0\n")
    shim.chmod(0o755)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    kind, why = choose_backend("auto", BackendSettings())
    assert kind == "binary"
    assert "tensorflow_model_server on PATH" in why


@pytest.mark.parametrize("args, expected", [
    (["--tfs-memory=lots"], "Invalid value 'lots' for --tfs-memory from command line"),
    (["--tfs-env=NOEQUALS"], "Invalid value 'NOEQUALS' for --tfs-env from command line"),
    (["--tfs-pull=sometimes"], "expected one of never, missing, always"),
    (["--tfs-binary=/nonexistent/tensorflow_model_server"],
     "--tfs-binary=/nonexistent/tensorflow_model_server is not an executable file"),
])
def test_bad_backend_options_are_usage_errors(pytester, args, expected):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{expected}*"])
