"""The base dir the rollout serves: a temporary copy the gate owns, never the user's files.

The baseline is copied in as version N; later the candidate is copied next to it under a hidden
temporary name and renamed to N+1 in one ``os.rename`` (same file system), so the server's poll
never sees a half-written version dir. The temporary dir names its owner, so a run killed
before its cleanup leaves a dir the next run removes (``staging.sweep_once``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.staging import make_staging_dir


@dataclass
class RolloutBase:
    """``root/<model name>`` holding the baseline as ``baseline_version``."""

    root: Path
    model_name: str
    baseline_version: int

    @property
    def base_dir(self) -> Path:
        return self.root / self.model_name

    @property
    def candidate_version(self) -> int:
        return self.baseline_version + 1

    def baseline_dir(self) -> Path:
        return self.base_dir / str(self.baseline_version)

    def candidate_dir(self) -> Path:
        return self.base_dir / str(self.candidate_version)

    def place_candidate(self, source: Path) -> Path:
        """Copy ``source`` (a version dir) in as version N+1, atomically; return its path."""
        target = self.candidate_dir()
        if target.exists():
            raise ConfigError(f"Version dir {target} already exists in the rollout's base dir; "
                              "the candidate can be placed once per rollout.")
        hidden = self.base_dir / f".incoming-{self.candidate_version}"
        shutil.copytree(source, hidden, symlinks=False)
        os.rename(hidden, target)
        return target

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stage_baseline(model_name: str, baseline_dir: Path, version: int) -> RolloutBase:
    """A fresh temporary base dir holding a copy of ``baseline_dir`` as ``version``."""
    if not baseline_dir.is_dir():
        raise ConfigError(f"Baseline version dir {baseline_dir} does not exist; check "
                          "--tfs-baseline-model.")
    root = make_staging_dir("tfs-rollout-")
    staged = RolloutBase(root, model_name, version)
    staged.base_dir.mkdir(parents=True)
    try:
        shutil.copytree(baseline_dir, staged.baseline_dir(), symlinks=False)
    except OSError as exc:
        staged.cleanup()
        raise ConfigError(f"Could not copy the baseline {baseline_dir} into the rollout's base "
                          f"dir {staged.base_dir}: {exc}. Check that it is readable and that "
                          "the temporary dir has space (TMPDIR).") from exc
    for path in (root, staged.base_dir):  # readable by a server in a container
        path.chmod(0o755)
    return staged
