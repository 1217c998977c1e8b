"""What a gate sees: its settings with the marker's keywords applied, the model, and servers on
demand; nothing of pytest but the fixture values a test provides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_tfserving.core_options import SignatureSelection
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.option_spec import apply_marker, marker_keywords

if TYPE_CHECKING:
    from pytest_tfserving.gates.registry import GateSpec
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.session import RunningServer, TFSSession
    from pytest_tfserving.settings import Settings

T = TypeVar("T")
Progress = Callable[[str], None]


@dataclass
class GateContext:
    session: TFSSession
    gate: GateSpec
    keywords: Mapping[str, Any] = field(default_factory=dict)  # the marker's keyword arguments
    origin: str = "default suite"  # or "marker tfs_sla on tests/test_x.py::test_y"
    image: str = ""  # the docker image this run of a served gate is for (repeated --tfs-image)
    progress: Progress | None = None  # progress lines for the terminal, when there is one
    fixture: Callable[[str], Any] | None = None  # the test's fixture values, by name

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def model(self) -> ModelInfo:
        return self.session.model()

    def params(self, cls: type[T]) -> T:
        """The gate's settings of class ``cls``: the resolved options with the marker's
        keywords applied (parsed and checked like the options themselves)."""
        return apply_marker(self.settings.params(cls), self.keywords, self.origin)

    def check_keywords(self) -> None:
        """Reject marker keywords that none of the gate's settings classes declares."""
        allowed: set[str] = set()
        for cls in self.gate.param_classes():
            allowed.update(marker_keywords(cls))
        unknown = sorted(set(self.keywords) - allowed)
        if unknown:
            raise ConfigError(
                f"Unknown argument(s) {', '.join(unknown)} in {self.origin}; this gate takes: "
                f"{', '.join(sorted(allowed)) or 'no arguments'}.")

    def file_stem(self) -> str:
        """The name stem of files this gate run writes (plots): the gate's name, and for a
        marker run the test's name too."""
        if self.origin == "default suite":
            return self.gate.name
        test = "".join(c if c.isalnum() else "_" for c in self.origin.split(" on ")[-1])
        return f"{self.gate.name}-{test[-60:]}"

    def fixture_value(self, name: str) -> Any:
        """A fixture's value for the test this gate runs on (None outside a test)."""
        return self.fixture(name) if self.fixture is not None else None

    def server(self, config: ServeConfig | None = None) -> RunningServer:
        """The server for ``config`` (default: the session's), in this gate run's image."""
        if self.image:
            config = dataclasses.replace(config or self.session.default_serve_config(),
                                         image=self.image)
        return self.session.server(config)

    def signatures_under_gate(self) -> list[str]:
        """Signatures to gate: the marker's/option's list, else every served signature."""
        chosen = self.params(SignatureSelection).signatures
        model = self.model
        if chosen:
            for name in chosen:
                model.signature(name)  # raises a clear error for unknown names
            return list(chosen)
        return sorted(model.served_signatures())
