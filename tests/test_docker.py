"""The docker backend against a real Docker engine and the locally built test image, which
follows the official tensorflow/serving contract (scripts/build_test_image.sh builds it; CI runs
scripts/start_dockerd.sh first). Skipped with the reason when no engine answers or the image is
missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ServerStartError
from pytest_tfserving.launchers import docker as docker_backend
from pytest_tfserving.launchers import docker_engine
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.launchers.base import ServeConfig

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("docker")]

TEST_IMAGE = os.environ.get("TFS_TEST_IMAGE", "pytest-tfserving/tf-serving-test:latest")
DOCKER_ARGS = ["--tfs-backend=docker", f"--tfs-image={TEST_IMAGE}", "--tfs-pull=never"]


@pytest.fixture(scope="module")
def engine():
    reason = docker_engine.unusable_reason(BackendSettings(images=(TEST_IMAGE,), pull="never"))
    if reason is not None:
        pytest.skip(f"docker tests need a Docker engine and image {TEST_IMAGE}: {reason}. Run "
                    "scripts/start_dockerd.sh, then scripts/build_test_image.sh")
    client = docker_engine.connect()
    yield client
    client.close()


def containers_of(client, **labels: str) -> list:
    filters = [f"{key}={value}" for key, value in labels.items()] or [docker_engine.LABEL_SESSION]
    return client.containers.list(all=True, filters={"label": filters})


CONTRACT_TEST = '''
import json, os
import numpy as np
import docker
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.predict_requests import synthesize_inputs
from pytest_tfserving.launchers.bundled import BundledLauncher


def test_container_contract_and_same_predictions_as_bundled(tfs_server, tfs_model):
    name = tfs_server.endpoint.extra["container"]
    attrs = docker.from_env().containers.get(name).attrs
    signature = tfs_model.signature("serving_default")
    inputs = synthesize_inputs(signature, batch_size=8, seed=3)
    served = tfs_server.client().predict(inputs)
    config = tfs_server.config
    bundled = BundledLauncher(config)
    try:
        endpoint = bundled.start(Deadline.after(120))
        from pytest_tfserving.client import TFServingClient
        with TFServingClient(endpoint.grpc_address, config.model_name) as client:
            reference = client.predict(inputs)
    finally:
        bundled.cleanup()
    assert sorted(served) == sorted(reference)
    for key in served:
        np.testing.assert_allclose(served[key], reference[key], rtol=1e-6, atol=1e-7)
    with open(os.environ["TFS_CONTRACT_OUT"], "w") as out:
        json.dump({"name": name, "mounts": attrs["Mounts"],
                   "ports": attrs["HostConfig"]["PortBindings"],
                   "privileged": attrs["HostConfig"]["Privileged"],
                   "network_mode": attrs["HostConfig"]["NetworkMode"],
                   "nano_cpus": attrs["HostConfig"]["NanoCpus"],
                   "memory": attrs["HostConfig"]["Memory"],
                   "env": attrs["Config"]["Env"], "args": attrs["Args"],
                   "labels": attrs["Config"]["Labels"],
                   "grpc": tfs_server.grpc_address, "outputs": sorted(served)}, out)
'''


def test_default_suite_passes_in_a_container_that_follows_the_contract(
        pytester, engine, ctr_direct, monkeypatch):
    contract = pytester.path / "contract.json"
    report = pytester.path / "report.json"
    monkeypatch.setenv("TFS_CONTRACT_OUT", str(contract))
    pytester.makepyfile(test_contract=CONTRACT_TEST)
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", *DOCKER_ARGS, "--tfs-cpus=2", "--tfs-memory=6g",
        "--tfs-env=TFS_MARK=hello", f"--tfs-report={report}",
        # The SLA gate measures the container; the bar is low because this test checks the
        # backend, not the speed of a 2-core machine shared with other jobs.
        "--tfs-sla-p99-ms=1000", "--tfs-sla-min-qps=50", "--tfs-sla-max-error-rate=0.05",
        "--tfs-sla-confidence=0.5")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("error", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 2
    result.stdout.fnmatch_lines([f"*backend docker ({TEST_IMAGE} (id *))*",
                                 "*release gate PASSED*"])

    seen = json.loads(contract.read_text())
    mounts = {m["Destination"]: m for m in seen["mounts"]}
    model_mount = mounts["/models/ctr_direct/1"]
    assert model_mount["RW"] is False and Path(model_mount["Source"]) == ctr_direct / "1"
    assert mounts[docker_backend.CONFIG_MOUNT]["RW"] is False
    for port in ("8500/tcp", "8501/tcp"):
        assert [b["HostIp"] for b in seen["ports"][port]] == ["127.0.0.1"]
    assert seen["grpc"] == f"127.0.0.1:{seen['ports']['8500/tcp'][0]['HostPort']}"
    assert seen["privileged"] is False and seen["network_mode"] != "host"
    assert seen["nano_cpus"] == 2_000_000_000 and seen["memory"] == 6 * 1024**3
    assert {"MODEL_NAME=ctr_direct", "MODEL_BASE_PATH=/models", "TFS_MARK=hello"} <= set(
        seen["env"])
    assert f"--monitoring_config_file={docker_backend.CONFIG_MOUNT}/monitoring_config.txt" in (
        seen["args"])
    assert seen["labels"][docker_engine.LABEL_SESSION]

    data = json.loads(report.read_text())
    assert data["passed"] is True
    assert data["backend"]["kind"] == "docker"
    assert data["backend"]["image"] == TEST_IMAGE
    assert data["backend"]["image_id"] == engine.images.get(TEST_IMAGE).id
    assert {g["name"] for g in data["gates"]} >= {"serving"}
    # The session is over: its containers are gone.
    assert not containers_of(engine, **{
        docker_engine.LABEL_SESSION: seen["labels"][docker_engine.LABEL_SESSION]})


HOLD_TEST = '''
import time

def test_hold(tfs_server):
    time.sleep(600)
'''


def test_leftover_of_a_killed_run_is_removed_by_the_next_run(pytester, engine, ctr_direct):
    pytester.makepyfile(test_hold=HOLD_TEST)
    killed = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-k", "test_hold",
         f"--tfs-model={ctr_direct}", *DOCKER_ARGS, "test_hold.py"],
        cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        end = time.monotonic() + 180
        leftover = []
        while time.monotonic() < end and not leftover and killed.poll() is None:
            leftover = [c for c in containers_of(engine, **{
                docker_engine.LABEL_PID: str(killed.pid)}) if c.status == "running"]
            time.sleep(1)
        assert leftover, "the held run never had a running container"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    name = leftover[0].name
    engine.containers.get(name)  # SIGKILL left it behind: pytest had no chance to clean up

    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", *DOCKER_ARGS, "--tfs-gates=serving",
        f"--tfs-report={report}", "-k", "gate")
    result.assert_outcomes(passed=1)
    swept = json.loads(report.read_text())["backend"]["swept"]
    left = {c.name: c.status for c in containers_of(engine)}
    assert name in swept, f"swept {swept}; containers now {left}; run said {result.outlines[-30:]}"
    assert name not in left


def _settings(**changes) -> BackendSettings:
    return BackendSettings(**{"images": (TEST_IMAGE,), "pull": "never", **changes})


def _config(version_dir: Path, **changes) -> ServeConfig:
    return ServeConfig(model_name=f"m{uuid.uuid4().hex[:6]}", version_dir=version_dir, version=1,
                       **changes)


def test_missing_image_with_pull_never_names_the_docker_pull_to_run(engine, ctr_direct):
    settings = _settings(images=("pytest-tfserving/no-such-image:0",))
    launcher = docker_backend.DockerLauncher(_config(ctr_direct / "1"), settings)
    with pytest.raises(ServerStartError, match=r"docker pull pytest-tfserving/no-such-image:0"):
        launcher.start(Deadline.after(30))
    assert not containers_of(engine, **{docker_engine.LABEL_SESSION: settings.session_id})


def test_container_that_exits_at_start_fails_with_its_log_and_is_removed(engine, ctr_direct):
    settings = _settings()
    config = _config(ctr_direct / "1", extra_flags=("--no_such_flag=1",))
    launcher = docker_backend.DockerLauncher(config, settings)
    with pytest.raises(ServerStartError, match="exited with code 2") as info:
        launcher.start(Deadline.after(120))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"BEGIN container {launcher.container_name}" in notes
    assert "Unknown flag --no_such_flag" in notes
    assert not containers_of(engine, **{docker_engine.LABEL_SESSION: settings.session_id})


def test_model_the_server_cannot_load_fails_with_the_log_tail(engine, tmp_path):
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    settings = _settings()
    launcher = docker_backend.DockerLauncher(_config(broken), settings)
    with pytest.raises(ServerStartError) as info:
        launcher.start(Deadline.after(120))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "BEGIN container" in notes and "/models/" in notes
    assert not containers_of(engine, **{docker_engine.LABEL_SESSION: settings.session_id})


def test_served_gates_run_once_per_image(pytester, engine, ctr_direct):
    """Repeated --tfs-image: every served gate runs once per image (each in its own container),
    static gates once; the report names the image of each result."""
    second = f"pytest-tfserving/tf-serving-test:second-{uuid.uuid4().hex[:6]}"
    engine.images.get(TEST_IMAGE).tag(second)
    try:
        report = pytester.path / "report.json"
        result = pytester.runpytest_subprocess(
            f"--tfs-model={ctr_direct}", "--tfs-backend=docker", f"--tfs-image={TEST_IMAGE}",
            f"--tfs-image={second}", "--tfs-pull=never", "--tfs-gates=direct_tensor_inputs,serving",
            f"--tfs-report={report}", "-v")
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines([
            "*test_gate?direct_tensor_inputs? PASSED*",
            f"*test_gate?serving@{TEST_IMAGE}? PASSED*",
            f"*test_gate?serving@{second}? PASSED*",
        ])
        data = json.loads(report.read_text())
        targets = [g.get("target", "") for g in data["gates"] if g["name"] == "serving"]
        assert targets == [TEST_IMAGE, second]
        assert [s["image"] for s in data["backend"]["servers"]] == [TEST_IMAGE, second]
    finally:
        engine.images.remove(second)


def test_model_config_is_served_whole_in_a_container(pytester, engine, ctr_direct, tf1_linear):
    """--tfs-model-config on the docker backend: both models served from read-only mounts at
    /models/<name>, the named one gated."""
    config = pytester.path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'linear' base_path: '{tf1_linear}' model_platform: 'tensorflow' }}\n"
        f"  config {{ name: 'ctr' base_path: '{ctr_direct}' model_platform: 'tensorflow' }}\n"
        "}\n")
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model-config={config}", "--tfs-model-name=ctr", *DOCKER_ARGS,
        "--tfs-gates=serving", f"--tfs-report={report}")
    result.assert_outcomes(passed=1)
    data = json.loads(report.read_text())
    assert data["model"]["model_config"] == str(config) and data["model"]["name"] == "ctr"
    assert data["backend"]["model_config_file"] == f"{docker_backend.CONFIG_MOUNT}/models.config"
    served = {m["name"]: m for m in data["backend"]["served_models"]}
    assert served["ctr"]["base_path"] == "/models/ctr"
    assert served["ctr"]["host_path"] == str(ctr_direct.resolve())
    assert served["linear"]["versions"] == [{"version": 1, "state": "AVAILABLE"}]


def test_rollout_swaps_versions_inside_the_container(pytester, engine, ctr_direct):
    """The gate's base dir is mounted into the container; the candidate placed on the host is
    polled, loaded and swapped in by the server in the container, under load."""
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={ctr_direct}", f"--tfs-baseline-model={ctr_direct}", *DOCKER_ARGS,
        "--tfs-gates=rollout", "--tfs-rollout-rate=200", "--tfs-rollout-steady=2",
        "--tfs-sla-confidence=0.5", "--tfs-rollout-max-p99-ratio=200", f"--tfs-report={report}")
    gate = next(g for g in json.loads(report.read_text())["gates"] if g["name"] == "rollout")
    assert gate["verdict"] == "PASS", gate["message"]
    result.assert_outcomes(passed=1)
    phases = gate["details"]["phases"]
    assert phases["before"]["versions"] == {"1": phases["before"]["ok"]}
    assert phases["after"]["versions"] == {"2": phases["after"]["ok"]} and phases["after"]["ok"]
    seen = {(t["version"], t["state"]) for t in gate["details"]["swap"]["transitions"]}
    assert {(2, "AVAILABLE"), (1, "END")} <= seen
    assert gate["details"]["memory"]["source"].startswith("docker stats of tfs-")
    assert gate["details"]["memory"]["both_loaded_peak_mib"] > 0
