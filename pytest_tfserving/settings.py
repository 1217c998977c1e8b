"""The run's settings tree: every declared option class resolved once (cli > env > ini >
default, each value's source kept) and validated, including the checks that need the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest

from pytest_tfserving import options
from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.batching_options import BatchingOptions
from pytest_tfserving.core_options import CoreOptions
from pytest_tfserving.errors import ConfigError, TFServingError
from pytest_tfserving.gates.registry import GATES
from pytest_tfserving.int8.int8_options import Int8Options
from pytest_tfserving.launchers.backend_settings import BackendSettings
from pytest_tfserving.load.load_options import LoadOptions

if TYPE_CHECKING:
    from pytest_tfserving.launchers.deployment import Deployment
    from pytest_tfserving.model import ModelInfo

T = TypeVar("T")
RUN_CLASSES: tuple[type, ...] = (CoreOptions, BatchingOptions, BackendSettings, LoadOptions,
                                 Int8Options)


class ModelChecked(Protocol):
    """A settings class whose values depend on the model (checked at session start)."""

    def check_model(self, model: ModelInfo, sources: Mapping[str, str]) -> None: ...


def declared_classes() -> list[type]:
    """The run's option classes, then each gate's (in registry order, each once)."""
    classes = list(RUN_CLASSES)
    for gate in GATES:
        classes.extend(c for c in gate.param_classes() if c not in classes)
    return classes


@dataclass(frozen=True)
class Settings:
    core: CoreOptions
    backend: BackendSettings
    batching: BatchingParameters | None
    batching_source: str
    load: LoadOptions
    int8: Int8Options
    groups: Mapping[type, Any] = field(default_factory=dict)  # every class, resolved
    sources: Mapping[str, str] = field(default_factory=dict)  # option name -> its source
    deployment: Deployment | None = None  # --tfs-model-config, checked, with the model under gate

    @property
    def active(self) -> bool:
        """True when a model is under gate (the default suite and fixtures are live)."""
        return self.core.active

    def params(self, cls: type[T]) -> T:
        """The resolved settings of class ``cls`` (a gate's, the load's...)."""
        value = self.groups.get(cls)
        if value is None:
            value = cls()  # not declared in this run: its defaults
        return value

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")


def resolve_settings(config: pytest.Config) -> Settings:
    """Every option resolved and checked once; a bad value is a usage error naming it."""
    groups: dict[type, Any] = {}
    sources: dict[str, str] = {}
    for cls in declared_classes():
        groups[cls], found = options.resolve_class(config, cls)
        sources.update(found)
    core: CoreOptions = groups[CoreOptions]
    try:
        batching, batching_source = groups[BatchingOptions].parameters(sources)
        groups[LoadOptions].to_spec()
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    return Settings(core=core, backend=groups[BackendSettings], batching=batching,
                    batching_source=batching_source, load=groups[LoadOptions],
                    int8=groups[Int8Options], groups=groups, sources=sources,
                    deployment=resolve_deployment(core, sources))


def resolve_deployment(core: CoreOptions, sources: Mapping[str, str]) -> Deployment | None:
    """``--tfs-model-config``: the config read and checked, and the model under gate picked
    (by ``--tfs-model-name``; ``--tfs-model`` takes its slot). Every problem is a usage error at
    session start naming the value and the fix."""
    if core.model_config is None:
        return None
    flag = f"--tfs-model-config={core.model_config}"
    if core.backend == "remote":
        raise options.usage_error(
            f"{flag} cannot be gated on --tfs-backend=remote: a remote endpoint serves the config "
            "it was started with, which this run can neither set nor see. Use a backend that "
            "starts the server (bundled, binary or docker), or drop --tfs-model-config and gate "
            "the remote model with --tfs-model-name",
            [sources["model_config"], sources["backend"]])
    from pytest_tfserving.launchers.deployment import LABELS_FLAG, labels_allowed, load_deployment

    given = [sources[name] for name in ("model_config", "model_name", "model")
             if sources.get(name, "default") != "default"]
    try:
        deployment = load_deployment(core.model_config, core.model_name, core.model)
    except ConfigError as exc:
        raise options.usage_error(f"{flag}: {exc}", given) from None
    labels = deployment.labels()
    if labels and not labels_allowed(core.server_args):
        named = ", ".join(f"{label!r} -> version {version} of model {model}"
                          for model, label, version in labels)
        raise options.usage_error(
            f"{flag} assigns version_labels ({named}); TF Serving applies labels before the "
            "initial load and refuses them at start (\"Request to assign label to version N of "
            "model M, which is not currently available for inference\") unless "
            f"--{LABELS_FLAG} is passed. Add --tfs-server-arg=--{LABELS_FLAG} (production's "
            "tensorflow_model_server must pass it too), or remove the labels", given)
    return deployment


def check_against_model(settings: Settings, model: ModelInfo) -> None:
    """The options that name parts of the model (signatures, inputs, ops, eval data, request
    files, baseline), checked once before any server starts: a usage error naming the value
    and what exists."""
    problems: list[str] = []
    for value in settings.groups.values():
        check = getattr(value, "check_model", None)
        if check is None:
            continue
        try:
            check(model, settings.sources)
        except TFServingError as exc:
            problems.append(str(exc))
    if problems:
        raise pytest.UsageError("\n".join(problems))
