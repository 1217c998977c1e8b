"""What a team's own release checks look like next to the default gate suite.

Run with ``pytest demo --tfs-model=fixtures/models/ctr_direct`` (``tox -e demo`` does).
"""

import numpy as np


def test_model_has_direct_int64_ids(tfs_model):
    signature = tfs_model.signature("serving_default")
    inputs = ", ".join(spec.describe() for spec in signature.inputs.values())
    assert "user_id" in signature.inputs, f"no user_id input; serving_default takes {inputs}"
    assert signature.inputs["user_id"].dtype == "DT_INT64", inputs


def test_probability_in_unit_interval(tfs_client, tfs_model):
    batch = {
        "user_id": np.array([1, 2, 3], dtype=np.int64),
        "ad_id": np.array([10, 20, 30], dtype=np.int64),
        "category_id": np.array([5, 6, 7], dtype=np.int64),
        "dense": np.zeros((3, 8), dtype=np.float32),
    }
    if "user_id" not in tfs_model.signature("serving_default").inputs:
        import pytest

        pytest.skip("this demo check is for ctr_direct's signature")
    probability = tfs_client.predict(batch)["probability"]
    assert probability.shape == (3, 1)
    assert np.all((probability >= 0) & (probability <= 1))
