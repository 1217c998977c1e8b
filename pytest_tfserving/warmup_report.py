"""The report on a warmup file: a summary of every record (kind, signatures, inputs, batch size)
with, given the model, the problems validation finds; ``warmup inspect`` prints it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tfserving.errors import ConfigError
from pytest_tfserving.model import ModelInfo
from pytest_tfserving.warmup_file import (
    example_count,
    read_prediction_logs,
    record_signatures,
    tensor_text,
)
from pytest_tfserving.warmup_validation import Problem, validate_warmup_file


@dataclass(frozen=True)
class RecordSummary:
    index: int
    kind: str  # "predict_log", ... or "empty"
    model_name: str
    signatures: tuple[str, ...]
    inputs: dict[str, str]  # key -> "int64[4,8]"; classify/regress: "examples" -> "3 tf.Example"
    batch_size: int | None

    def describe(self) -> str:
        sig = ",".join(self.signatures) or "-"
        ins = " ".join(f"{k}={v}" for k, v in self.inputs.items())
        return f"#{self.index:<4d} {self.kind:<20s} signature={sig:<16s} {ins}"


@dataclass(frozen=True)
class WarmupSummary:
    path: Path
    size_bytes: int
    records: tuple[RecordSummary, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.records)

    def kinds(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.records))

    def signatures(self) -> dict[str, int]:
        return dict(Counter(s for r in self.records for s in r.signatures))

    def batch_sizes(self) -> list[int]:
        return sorted({r.batch_size for r in self.records if r.batch_size is not None})

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "records": self.count,
                "kinds": self.kinds(), "signatures": self.signatures(),
                "batch_sizes": self.batch_sizes(), "problems": [str(p) for p in self.problems]}

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{self.path}: {self.count} record(s), {self.size_bytes} bytes",
               f"  kinds: {self.kinds()}", f"  signatures: {self.signatures()}",
               f"  batch sizes: {self.batch_sizes()}"]
        out += ["  " + r.describe() for r in self.records[:limit]]
        if self.count > limit:
            out.append(f"  ... {self.count - limit} more")
        out += [f"  PROBLEM {p}" for p in self.problems]
        return out



def _summarize(index: int, log: Any) -> RecordSummary:
    kind = log.WhichOneof("log_type") or "empty"
    inputs: dict[str, str] = {}
    batch: int | None = None
    model_name = ""
    if kind == "predict_log":
        request = log.predict_log.request
        model_name = request.model_spec.name
        for key in sorted(request.inputs):
            text, shape = tensor_text(request.inputs[key])
            inputs[key] = text
            if shape and batch is None:
                batch = shape[0]
    elif kind in ("classify_log", "regress_log", "multi_inference_log"):
        request = getattr(log, kind).request
        specs = ([t.model_spec for t in request.tasks] if kind == "multi_inference_log"
                 else [request.model_spec])
        model_name = specs[0].name if specs else ""
        batch = example_count(request.input)
        inputs["examples"] = f"{batch} tf.Example"
    return RecordSummary(index, kind, model_name, tuple(record_signatures(log)), inputs, batch)


def inspect_warmup_file(path: Path | str, model: ModelInfo | None = None) -> WarmupSummary:
    """Summarize a warmup file (every record); with ``model``, also list its problems.

    Raises ConfigError when the file is missing or not a TFRecord file of PredictionLogs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No warmup file at {path}. Make one with `python -m pytest_tfserving "
                          "warmup make --model MODEL_DIR --synthetic 10`.")
    records = tuple(_summarize(i, log) for i, log in read_prediction_logs(path))
    problems = tuple(validate_warmup_file(model, path)) if model is not None else ()
    return WarmupSummary(path, path.stat().st_size, records, problems)
