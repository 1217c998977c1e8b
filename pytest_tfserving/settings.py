"""Frozen settings resolved once from options/env/ini; all validation happens here."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from pytest_tfserving import options
from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.serving.backend_settings import BackendSettings, resolve_backend_settings

# The playbook's starting point when the user gives no batching parameters of their own.
PLAYBOOK_BATCHING = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000,
                                       max_enqueued_batches=100, num_batch_threads=0)
_BATCHING_FIELDS = tuple(f.name for f in fields(BatchingParameters))


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

    @property
    def active(self) -> bool:
        """True when a model is under gate (the default suite and fixtures are live)."""
        return self.model is not None


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


def resolve_settings(config: pytest.Config) -> Settings:
    batching, batching_source = resolve_batching(config)
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
    )
