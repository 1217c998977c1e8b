"""Frozen settings resolved once from options/env/ini; all validation happens here."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_tfserving import options
from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.launchers.backend_settings import BackendSettings, resolve_backend_settings

if TYPE_CHECKING:
    from pytest_tfserving.launchers.deployment import Deployment

# The playbook's starting point when the user gives no batching parameters of their own.
PLAYBOOK_BATCHING = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000,
                                       max_enqueued_batches=100, num_batch_threads=0)
# Large-batch splitting has no per-field option (set it in --tfs-batching-file).
_BATCHING_FIELDS = tuple(f.name for f in fields(BatchingParameters)
                         if f.name not in ("enable_large_batch_splitting",
                                           "max_execution_batch_size"))


@dataclass(frozen=True)
class Settings:
    model: Path | None
    model_name: str | None
    backend: str
    report: Path | None
    start_timeout: float
    intra_op_threads: int
    inter_op_threads: int
    batching: BatchingParameters | None
    batching_source: str
    gates: tuple[str, ...] | str  # "all" or the chosen gate names (empty: none)
    signatures: tuple[str, ...]
    serving: BackendSettings  # docker/binary/remote: image(s), pull, limits, env, target
    server_args: tuple[str, ...] = ()  # --tfs-server-arg: extra tensorflow_model_server flags
    model_config: Path | None = None  # --tfs-model-config as given
    deployment: Deployment | None = None  # that config, checked, with the model under gate

    @property
    def active(self) -> bool:
        """True when a model is under gate (the default suite and fixtures are live)."""
        return self.model is not None or self.deployment is not None


def resolve_batching(config: pytest.Config) -> tuple[BatchingParameters | None, str]:
    """Batching: off, or the file's parameters with per-field options on top (or the playbook's
    defaults when neither is given). Returns the parameters and a description of their source."""
    if not options.value(config, "batching"):
        return None, options.resolve(config, "batching").source + " (off)"
    file_opt = options.resolve(config, "batching_file")
    overrides: dict[str, Any] = {}
    sources: list[str] = []
    for name in _BATCHING_FIELDS:
        resolved = options.resolve(config, name)
        if resolved.source != "default":
            overrides[name] = resolved.value
            sources.append(resolved.source)
    try:
        if file_opt.value is not None:
            base = read_batching_file(file_opt.value)
            sources.insert(0, f"{file_opt.source} ({file_opt.value})")
        else:
            base = PLAYBOOK_BATCHING
            sources.insert(0, "playbook defaults")
        return base.with_overrides(**overrides), ", ".join(sources)
    except ConfigError as exc:
        raise pytest.UsageError(f"{exc} [from {', '.join(sources)}]") from None


def resolve_deployment(config: pytest.Config,
                       server_args: tuple[str, ...]) -> Deployment | None:
    """``--tfs-model-config``: the config read and checked, and the model under gate picked
    (by ``--tfs-model-name``; ``--tfs-model`` takes its slot). Every problem is a usage error at
    session start naming the value and the fix."""
    given = options.resolve(config, "model_config")
    if given.value is None:
        return None
    flag = f"--tfs-model-config={given.value}"
    backend = options.resolve(config, "backend")
    if backend.value == "remote":
        raise options.usage_error(
            f"{flag} cannot be gated on --tfs-backend=remote: a remote endpoint serves the config "
            "it was started with, which this run can neither set nor see. Use a backend that "
            "starts the server (bundled, binary or docker), or drop --tfs-model-config and gate "
            "the remote model with --tfs-model-name", [given.source, backend.source])
    from pytest_tfserving.launchers.deployment import LABELS_FLAG, labels_allowed, load_deployment

    sources = [given.source] + [options.resolve(config, name).source
                                for name in ("model_name", "model")
                                if options.was_given(config, name)]
    try:
        deployment = load_deployment(given.value, options.value(config, "model_name"),
                                     options.value(config, "model"))
    except ConfigError as exc:
        raise options.usage_error(f"{flag}: {exc}", sources) from None
    labels = deployment.labels()
    if labels and not labels_allowed(server_args):
        named = ", ".join(f"{label!r} -> version {version} of model {model}"
                          for model, label, version in labels)
        raise options.usage_error(
            f"{flag} assigns version_labels ({named}); TF Serving applies labels before the "
            "initial load and refuses them at start (\"Request to assign label to version N of "
            "model M, which is not currently available for inference\") unless "
            f"--{LABELS_FLAG} is passed. Add --tfs-server-arg=--{LABELS_FLAG} (production's "
            "tensorflow_model_server must pass it too), or remove the labels", sources)
    return deployment


def resolve_settings(config: pytest.Config) -> Settings:
    batching, batching_source = resolve_batching(config)
    server_args = tuple(options.value(config, "server_arg") or ())
    return Settings(
        model=options.value(config, "model"),
        model_name=options.value(config, "model_name"),
        backend=options.value(config, "backend"),
        report=options.value(config, "report"),
        start_timeout=options.value(config, "start_timeout"),
        intra_op_threads=options.value(config, "intra_op_threads"),
        inter_op_threads=options.value(config, "inter_op_threads"),
        batching=batching,
        batching_source=batching_source,
        gates=options.value(config, "gates"),
        signatures=options.value(config, "signatures") or (),
        serving=resolve_backend_settings(config),
        server_args=server_args,
        model_config=options.value(config, "model_config"),
        deployment=resolve_deployment(config, server_args),
    )
