"""The ``tfs_tune`` fixture's object: custom config searches from a test (own space, SLA,
budget, shipped config), each serving candidates through the session's launcher."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pytest_tfserving.tune.runner import TuneSettings, tune_session
from pytest_tfserving.tune.search import Outcome
from pytest_tfserving.tune.space import Candidate, SearchSpace

if TYPE_CHECKING:
    from pytest_tfserving.session import TFSSession


@dataclass
class TuneFixture:
    """``outcome = tfs_tune(space=SearchSpace(max_batch_size=(16, 32)), p99_ms=20,
    budget_s=120)``; ``outcome.recommended``, ``.current``, ``.off``, ``.tried``, ``.gap()``."""

    session: TFSSession
    requests: Sequence[Any] | None = None
    progress: Callable[[str], None] | None = None

    def defaults(self) -> TuneSettings:
        from pytest_tfserving.gates.sla import SlaParams

        settings = self.session.settings
        return TuneSettings(p99_ms=settings.params(SlaParams).p99_ms,
                            sla_qps=settings.load.min_qps, plot_dir=settings.core.plot)

    def __call__(self, space: SearchSpace | None = None, current: Candidate | None = None,
                 **settings: Any) -> Outcome:
        chosen = replace(self.defaults(), **settings)
        return tune_session(self.session, chosen, space=space, current=current,
                            requests=self.requests, progress=self.progress)
