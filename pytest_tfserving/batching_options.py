"""The dynamic-batching options (on/off, a BatchingParameters file, one option per field) and
the parameters they resolve to, with the playbook's defaults when none are given."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pytest_tfserving import option_parsers as p
from pytest_tfserving.batching import BatchingParameters, read_batching_file
from pytest_tfserving.errors import ConfigError
from pytest_tfserving.option_spec import option

# The playbook's starting point when the user gives no batching parameters of their own.
PLAYBOOK_BATCHING = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000,
                                       max_enqueued_batches=100, num_batch_threads=0)
FIELD_NAMES = tuple(f.name for f in fields(BatchingParameters))


def _field(name: str, parse: Any, metavar: str, note: str = "") -> Any:
    return option(name, None, parse, f"BatchingParameters.{name}{note}.", metavar=metavar,
                  marker="")


@dataclass(frozen=True)
class BatchingOptions:
    """--tfs-batching, --tfs-batching-file and one option per BatchingParameters field (fields
    override the file)."""

    batching: bool = option("batching", True, p.boolean, "Serve with dynamic batching "
                            "(--enable_batching).", metavar="on|off", marker="")
    batching_file: Path | None = option(
        "batching_file", None, p.existing_file, "TF Serving BatchingParameters text file "
        "(--batching_parameters_file).", metavar="PATH", marker="")
    max_batch_size: int | None = _field("max_batch_size", p.positive_int, "N")
    batch_timeout_micros: int | None = _field("batch_timeout_micros", p.non_negative_int, "US")
    max_enqueued_batches: int | None = _field("max_enqueued_batches", p.positive_int, "N")
    num_batch_threads: int | None = _field("num_batch_threads", p.non_negative_int, "N",
                                           " (0 = cores)")
    allowed_batch_sizes: tuple[int, ...] | None = _field("allowed_batch_sizes", p.int_list,
                                                         "SIZES", ", e.g. 8,16,32")
    pad_variable_length_inputs: bool | None = _field("pad_variable_length_inputs", p.boolean,
                                                     "BOOL")
    enable_large_batch_splitting: bool | None = _field(
        "enable_large_batch_splitting", p.boolean, "BOOL",
        ": split a task so that no executed batch exceeds max_execution_batch_size")
    max_execution_batch_size: int | None = _field(
        "max_execution_batch_size", p.positive_int, "N",
        " (with large-batch splitting; default max_batch_size)")

    def parameters(self, sources: Mapping[str, str]) -> tuple[BatchingParameters | None, str]:
        """Off, or the file's parameters with per-field options on top (the playbook's defaults
        when neither is given), and a description of where they came from."""
        if not self.batching:
            return None, sources.get("batching", "default") + " (off)"
        overrides = {name: getattr(self, name) for name in FIELD_NAMES
                     if getattr(self, name) is not None}
        where = [sources.get(name, "marker") for name in overrides]
        if self.batching_file is not None:
            where.insert(0, f"{sources.get('batching_file', 'given')} ({self.batching_file})")
        else:
            where.insert(0, "playbook defaults")
        try:
            base = (read_batching_file(self.batching_file) if self.batching_file is not None
                    else PLAYBOOK_BATCHING)
            return base.with_overrides(**overrides), ", ".join(where)
        except ConfigError as exc:
            raise ConfigError(f"{exc} [from {', '.join(where)}]") from None
