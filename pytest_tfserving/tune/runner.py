"""Tune the session's model: build the requests and examples, serve each candidate through the
session's launcher, search, and hand back the outcome (what the gate, the ``tfs_tune`` fixture
and ``python -m pytest_tfserving tune`` call)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.tune.search import Outcome, Plan, search
from pytest_tfserving.tune.served import ServedTrial
from pytest_tfserving.tune.space import Candidate, SearchSpace

if TYPE_CHECKING:
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.session import TFSSession

DEFAULT_BUDGET_S = 300.0  # ~5 minutes: about 8 screening runs and 3 confirmations on 2 cores


@dataclass(frozen=True)
class TuneSettings:
    """What one search needs besides the session: the SLA, the budget and the run lengths."""

    p99_ms: float = 25.0
    sla_qps: float = 300.0
    budget_s: float = DEFAULT_BUDGET_S
    max_gap: float = 0.2
    out: Path | None = None
    plot_dir: Path | None = None
    signature: str | None = None
    batch_size: int | None = None  # examples per load request (default: the requests' own)
    screen_s: float = 1.0  # seconds per rate step while screening
    confirm_s: float = 3.0  # seconds per rate step while confirming
    est_screen_cost_s: float = 20.0
    est_confirm_cost_s: float = 35.0
    leaders: int = 2
    invariance_examples: int = 8  # 0: skip the batching invariance check
    rtol: float = 1e-4
    atol: float = 1e-5

    def problems(self) -> list[str]:
        out = []
        for name in ("p99_ms", "sla_qps", "budget_s", "screen_s", "confirm_s"):
            if not getattr(self, name) > 0:
                out.append(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0 <= self.max_gap < 1:
            out.append(f"max_gap={self.max_gap!r} must be a fraction in [0, 1) (0.2: 20 %)")
        return out

    def plan(self) -> Plan:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid tuning settings: " + "; ".join(problems))
        return Plan(budget_s=self.budget_s, screen_s=self.screen_s, confirm_s=self.confirm_s,
                    est_screen_cost_s=self.est_screen_cost_s,
                    est_confirm_cost_s=self.est_confirm_cost_s, leaders=self.leaders)


def standalone_session(model: Path, backend: str = "auto",
                       batching: BatchingParameters | None = None,
                       batching_source: str = "playbook defaults") -> TFSSession:
    """A session outside pytest (the ``tune`` command, tests): every option at its default but
    the model, the backend and the shipped batching (default: the playbook's)."""
    from pytest_tfserving.batching_options import PLAYBOOK_BATCHING
    from pytest_tfserving.core_options import CoreOptions
    from pytest_tfserving.int8.int8_options import Int8Options
    from pytest_tfserving.launchers.backend_settings import BackendSettings
    from pytest_tfserving.load.load_options import LoadOptions
    from pytest_tfserving.session import TFSSession
    from pytest_tfserving.settings import Settings

    settings = Settings(core=CoreOptions(model=model, backend=backend),
                        backend=BackendSettings(),
                        batching=batching if batching is not None else PLAYBOOK_BATCHING,
                        batching_source=batching_source, load=LoadOptions(), int8=Int8Options())
    return TFSSession(settings)


def default_space(cores: int) -> SearchSpace:
    """TF Serving's knobs around its guidance: timeouts 0-10 ms, batch sizes 8-64, batch threads
    one or one per core, a padding ladder, intra-op threads TF's default or the cores, inter-op
    threads TF's default, 1 or 2."""
    return SearchSpace(max_batch_size=(8, 16, 32, 64, 128), max_execution_batch_size=(16,),
                       intra_op_threads=tuple(sorted({0, cores})),
                       num_batch_threads=tuple(sorted({0, 1})))


def largest_request(model: ModelInfo, batch_size: int | None) -> int:
    """The most examples one request carries: the load's batch size, and every warmup record
    (a warmup record above max_batch_size fails the model's load, as in TF Serving)."""
    from pytest_tfserving.warmup_report import inspect_warmup_file

    sizes = [batch_size or 1]
    path = model.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    if path.is_file():
        sizes += [r.batch_size or 1 for r in inspect_warmup_file(path).records]
    return max(sizes)


def fit_space(space: SearchSpace, need: int) -> SearchSpace:
    """Drop the max_batch_size values (and ladders) below ``need`` examples per request."""
    sizes = tuple(v for v in space.max_batch_size if v >= need)
    if space.max_batch_size and not sizes:
        raise ConfigError(
            f"Every max_batch_size in the search space {list(space.max_batch_size)} is below "
            f"{need}, the most examples one request (or warmup record) carries; TF Serving "
            f"rejects such a task. Add a max_batch_size >= {need} to the space.")
    ladders = tuple(lad for lad in space.allowed_batch_sizes if not lad or lad[-1] >= need)
    return replace(space, max_batch_size=sizes, allowed_batch_sizes=ladders)


def current_candidate(session: TFSSession) -> Candidate:
    """The config the session would ship: ``--tfs-batching-file`` (or the playbook defaults) and
    the ``--tfs-*-op-threads`` options."""
    s = session.settings
    return Candidate(s.batching, s.core.intra_op_threads, s.core.inter_op_threads)


def tune_session(session: TFSSession, settings: TuneSettings, *,
                 space: SearchSpace | None = None, current: Candidate | None = None,
                 requests: Sequence[Any] | None = None,
                 progress: Callable[[str], None] | None = None) -> Outcome:
    """Search the serving config for the session's model; every server started is stopped."""
    from pytest_tfserving.load.payloads import for_model
    from pytest_tfserving.load.runner import default_signature
    from pytest_tfserving.predict_requests import synthesize_inputs

    plan = settings.plan()
    cores = os.cpu_count() or 1
    model = session.model()
    space = (space or default_space(cores)).validate()
    space = fit_space(space, largest_request(model, settings.batch_size))
    signature = default_signature(model, settings.signature)
    payloads, _ = for_model(model, model.name, signature, batch_size=settings.batch_size,
                            user_requests=requests)
    examples = None
    if settings.invariance_examples:
        examples = synthesize_inputs(model.signature(signature),
                                     batch_size=settings.invariance_examples, seed=7)
    trial = ServedTrial(session, signature, payloads, settings.p99_ms, settings.sla_qps,
                        examples=examples, rtol=settings.rtol, atol=settings.atol,
                        progress=progress)
    return search(space, trial, plan, cores=cores,
                  current=current if current is not None else current_candidate(session),
                  progress=progress)
