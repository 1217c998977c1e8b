"""What a gate sees: settings, the model, servers on demand, and marker overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_tfserving.errors import ConfigError

if TYPE_CHECKING:
    from pytest_tfserving.launchers.base import ServeConfig
    from pytest_tfserving.model import ModelInfo
    from pytest_tfserving.session import RunningServer, TFSSession


@dataclass
class GateContext:
    session: TFSSession
    config: pytest.Config
    request: pytest.FixtureRequest | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # marker keyword arguments
    origin: str = "default suite"  # or "marker tfs_sla on tests/test_x.py::test_y"
    image: str = ""  # the docker image this run of a served gate is for (repeated --tfs-image)

    @property
    def settings(self) -> Any:
        return self.session.settings

    @property
    def model(self) -> ModelInfo:
        return self.session.model()

    def server(self, config: ServeConfig | None = None) -> RunningServer:
        """The server for ``config`` (default: the session's), in this gate run's image."""
        if self.image:
            import dataclasses

            config = dataclasses.replace(config or self.session.default_serve_config(),
                                         image=self.image)
        return self.session.server(config)

    def option(self, name: str) -> Any:
        """A gate setting: the marker's keyword if given, else the resolved --tfs-* option."""
        from pytest_tfserving import options

        if name in self.overrides:
            return self.overrides[name]
        return options.value(self.config, name)

    def check_overrides(self, allowed: set[str]) -> None:
        """Reject marker keywords the gate does not know (nonsense marker arguments)."""
        unknown = sorted(set(self.overrides) - allowed)
        if unknown:
            raise ConfigError(
                f"Unknown argument(s) {', '.join(unknown)} in {self.origin}; this gate takes: "
                f"{', '.join(sorted(allowed)) or 'no arguments'}."
            )

    def signatures_under_gate(self) -> list[str]:
        """Signatures to gate: the marker's/option's list, else every served signature."""
        chosen = self.overrides.get("signatures") or self.session.settings.signatures
        model = self.model
        if chosen:
            for name in chosen:
                model.signature(name)  # raises a clear error for unknown names
            return list(chosen)
        return sorted(model.served_signatures())
