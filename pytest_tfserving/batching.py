"""TF Serving's BatchingParameters: the dataclass, its text-format parser and writer.

The file format is the one ``tensorflow_model_server --batching_parameters_file`` reads
(protobuf text format of ``BatchingParameters``)::

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 1000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 32
    pad_variable_length_inputs: true
    enable_large_batch_splitting { value: true }
    max_execution_batch_size { value: 16 }

Pure Python on purpose: the plugin and the bundled server both use it, with no TF import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ConfigError

# Defaults of TF Serving's BasicBatchScheduler when a field is left out of the file.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10

_WRAPPED_INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                       "num_batch_threads", "max_execution_batch_size")
_WRAPPED_STR_FIELDS = ("thread_pool_name",)
_KNOWN_IGNORED = ("thread_pool_name", "batch_padding_policy", "mixed_priority_batching_policy")


@dataclass(frozen=True)
class BatchingParameters:
    """The batching fields the gate and the bundled server understand (TF Serving names)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = 0  # 0: one per core, as TF Serving's default
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    # Large-batch splitting (TF Serving's shared batch scheduler): a task is split so that no
    # executed batch exceeds max_execution_batch_size (0: max_batch_size, as TF Serving).
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid batching parameters: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.max_batch_size < 1:
            out.append(f"max_batch_size={self.max_batch_size} must be >= 1")
        if self.batch_timeout_micros < 0:
            out.append(f"batch_timeout_micros={self.batch_timeout_micros} must be >= 0")
        if self.max_enqueued_batches < 1:
            out.append(f"max_enqueued_batches={self.max_enqueued_batches} must be >= 1")
        if self.num_batch_threads < 0:
            out.append(f"num_batch_threads={self.num_batch_threads} must be >= 0 (0 = cores)")
        if self.max_execution_batch_size < 0:
            out.append(f"max_execution_batch_size={self.max_execution_batch_size} must be >= 1 "
                       "(or left out: max_batch_size)")
        elif self.enable_large_batch_splitting and \
                self.max_execution_batch_size > self.max_batch_size:
            out.append(
                f"max_execution_batch_size={self.max_execution_batch_size} is above "
                f"max_batch_size={self.max_batch_size}: with enable_large_batch_splitting TF "
                "Serving requires max_batch_size (the input batch size limit) >= "
                "max_execution_batch_size")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sizes != sorted(set(sizes)) or sizes[0] < 1:
                out.append(f"allowed_batch_sizes={sizes} must be positive and strictly increasing")
            elif sizes[-1] != self.max_batch_size:
                out.append(
                    f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal max_batch_size "
                    f"({self.max_batch_size}), as TF Serving requires"
                )
        return out

    def with_overrides(self, **changes: Any) -> BatchingParameters:
        return replace(self, **changes)

    @property
    def execution_batch_size(self) -> int:
        """The largest batch the scheduler runs: max_execution_batch_size with splitting on
        (max_batch_size when left out), else max_batch_size."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def effective_threads(self, cores: int) -> int:
        return self.num_batch_threads or max(1, cores)

    def padded_size(self, n: int) -> int:
        """The batch size a batch of n examples is padded up to (n when no allowed sizes)."""
        for size in self.allowed_batch_sizes:
            if size >= n:
                return size
        return n

    def to_text(self) -> str:
        lines = [
            f"max_batch_size {{ value: {self.max_batch_size} }}",
            f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
            f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}",
        ]
        if self.num_batch_threads:
            lines.append(f"num_batch_threads {{ value: {self.num_batch_threads} }}")
        lines += [f"allowed_batch_sizes: {s}" for s in self.allowed_batch_sizes]
        if self.pad_variable_length_inputs:
            lines.append("pad_variable_length_inputs: true")
        if self.enable_large_batch_splitting:
            lines.append("enable_large_batch_splitting { value: true }")
            if self.max_execution_batch_size:
                lines.append(f"max_execution_batch_size {{ value: "
                             f"{self.max_execution_batch_size} }}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*(?P<scalar>"[^"]*"|[^\s{}]+)
                                         | :?\s*\{\s*value\s*:\s*(?P<wrapped>"[^"]*"|[^\s{}]+)\s*\})
    )""",
    re.VERBOSE,
)


def parse_batching_text(text: str, source: str = "<text>") -> BatchingParameters:
    """Parse BatchingParameters text format; errors name the source, the field and the value."""
    values: dict[str, Any] = {}
    allowed: list[int] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            snippet = text[pos:pos + 40].strip().splitlines()[0] if text[pos:].strip() else ""
            raise ConfigError(
                f"Cannot parse batching parameters in {source} near {snippet!r}. Expected TF "
                "Serving's text format, e.g. 'max_batch_size { value: 32 }' or "
                "'allowed_batch_sizes: 8'."
            )
        pos = m.end()
        if m.group("comment"):
            continue
        name = m.group("name")
        raw = m.group("scalar") if m.group("scalar") is not None else m.group("wrapped")
        if name in _WRAPPED_INT_FIELDS:
            values[name] = _int(raw, name, source)
        elif name == "allowed_batch_sizes":
            allowed.append(_int(raw, name, source))
        elif name in ("pad_variable_length_inputs", "enable_large_batch_splitting"):
            if raw not in ("true", "false"):
                raise ConfigError(f"{source}: {name} must be true or false, got {raw!r}")
            values[name] = raw == "true"
        elif name in _KNOWN_IGNORED or name in _WRAPPED_STR_FIELDS:
            continue
        else:
            known = ", ".join(f.name for f in fields(BatchingParameters))
            raise ConfigError(f"Unknown batching field {name!r} in {source}. Known: {known}.")
    if allowed:
        values["allowed_batch_sizes"] = tuple(allowed)
    try:
        return BatchingParameters(**values)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {source})") from None


def _int(raw: str, name: str, source: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{source}: {name} must be an integer, got {raw!r}") from None


def read_batching_file(path: Path) -> BatchingParameters:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read batching parameters file {str(path)!r}: {exc}. "
                          "Check --tfs-batching-file.") from exc
    return parse_batching_text(text, source=str(path))
