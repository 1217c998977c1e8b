"""The built-in gates: name, marker, implementation (imported lazily), needs a server or not."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_tfserving.gates.context import GateContext
    from pytest_tfserving.gates.result import GateResult

GateFunction = Callable[["GateContext"], "GateResult"]


@dataclass(frozen=True)
class GateSpec:
    name: str  # the report's gate name (public contract)
    implementation: str  # "module:function", imported only when the gate runs
    marker: str | None  # the tfs_* marker that runs this gate on a user's test
    description: str
    needs_server: bool
    default_on: bool = True  # False: in the suite only when asked (--tfs-gates=NAME, its flag)

    def load(self) -> GateFunction:
        module_name, _, function = self.implementation.partition(":")
        gate: GateFunction = getattr(importlib.import_module(module_name), function)
        return gate


GATES: tuple[GateSpec, ...] = (
    GateSpec("no_string_ops", "pytest_tfserving.gates.string_ops:check_no_string_ops",
             "tfs_no_string_ops", "no string op reachable from a served signature; string-op "
             "share of traced compute time under the limit", False),
    GateSpec("direct_tensor_inputs", "pytest_tfserving.gates.string_ops:check_direct_inputs",
             "tfs_direct_inputs", "served signatures take direct tensors, not serialized "
             "tf.Example", False),
    GateSpec("int8_delta", "pytest_tfserving.gates.int8_delta:check", "tfs_int8_delta",
             "INT8 post-training quantization keeps the metric within bounds; size and CPU "
             "latency ratios measured", False),
    GateSpec("serving", "pytest_tfserving.gates.served_answers:check", "tfs_serving",
             "model loads; every signature answers; predictions equal an in-process call", True),
    GateSpec("warmup", "pytest_tfserving.gates.cold_start:check", "tfs_warmup",
             "warmup file valid, replayed by the server, first request not cold", True),
    GateSpec("sla", "pytest_tfserving.gates.sla:check", "tfs_sla",
             "open-loop P99 and QPS under dynamic batching, with server-side batch evidence",
             True),
    GateSpec("tune", "pytest_tfserving.gates.tune:check", "tfs_tune",
             "search batching and thread-pool configs for the highest QPS within the p99 "
             "budget; the shipped config within max gap of the best", True, default_on=False),
)


def gate_by_name(name: str) -> GateSpec:
    for gate in GATES:
        if gate.name == name:
            return gate
    raise KeyError(name)


def gate_by_marker(marker: str) -> GateSpec | None:
    for gate in GATES:
        if gate.marker == marker:
            return gate
    return None
