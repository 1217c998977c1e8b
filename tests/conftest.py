"""Shared test fixtures: the committed fixture models, and pytester."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
DATA = ROOT / "fixtures" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytester subprocesses print the gate table at this width (the wide, tabular layout).
os.environ["COLUMNS"] = "160"


def _ensure_models() -> None:
    if all((MODELS / name / "1" / "saved_model.pb").is_file()
           for name in ("ctr_direct", "ctr_strings", "digits", "tf1_linear")):
        return
    sys.path.insert(0, str(ROOT / "fixtures"))
    from build_models import build_all  # type: ignore[import-not-found]

    build_all(MODELS)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    _ensure_models()
    return MODELS


@pytest.fixture(scope="session")
def ctr_direct(models_dir: Path) -> Path:
    return models_dir / "ctr_direct"


@pytest.fixture(scope="session")
def ctr_strings(models_dir: Path) -> Path:
    return models_dir / "ctr_strings"


@pytest.fixture(scope="session")
def digits(models_dir: Path) -> Path:
    return models_dir / "digits"


@pytest.fixture(scope="session")
def digits_fns(digits: Path) -> Any:
    """The digits model's signatures, loaded in this process (the reference for served answers)."""
    import tensorflow as tf

    return tf.saved_model.load(str(digits / "1")).signatures


@pytest.fixture(scope="session")
def tf1_linear(models_dir: Path) -> Path:
    return models_dir / "tf1_linear"


@pytest.fixture
def running(ctr_direct: Path) -> Any:
    """A server someone else started (here: the bundled one) serving ctr_direct: the endpoint
    the remote backend is pointed at."""
    from pytest_tfserving.deadline import Deadline
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.launchers.bundled import BundledLauncher

    config = ServeConfig(model_name="ctr_direct", version_dir=ctr_direct / "1", version=1)
    launcher = BundledLauncher(config)
    try:
        yield launcher.start(Deadline.after(120))
    finally:
        launcher.cleanup()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``xdist_group`` tests on one worker under ``--dist loadgroup``.

    pytest-xdist (3.8) marks a test's group by assigning ``item._nodeid = nodeid + "@group"``;
    pytest 9 builds ``nodeid`` from a structured ``item._id`` and no longer reads ``_nodeid``, so
    the suffix never reaches the scheduler and the groups are silently spread over the workers
    (seen: two Docker tests that sweep each other's containers ran at once). Here the suffix is
    applied where pytest 9 reads it; a nodeid that already has it is left alone.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9: xdist's own suffix works
        return
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid.rpartition("]")[2] and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
