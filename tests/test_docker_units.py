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
from pytest_tfserving.launchers import docker as docker_backend
from pytest_tfserving.launchers import docker_engine
from pytest_tfserving.launchers.backend_settings import (
    DEFAULT_IMAGE,
    BackendSettings,
    parse_env_pair,
    parse_host_port,
    parse_memory,
    parse_rest_address,
)
from pytest_tfserving.launchers.select import choose_backend


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
    assert docker_engine.owner_alive(docker_engine.owner_labels())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    labels = {**docker_engine.owner_labels(), docker_engine.LABEL_PID: str(child.pid)}
    labels.pop(docker_engine.LABEL_PID_START, None)
    child.wait()
    assert not docker_engine.owner_alive(labels)


def test_a_reused_pid_is_not_the_owner():
    labels = {**docker_engine.owner_labels(), docker_engine.LABEL_PID_START: "1"}
    assert not docker_engine.owner_alive(labels)


def test_containers_of_another_host_are_never_judged_dead():
    labels = {docker_engine.LABEL_HOST: socket.gethostname() + "-elsewhere",
              docker_engine.LABEL_PID: "999999999"}
    assert docker_engine.owner_alive(labels)


def test_no_engine_gives_a_fast_reason_and_an_error_that_says_how_to_start_it(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    started = time.monotonic()
    reason = docker_engine.unusable_reason(BackendSettings())
    assert time.monotonic() - started < 5
    assert reason is not None and "no Docker engine answers at unix:///nonexistent" in reason
    with pytest.raises(ServerStartError) as info:
        docker_engine.connect(2)
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
     "Invalid value '/nonexistent/tensorflow_model_server' for --tfs-binary*not an executable "
     "file"),
])
def test_bad_backend_options_are_usage_errors(pytester, args, expected):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{expected}*"])


def test_model_config_container_mounts_each_base_dir_and_serves_a_rewritten_copy(
        tmp_path, ctr_direct, tf1_linear):
    """--tfs-model-config in a container: each model's base dir read-only at /models/<name>,
    --model_config_file naming a copy (in /tfs-config) whose base paths are those mounts, the
    policy and labels untouched; a staged slot (an INT8 copy, a baseline) mounts its one
    version dir; a single model is mounted as before."""
    import dataclasses

    from pytest_tfserving.bundled_server.model_config import parse_model_config
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.launchers.deployment import load_deployment

    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'linear' base_path: '{tf1_linear}' model_platform: 'tensorflow' }}\n"
        f"  config {{ name: 'ctr' base_path: '{ctr_direct}' model_platform: 'tensorflow'\n"
        "           model_version_policy { specific { versions: 1 } }\n"
        "           version_labels { key: 'stable' value: 1 } }\n}\n")
    deployment = load_deployment(config, "ctr", None)
    serve = ServeConfig(model_name="ctr", version_dir=deployment.version_dir, version=1,
                        deployment=deployment)
    files = tmp_path / "files"
    spec = docker_backend.container_spec(serve, files)
    assert spec.command[-1] == "--model_config_file=/tfs-config/models.config"
    assert not any(f.startswith(("--model_name", "--model_base_path")) for f in spec.command)
    assert sorted(spec.binds) == sorted([
        f"{files}:{docker_backend.CONFIG_MOUNT}:ro",
        f"{tf1_linear.resolve()}:/models/linear:ro", f"{ctr_direct.resolve()}:/models/ctr:ro"])
    linear, ctr = parse_model_config((files / "models.config").read_text(), "served copy")
    assert (str(linear.base_path), str(ctr.base_path)) == ("/models/linear", "/models/ctr")
    assert ctr.policy.versions == (1,) and ctr.labels == {"stable": 1}
    assert spec.host_paths == {"linear": str(tf1_linear.resolve()),
                               "ctr": str(ctr_direct.resolve())}

    int8 = dataclasses.replace(serve, version_dir=tmp_path / "int8" / "ctr" / "1")
    staged = docker_backend.container_spec(int8, tmp_path / "files-int8")
    assert f"{int8.version_dir.resolve()}:/models/ctr/1:ro" in staged.binds
    assert f"{ctr_direct.resolve()}:/models/ctr:ro" not in staged.binds

    single = docker_backend.container_spec(
        ServeConfig(model_name="ctr", version_dir=ctr_direct / "1", version=1),
        tmp_path / "files-single")
    assert single.binds[0] == f"{(ctr_direct / '1').resolve()}:/models/ctr/1:ro"
    assert not any("model_config_file" in f for f in single.command)


class _BusyContainer:
    """A leftover the engine is still busy with: removal refused ``busy`` times (HTTP 409)."""

    name = "tfs-leftover"

    def __init__(self, busy: int, gone: bool = False) -> None:
        self.busy, self.gone, self.removed = busy, gone, False

    def remove(self, force: bool) -> None:
        from docker.errors import APIError, NotFound

        if self.gone:
            raise NotFound("No such container: tfs-leftover")
        if self.busy:
            self.busy -= 1
            raise APIError("409 Conflict: removal of container tfs-leftover is already in progress")
        self.removed = force


def test_a_leftover_the_engine_is_busy_with_is_asked_again_until_removed():
    container = _BusyContainer(busy=2)
    assert docker_engine.remove_leftover(container)
    assert container.removed


def test_a_leftover_another_run_removed_first_is_not_counted(caplog):
    assert not docker_engine.remove_leftover(_BusyContainer(busy=0, gone=True))
    container = _BusyContainer(busy=9)
    assert not docker_engine.remove_leftover(container, tries=2)
    assert "docker rm -f tfs-leftover" in caplog.text


def test_once_per_process_runs_the_work_once_and_every_caller_gets_its_result():
    from pytest_tfserving.once import OncePerProcess

    calls: list[str] = []
    once = OncePerProcess(lambda who: calls.append(who) or [who])
    assert once("first") == ["first"]
    assert once("second") == ["first"]
    assert calls == ["first"]
