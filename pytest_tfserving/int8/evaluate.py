"""Run the float SavedModel and TFLite flatbuffers over the eval set in batches, and time the
float and INT8 flatbuffers side by side in the same runtime (LiteRT, one thread each).

Accuracy compares what ships today (the float SavedModel, called in-process with TensorFlow)
with what would ship (the INT8 flatbuffer in LiteRT). Latency compares float TFLite with INT8
TFLite, because timing TensorFlow against LiteRT would measure the runtimes, not quantization.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_tfserving.errors import GateError
from pytest_tfserving.int8.eval_data import EvalData

Array = np.ndarray[Any, Any]
Outputs = dict[str, Array]
Runner = Callable[..., dict[str, Any]]


def _concat(parts: list[Outputs]) -> Outputs:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def run_savedmodel(version_dir: Path, signature_name: str, data: EvalData,
                   batch_size: int) -> Outputs:
    from pytest_tfserving.inprocess import call_signature

    return _concat([call_signature(version_dir, signature_name, batch)
                    for batch in data.batches(batch_size)])


@dataclass
class TFLiteModel:
    """One flatbuffer in a LiteRT interpreter, called through its SignatureDef runner."""

    content: bytes
    signature_name: str
    label: str
    threads: int = 1

    def __post_init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_content=self.content,
                                            num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise GateError(f"LiteRT cannot load the {self.label} ({exc}). Pass a valid "
                            ".tflite flatbuffer.") from None
        signatures = self._interpreter.get_signature_list()
        if self.signature_name not in signatures:
            if len(signatures) != 1:
                raise GateError(
                    f"The {self.label} has SignatureDefs {sorted(signatures) or 'none'}, not "
                    f"{self.signature_name!r}. Convert it with TFLiteConverter.from_saved_model"
                    f"(..., signature_keys=[{self.signature_name!r}]) so names match.")
            self.signature_name = next(iter(signatures))
        self.inputs = list(signatures[self.signature_name]["inputs"])
        self.outputs = list(signatures[self.signature_name]["outputs"])
        self._runner: Runner = self._interpreter.get_signature_runner(self.signature_name)

    def __call__(self, batch: dict[str, Array]) -> Outputs:
        missing = sorted(set(self.inputs) - set(batch))
        if missing:
            raise GateError(f"The {self.label} takes inputs {self.inputs}; the eval data lacks "
                            f"{missing}. It must have the SavedModel signature's inputs.")
        result = self._runner(**{k: batch[k] for k in self.inputs})
        return {k: np.array(v) for k, v in result.items()}

    def run(self, data: EvalData, batch_size: int) -> Outputs:
        try:
            return _concat([self(batch) for batch in data.batches(batch_size)])
        except (ValueError, RuntimeError) as exc:
            raise GateError(f"LiteRT failed to run the {self.label} on the eval data ({exc}). "
                            "Check that the eval arrays match its inputs.") from None

    def pass_seconds(self, batches: list[dict[str, Array]]) -> float:
        started = time.perf_counter()
        for batch in batches:
            self._runner(**batch)
        return time.perf_counter() - started


@dataclass(frozen=True)
class LatencyComparison:
    float_us_per_example: float
    int8_us_per_example: float
    batch_size: int
    rows: int
    passes: int
    threads: int

    @property
    def ratio(self) -> float:
        """INT8 latency / float latency (lower is better; 0.5 = twice as fast)."""
        return self.int8_us_per_example / self.float_us_per_example

    @property
    def speedup(self) -> float:
        return self.float_us_per_example / self.int8_us_per_example

    def as_dict(self) -> dict[str, Any]:
        return {"float_tflite_us_per_example": round(self.float_us_per_example, 3),
                "int8_tflite_us_per_example": round(self.int8_us_per_example, 3),
                "latency_ratio": round(self.ratio, 4), "speedup": round(self.speedup, 3),
                "batch_size": self.batch_size, "rows": self.rows, "passes": self.passes,
                "threads": self.threads, "runtime": "LiteRT (ai-edge-litert)",
                "statistic": "fastest pass over the eval set, float and INT8 passes alternated"}


def compare_latency(float_model: TFLiteModel, int8_model: TFLiteModel, data: EvalData,
                    batch_size: int, max_passes: int = 200,
                    budget_s: float = 1.5) -> LatencyComparison:
    """Alternate float and INT8 passes over the same batches; keep each side's fastest pass.

    Stops after ``max_passes`` pairs or once ``budget_s`` is spent (at least three pairs)."""
    batches = [{k: np.ascontiguousarray(v) for k, v in b.items()}
               for b in data.batches(batch_size)]
    float_model.pass_seconds(batches)  # warm both (allocation, caches)
    int8_model.pass_seconds(batches)
    best_float = best_int8 = float("inf")
    started = time.monotonic()
    passes = 0
    while passes < max_passes:
        best_float = min(best_float, float_model.pass_seconds(batches))
        best_int8 = min(best_int8, int8_model.pass_seconds(batches))
        passes += 1
        if passes >= 3 and time.monotonic() - started > budget_s:
            break
    rows = data.rows
    return LatencyComparison(best_float / rows * 1e6, best_int8 / rows * 1e6, batch_size, rows,
                             passes, float_model.threads)
