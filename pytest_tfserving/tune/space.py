"""What the tuner searches: one serving configuration (``Candidate``) and the space of them,
checked against TF Serving's rules for BatchingParameters."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """One serving configuration: batching (None: off) and the server's TF thread pools."""

    batching: BatchingParameters | None
    intra_op_threads: int = 0  # 0: TF's default (all cores)
    inter_op_threads: int = 0

    def label(self) -> str:
        threads = f"intra={self.intra_op_threads or 'tf'} inter={self.inter_op_threads or 'tf'}"
        b = self.batching
        if b is None:
            return f"off {threads}"
        parts = [f"mbs={b.max_batch_size}", f"timeout={b.batch_timeout_micros}us",
                 f"bt={b.num_batch_threads or 'cores'}", f"q={b.max_enqueued_batches}"]
        if b.allowed_batch_sizes:
            parts.append("allowed=" + "/".join(map(str, b.allowed_batch_sizes)))
        if b.enable_large_batch_splitting:
            parts.append(f"split={b.execution_batch_size}")
        return " ".join(parts) + " " + threads

    def flags(self, batching_file: str = "batching_parameters.txt") -> list[str]:
        """The tensorflow_model_server flags that serve this candidate."""
        out = []
        if self.batching is not None:
            out += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
        if self.intra_op_threads:
            out.append(f"--tensorflow_intra_op_parallelism={self.intra_op_threads}")
        if self.inter_op_threads:
            out.append(f"--tensorflow_inter_op_parallelism={self.inter_op_threads}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label(),
                "batching": self.batching.as_dict() if self.batching else None,
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads}


def pow2_ladder(max_batch_size: int, smallest: int = 4) -> tuple[int, ...]:
    """Allowed batch sizes 4, 8, 16, ... ending at ``max_batch_size`` (as TF Serving requires)."""
    sizes = []
    size = smallest
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch_size)


@dataclass(frozen=True)
class SearchSpace:
    """The values each dimension may take. Batching dimensions combine only where TF Serving
    accepts the result (an allowed-sizes ladder only with the max_batch_size it ends at, a
    max_execution_batch_size only up to max_batch_size)."""

    include_off: bool = True
    max_batch_size: tuple[int, ...] = (8, 16, 32, 64)
    batch_timeout_micros: tuple[int, ...] = (0, 1000, 2000, 5000, 10000)
    num_batch_threads: tuple[int, ...] = (0, 1)  # 0: one per core
    max_enqueued_batches: tuple[int, ...] = (100,)
    # ladders of allowed_batch_sizes to try; () is "no padding"; "pow2" adds pow2_ladder(mbs)
    allowed_batch_sizes: tuple[tuple[int, ...], ...] = ((),)
    pow2_ladder: bool = True
    # max_execution_batch_size values tried with enable_large_batch_splitting (empty: never)
    max_execution_batch_size: tuple[int, ...] = ()
    intra_op_threads: tuple[int, ...] = (0,)
    inter_op_threads: tuple[int, ...] = (0, 1, 2)

    def problems(self) -> list[str]:
        """Every contradiction in the space, each with the value and the fix."""
        out: list[str] = []
        batching_on = bool(self.max_batch_size)
        if not self.include_off and not batching_on:
            out.append("the space is empty: include_off=False and no max_batch_size values; "
                       "give max_batch_size=(8, 16, 32) or include_off=True")
        for name in ("max_batch_size", "max_enqueued_batches"):
            bad = [v for v in getattr(self, name) if v < 1]
            if bad:
                out.append(f"{name} values {bad} must be >= 1")
        for name in ("batch_timeout_micros", "num_batch_threads", "intra_op_threads",
                     "inter_op_threads"):
            bad = [v for v in getattr(self, name) if v < 0]
            if bad:
                out.append(f"{name} values {bad} must be >= 0")
            if batching_on and not getattr(self, name):
                out.append(f"{name} has no values; give at least one (e.g. (0,))")
        if batching_on and not self.max_enqueued_batches:
            out.append("max_enqueued_batches has no values; give at least one (e.g. (100,))")
        for ladder in self.allowed_batch_sizes:
            sizes = list(ladder)
            if not sizes:
                continue
            if sizes != sorted(set(sizes)) or sizes[0] < 1:
                out.append(f"allowed_batch_sizes {sizes} must be positive and strictly "
                           "increasing, as TF Serving requires")
            elif sizes[-1] not in self.max_batch_size:
                out.append(f"allowed_batch_sizes {sizes}: its last entry {sizes[-1]} must equal "
                           f"max_batch_size (TF Serving rejects it otherwise), and "
                           f"{sizes[-1]} is not among max_batch_size {list(self.max_batch_size)};"
                           f" add it there or end the ladder at one of them")
        top = max(self.max_batch_size, default=0)
        bad = [v for v in self.max_execution_batch_size if v < 1 or v > top]
        if bad:
            out.append(f"max_execution_batch_size values {bad} must be in 1..{top} (the "
                       "largest max_batch_size): TF Serving requires max_batch_size >= "
                       "max_execution_batch_size with large-batch splitting")
        return out

    def validate(self) -> SearchSpace:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid tuning search space: " + "; ".join(problems))
        return self

    def ladders(self, max_batch_size: int) -> list[tuple[int, ...]]:
        """The allowed-sizes ladders valid with ``max_batch_size`` (always including none)."""
        out: list[tuple[int, ...]] = [()]
        for ladder in self.allowed_batch_sizes:
            if ladder and ladder[-1] == max_batch_size and ladder not in out:
                out.append(ladder)
        if self.pow2_ladder and (ladder := pow2_ladder(max_batch_size)) not in out \
                and len(ladder) > 1:
            out.append(ladder)
        return out

    def guidance(self, cores: int) -> list[Candidate]:
        """TF Serving's batching guidance as the start: batching off, then batch threads =
        cores, timeout 0, max_batch_size nearest 32, intra-op threads = cores where allowed."""
        intra = cores if cores in self.intra_op_threads else self.intra_op_threads[0]
        inter = self.inter_op_threads[0] if self.inter_op_threads else 0
        out: list[Candidate] = []
        if self.include_off:
            out.append(Candidate(None, intra, inter))
        if self.max_batch_size:
            mbs = min(self.max_batch_size, key=lambda v: (abs(v - 32), v))
            timeout = min(self.batch_timeout_micros)
            threads = cores if cores in self.num_batch_threads else self.num_batch_threads[0]
            params = BatchingParameters(max_batch_size=mbs, batch_timeout_micros=timeout,
                                        max_enqueued_batches=self.max_enqueued_batches[0],
                                        num_batch_threads=threads)
            out.append(Candidate(params, intra, inter))
        return out

    def neighbours(self, base: Candidate, dimension: str) -> list[Candidate]:
        """``base`` with one dimension changed to each of its other valid values."""
        if dimension in ("intra_op_threads", "inter_op_threads"):
            return [replace(base, **{dimension: v}) for v in getattr(self, dimension)
                    if v != getattr(base, dimension)]
        b = base.batching
        if b is None:
            return []
        if dimension == "allowed_batch_sizes":
            values: list[dict[str, Any]] = [{dimension: lad} for lad in
                                            self.ladders(b.max_batch_size)]
        elif dimension == "max_execution_batch_size":
            values = [{"enable_large_batch_splitting": False, dimension: 0}] + [
                {"enable_large_batch_splitting": True, dimension: v}
                for v in self.max_execution_batch_size if v <= b.max_batch_size]
        elif dimension == "max_batch_size":  # a ladder ends at max_batch_size: keep its shape
            values = [{dimension: v, "allowed_batch_sizes": pow2_ladder(v) if
                       b.allowed_batch_sizes else (),
                       "max_execution_batch_size": min(b.max_execution_batch_size, v)}
                      for v in self.max_batch_size]
        else:
            values = [{dimension: v} for v in getattr(self, dimension)]
        out = []
        for change in values:
            params = b.with_overrides(**change) if _valid(b, change) else None
            if params is not None and params != b:
                out.append(replace(base, batching=params))
        return out


DIMENSIONS = ("batch_timeout_micros", "max_batch_size", "num_batch_threads",
              "allowed_batch_sizes", "max_execution_batch_size", "max_enqueued_batches",
              "intra_op_threads", "inter_op_threads")


def _valid(base: BatchingParameters, change: dict[str, Any]) -> bool:
    merged = {**base.as_dict(), **change}
    merged["allowed_batch_sizes"] = tuple(merged["allowed_batch_sizes"])
    try:
        BatchingParameters(**merged)
    except ConfigError:
        return False
    return True
