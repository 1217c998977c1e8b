"""SavedModel inspection: TF Serving layout, signatures, TF1 and TF2, and bad input."""

from __future__ import annotations

import shutil

import pytest

from pytest_tfserving.errors import ModelError
from pytest_tfserving.model import inspect_model


def test_base_dir_serves_latest_version(ctr_direct, tmp_path):
    base = tmp_path / "ctr"
    shutil.copytree(ctr_direct / "1", base / "1")
    shutil.copytree(ctr_direct / "1", base / "7")
    (base / "3").mkdir()  # an empty version dir is ignored, as TF Serving ignores it
    model = inspect_model(base)
    assert (model.name, model.version, model.versions) == ("ctr", 7, (1, 7))
    assert model.version_dir == base / "7"


def test_version_dir_is_accepted(ctr_direct):
    model = inspect_model(ctr_direct / "1")
    assert (model.name, model.version) == ("ctr_direct", 1)


def test_tf2_signature_specs(ctr_direct):
    model = inspect_model(ctr_direct, name="ads")
    assert model.name == "ads" and model.tf2 and model.tags == ("serve",)
    sig = model.signature("serving_default")
    assert sig.method_name == "tensorflow/serving/predict"
    assert {k: (v.dtype, v.shape) for k, v in sig.inputs.items()} == {
        "user_id": ("DT_INT64", (None,)),
        "ad_id": ("DT_INT64", (None,)),
        "category_id": ("DT_INT64", (None,)),
        "dense": ("DT_FLOAT", (None, 8)),
    }
    assert sig.outputs["probability"].shape == (None, 1)
    assert model.warmup_file.is_file()


def test_classify_and_regress_signatures(digits):
    model = inspect_model(digits)
    methods = {k: s.method_name for k, s in model.signatures.items()}
    assert methods["classify"] == "tensorflow/serving/classify"
    assert methods["regress"] == "tensorflow/serving/regress"
    assert set(model.served_signatures()) == {"classify", "regress", "serving_default"}


def test_tf1_model(tf1_linear):
    model = inspect_model(tf1_linear)
    assert not model.tf2
    sig = model.signature("serving_default")
    assert sig.inputs["x"].tensor_name.endswith(":0")
    assert sig.outputs["y"].shape == (None, 2)


def test_unknown_signature_lists_known_ones(ctr_direct):
    with pytest.raises(ModelError, match="'nope' does not exist.*it has: serving_default"):
        inspect_model(ctr_direct).signature("nope")


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist. Pass --tfs-model=PATH"):
        inspect_model(tmp_path / "missing")


def test_not_a_saved_model(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ModelError, match="is not a SavedModel.*BASE/1/saved_model.pb"):
        inspect_model(tmp_path)


def test_version_dirs_without_saved_model(tmp_path):
    (tmp_path / "1").mkdir()
    with pytest.raises(ModelError, match=r"has version dirs \['1'\] but none holds saved_model.pb"):
        inspect_model(tmp_path)


def test_corrupt_saved_model(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelError, match="corrupt or not a SavedModel protobuf.*Re-export"):
        inspect_model(tmp_path)


def test_no_serving_default_is_a_warning(digits, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(digits / "1", tmp_path / "1")
    pb = tmp_path / "1" / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    del proto.meta_graphs[0].signature_def["serving_default"]
    pb.write_bytes(proto.SerializeToString())
    model = inspect_model(tmp_path)
    assert "serving_default" not in model.signatures
    assert any("no 'serving_default' signature" in w for w in model.warnings)
