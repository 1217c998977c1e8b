"""``--tfs-model-config``: gate a deployment's ModelServerConfig as it runs.

End to end on the real bundled server (pytester subprocesses): a two-model config is served
whole and the named model is gated; ``--tfs-model`` takes its model's slot; every mistake is a
usage error at session start. Unit tests for the pure parts: choosing the version under gate,
the served copy of the config, the label flag.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pytest_tfserving.bundled_server.model_config import parse_model_config
from pytest_tfserving.core_options import server_arg as parse_server_arg
from pytest_tfserving.deadline import Deadline
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.launchers.base import ServeConfig
from pytest_tfserving.launchers.bundled import BundledLauncher
from pytest_tfserving.launchers.deployment import (
    config_text,
    labels_allowed,
    load_deployment,
    served_models,
)

LABELS_FLAG = "--allow_version_labels_for_unavailable_models"
USAGE_ERROR_BOUND_S = 60.0  # a usage error comes before any server or TensorFlow import


def write_config(path: Path, *models: tuple[str, Path | str, str]) -> Path:
    """A text ModelServerConfig: one ``config { }`` per (name, base_path, extra fields)."""
    entries = "".join(
        f"  config {{\n    name: '{name}'\n    base_path: '{base}'\n"
        f"    model_platform: 'tensorflow'\n    {extra}\n  }}\n"
        for name, base, extra in models)
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


@pytest.fixture
def bases(tmp_path: Path, tf1_linear: Path, ctr_direct: Path) -> dict[str, Path]:
    """Production base dirs: linear/1 (tf1_linear) and ctr/1 + ctr/00000002 (ctr_direct)."""
    linear, ctr = tmp_path / "prod" / "linear", tmp_path / "prod" / "ctr"
    shutil.copytree(tf1_linear / "1", linear / "1")
    shutil.copytree(ctr_direct / "1", ctr / "1")
    shutil.copytree(ctr_direct / "1", ctr / "00000002")
    return {"linear": linear, "ctr": ctr}


# --- end to end on the bundled server ---------------------------------------------------------

USER_TEST = """
from pathlib import Path

import numpy as np


def test_the_whole_config_is_served(tfs_server, tfs_client, tfs_model):
    assert (tfs_model.name, tfs_model.version, tfs_model.version_dir.name) == (
        "ctr", 2, "00000002")
    assert tfs_client.model_name == "ctr"
    assert [s[:2] for s in tfs_client.status(model_name="linear")] == [(1, "AVAILABLE")]
    served = Path(tfs_server.endpoint.extra["model_config_file"]).read_text()
    assert "stable" in served and "{ctr}" in served and "{linear}" in served
    inputs = {{"user_id": np.array([1], np.int64), "ad_id": np.array([2], np.int64),
              "category_id": np.array([3], np.int64), "dense": np.zeros((1, 8), np.float32)}}
    request = tfs_client.predict_request(inputs)
    request.model_spec.version_label = "stable"
    response = tfs_client.prediction.Predict(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("ctr", 2)
"""


@pytest.mark.xdist_group("bundled-e2e")
def test_two_model_config_is_served_whole_and_the_named_model_gated(pytester, bases):
    config = write_config(pytester.path / "models.config",
                          ("linear", bases["linear"], ""),
                          ("ctr", bases["ctr"], "version_labels { key: 'stable' value: 2 }"))
    pytester.makepyfile(USER_TEST.format(ctr=bases["ctr"], linear=bases["linear"]))
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model-config={config}", "--tfs-model-name=ctr", "--tfs-backend=bundled",
        "--tfs-gates=no_string_ops,serving", f"--tfs-server-arg={LABELS_FLAG}",
        f"--tfs-report={report}", "-v", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        f"tfserving: model config {config}, model ctr under gate (version 2 from "
        f"{bases['ctr']}; 2 model(s) served)*",
        "*tfs-gates::test_gate?no_string_ops? PASSED*",
        "*tfs-gates::test_gate?serving? PASSED*",
        f"model ctr v2 from model config {config}; backend bundled*",
        "release gate PASSED",
    ])
    data = json.loads(report.read_text())
    model = data["model"]
    assert (model["name"], model["version"], model["model_config"]) == ("ctr", 2, str(config))
    assert model["path"] == str(bases["ctr"] / "00000002")
    assert model["deployment"]["models"] == ["linear", "ctr"]
    assert model["deployment"]["labels"] == {"stable": 2}
    backend = data["backend"]
    assert backend["kind"] == "bundled"
    assert backend["model_config_file"].endswith("/models.config")
    assert backend["model_config_file"] != str(config)  # a rewritten copy, not the original
    assert {m["name"]: (m["base_path"], m["versions"]) for m in backend["served_models"]} == {
        "linear": (str(bases["linear"]), [{"version": 1, "state": "AVAILABLE"}]),
        "ctr": (str(bases["ctr"]), [{"version": 2, "state": "AVAILABLE"}]),
    }
    assert {g["name"]: g["passed"] for g in data["gates"]} == {"no_string_ops": True,
                                                               "serving": True}


@pytest.mark.xdist_group("bundled-e2e")
def test_candidate_takes_its_models_slot_and_keeps_the_policy(pytester, bases, ctr_direct):
    candidate = pytester.path / "candidate"
    shutil.copytree(ctr_direct / "1", candidate / "3")
    config = write_config(
        pytester.path / "models.config", ("linear", bases["linear"], ""),
        ("ctr", bases["ctr"], "model_version_policy { specific { versions: 2 versions: 3 } }"))
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        f"--tfs-model={candidate}", f"--tfs-model-config={config}", "--tfs-model-name=ctr",
        "--tfs-backend=bundled", "--tfs-gates=serving", f"--tfs-report={report}",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*model ctr under gate (candidate {candidate} in its slot*"])
    data = json.loads(report.read_text())
    assert (data["model"]["version"], data["model"]["path"]) == (3, str(candidate / "3"))
    deployment = data["model"]["deployment"]
    assert deployment["served_base_path"] == str(candidate)
    assert deployment["production_base_path"] == str(bases["ctr"])
    assert deployment["policy"] == "specific { versions: [2, 3] }"
    served = {m["name"]: m for m in data["backend"]["served_models"]}
    assert served["ctr"]["base_path"] == str(candidate)
    assert served["ctr"]["versions"] == [{"version": 3, "state": "AVAILABLE"}]
    assert served["linear"]["base_path"] == str(bases["linear"])


@pytest.mark.xdist_group("bundled-e2e")
def test_launcher_stages_a_replaced_slot_and_waits_for_every_model(tmp_path, bases):
    """A baseline (or INT8 copy) in the gated slot is served alone from a staged base dir, its
    version pinned where the policy would not serve it; the start waits until every model of
    the config has settled, a neighbour that fails to load included (END)."""
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    config = write_config(tmp_path / "m.config", ("broken", broken.parent, ""),
                          ("ctr", bases["ctr"], "model_version_policy { specific { versions: 2 "
                                                "} }"))
    deployment = load_deployment(config, "ctr", None)
    baseline = ServeConfig(model_name="ctr", version_dir=bases["ctr"] / "1", version=1,
                           deployment=deployment)
    launcher = BundledLauncher(baseline)
    try:
        endpoint = launcher.start(Deadline.after(120))
        served = {m["name"]: m for m in launcher.describe()["served_models"]}
        assert served["ctr"]["versions"] == [{"version": 1, "state": "AVAILABLE"}]
        assert served["ctr"]["base_path"] == str(launcher.workdir / "models" / "ctr")
        assert served["broken"]["versions"] == [{"version": 1, "state": "END"}]
        copy = parse_model_config(Path(endpoint.extra["model_config_file"]).read_text(), "copy")
        assert [m.policy.versions for m in copy] == [(), (1,)]
    finally:
        launcher.cleanup()


# --- usage errors at session start ------------------------------------------------------------

# case -> (config kind, extra args, expected stderr lines; '?' stands for '[' and ']')
USAGE_CASES = {
    "unknown_model_name": (
        "two", ["--tfs-model-name=nope"],
        ["*--tfs-model-config=*models.config: --tfs-model-name=nope names no model in the model "
         "config *models.config; its models are: linear, ctr. Pass one of those names*"]),
    "no_name_for_two_models": (
        "two", [],
        ["*serves 2 models (linear, ctr): pass --tfs-model-name=NAME to pick the one under gate*"]),
    "missing_base_path": (
        "missing", ["--tfs-model-name=ctr"],
        ["*Model linear: base_path '*/nowhere/linear' in the model config *models.config does "
         "not exist here. Fix the path in the file, or copy the model's version dirs there*"]),
    "relative_base_path": (
        "relative", [],
        ["*Expected model ctr to have an absolute path or URI; got base_path()=prod/ctr*"
         "base_path must be absolute*"]),
    "bad_text": (
        "bad", [],
        ["*Error parsing text-format tensorflow.serving.ModelServerConfig*Fix the file: TF "
         "Serving reads it as model_config_list { config { name: 'NAME'*"]),
    "policy_serves_nothing": (
        "specific7", [],
        ["*Model ctr: base_path '*/ctr' has version dirs ?'1', '00000002'? but "
         "model_version_policy specific { versions: ?7? } serves none of them*"]),
    "labels_without_allow_flag": (
        "labels", ["--tfs-model-name=ctr"],
        ["*assigns version_labels ('canary' -> version 3 of model ctr)*unless "
         f"{LABELS_FLAG} is passed. Add --tfs-server-arg={LABELS_FLAG} (production's "
         "tensorflow_model_server must pass it too)*"]),
    "remote_backend": (
        "two", ["--tfs-model-name=ctr", "--tfs-backend=remote", "--tfs-target=127.0.0.1:1"],
        ["*cannot be gated on --tfs-backend=remote: a remote endpoint serves the config it was "
         "started with*(from command line --tfs-model-config, command line --tfs-backend)*"]),
    "server_arg_the_launcher_sets": (
        "two", ["--tfs-model-name=ctr", "--tfs-server-arg=--model_config_file=/x"],
        ["*Invalid value '--model_config_file=/x' for --tfs-server-arg from command line "
         "--tfs-server-arg: --model_config_file is set by the launcher itself*"]),
}


def _config_for(kind: str, path: Path, bases: dict[str, Path]) -> Path:
    linear, ctr = ("linear", bases["linear"], ""), ("ctr", bases["ctr"], "")
    if kind == "bad":
        path.write_text("model_config_list { config { name: 'ctr' base_pth: '/x' } }\n")
        return path
    return write_config(path, *{
        "two": [linear, ctr],
        "missing": [("linear", path.parent / "nowhere" / "linear", ""), ctr],
        "relative": [("ctr", "prod/ctr", "")],
        "specific7": [("ctr", bases["ctr"],
                       "model_version_policy { specific { versions: 7 } }")],
        "labels": [linear, ("ctr", bases["ctr"], "version_labels { key: 'canary' value: 3 }")],
    }[kind])


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_mistakes_are_usage_errors_at_start_naming_the_value(pytester, bases, case):
    kind, args, expected = USAGE_CASES[case]
    config = _config_for(kind, pytester.path / "models.config", bases)
    pytester.makepyfile("def test_x():\n    pass\n")
    started = time.monotonic()
    result = pytester.runpytest_subprocess(f"--tfs-model-config={config}", "--tfs-backend=bundled",
                                           *args, "-p", "no:cacheprovider")
    elapsed = time.monotonic() - started
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(expected)
    assert elapsed < USAGE_ERROR_BOUND_S


@pytest.mark.parametrize("where", ["command line --tfs-model-config", "env TFS_MODEL_CONFIG",
                                   "ini tfs_model_config"])
def test_missing_config_file_is_a_usage_error_naming_where_it_came_from(pytester, monkeypatch,
                                                                        where):
    missing = "/nonexistent/models.config"
    args = [f"--tfs-model-config={missing}"] if where.startswith("command") else []
    if where.startswith("env"):
        monkeypatch.setenv("TFS_MODEL_CONFIG", missing)
    if where.startswith("ini"):
        pytester.makeini(f"[pytest]\ntfs_model_config = {missing}\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*Invalid value '{missing}' for --tfs-model-config from "
                                 f"{where}*: no such file*"])


# --- pure parts -------------------------------------------------------------------------------

def test_the_version_under_gate_is_the_one_the_policy_serves(tmp_path, bases):
    cases = {
        "": 2,  # latest: 00000002 is version 2
        "model_version_policy { latest { num_versions: 2 } }": 2,
        "model_version_policy { all {} }": 2,
        "model_version_policy { specific { versions: 1 } }": 1,
    }
    for extra, version in cases.items():
        config = write_config(tmp_path / "m.config", ("ctr", bases["ctr"], extra))
        deployment = load_deployment(config, None, None)
        assert (deployment.gated, deployment.version) == ("ctr", version), extra
        expected_dir = "00000002" if version == 2 else "1"
        assert deployment.version_dir == bases["ctr"] / expected_dir
        assert deployment.slot_base == bases["ctr"] and not deployment.stage_slot


def test_a_candidate_version_dir_is_staged_and_must_be_served_by_the_policy(tmp_path, bases,
                                                                            ctr_direct):
    config = write_config(tmp_path / "m.config", ("ctr", bases["ctr"],
                                                  "model_version_policy { specific { versions: "
                                                  "2 } }"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_deployment(config, "ctr", tmp_path / "nowhere" / "2")
    candidate = tmp_path / "cand" / "2"
    shutil.copytree(ctr_direct / "1", candidate)
    deployment = load_deployment(config, "ctr", candidate)
    assert deployment.stage_slot and deployment.version == 2
    assert deployment.version_dir == candidate
    shutil.copytree(ctr_direct / "1", tmp_path / "cand" / "5")
    with pytest.raises(ConfigError, match=r"version 5, which model ctr's model_version_policy "
                                          r"specific \{ versions: \[2\] \}.*does not serve"):
        load_deployment(config, "ctr", tmp_path / "cand" / "5")


def test_served_copy_replaces_base_paths_only_and_pins_a_staged_slot(tmp_path, bases):
    config = write_config(
        tmp_path / "m.config", ("linear", bases["linear"], ""),
        ("ctr", bases["ctr"], "model_version_policy { specific { versions: 2 } }\n"
                              "    version_labels { key: 'stable' value: 2 }"))
    deployment = load_deployment(config, "ctr", None)
    serve = ServeConfig(model_name="ctr", version_dir=deployment.version_dir,
                        version=deployment.version, deployment=deployment)
    assert [(m.name, m.base_path, m.version_dir) for m in served_models(serve)] == [
        ("linear", bases["linear"], None), ("ctr", bases["ctr"], None)]
    # an INT8 copy or a baseline in the slot: served alone from a staged base, version pinned
    other = ServeConfig(model_name="ctr", version_dir=bases["ctr"] / "1", version=1,
                        deployment=deployment)
    staged = served_models(other)[1]
    assert (staged.base_path, staged.version_dir, staged.pin_version) == (
        None, bases["ctr"] / "1", 1)
    text = config_text(deployment, {"linear": "/models/linear", "ctr": "/models/ctr"},
                       {"ctr": 1})
    linear, ctr = parse_model_config(text, "served copy")
    assert (str(linear.base_path), str(ctr.base_path)) == ("/models/linear", "/models/ctr")
    assert ctr.policy.versions == (1,) and ctr.labels == {"stable": 2}
    assert linear.policy.kind == "latest"
    unpinned = parse_model_config(config_text(deployment, {"linear": "/a", "ctr": "/b"}), "x")
    assert unpinned[1].policy.versions == (2,)


@pytest.mark.parametrize("args, allowed", [
    ((), False),
    ((LABELS_FLAG,), True),
    ((f"{LABELS_FLAG}=true",), True),
    ((f"{LABELS_FLAG}=false",), False),
    ((LABELS_FLAG, f"{LABELS_FLAG}=false"), False),
    (("--file_system_poll_wait_seconds=0",), False),
])
def test_label_flag_is_read_as_tf_serving_reads_bool_flags(args, allowed):
    assert labels_allowed(args) is allowed


@pytest.mark.parametrize("raw, reason", [
    ("allow_version_labels_for_unavailable_models", "expected one tensorflow_model_server flag"),
    ("--", "expected one tensorflow_model_server flag"),
    ("--port=8500", "--port is set by the launcher itself"),
    ("--model_base_path=/m", "--model_base_path is set by the launcher itself"),
])
def test_server_arg_parser_rejects_non_flags_and_launcher_flags(raw, reason):
    with pytest.raises(ValueError, match=reason):
        parse_server_arg(raw)
    assert parse_server_arg("--grpc_channel_arguments=a=1,b=2") == (
        "--grpc_channel_arguments=a=1,b=2")
