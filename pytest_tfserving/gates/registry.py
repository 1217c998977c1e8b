"""The built-in gates: name, marker, implementation and settings classes (imported by name), and
whether the gate needs a server."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    params: tuple[str, ...] = ()  # "module:Class" of each settings class the gate reads
    in_default_suite: bool = True  # False: runs only when named in --tfs-gates (or enabled)

    def load(self) -> GateFunction:
        gate: GateFunction = _attribute(self.implementation)
        return gate

    def switched_on(self, settings: Any) -> bool:
        """A gate outside the default suite joins it when its settings' ``enabled`` option is
        true (``--tfs-tune``), or when a settings class's ``joins_default_suite(settings)``
        says so (the rollout gate: a baseline model is given)."""
        for cls in self.param_classes():
            joins = getattr(cls, "joins_default_suite", None)
            if joins is not None and joins(settings):
                return True
            if getattr(settings.params(cls), "enabled", False) is True:
                return True
        return False

    def param_classes(self) -> tuple[type, ...]:
        """The gate's settings classes; marker keywords are the union of their fields'."""
        return tuple(_attribute(path) for path in self.params)


def _attribute(path: str) -> Any:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


SIGNATURES = "pytest_tfserving.core_options:SignatureSelection"
LOAD = "pytest_tfserving.load.load_options:LoadOptions"
INT8 = "pytest_tfserving.int8.int8_options:Int8Options"


GATES: tuple[GateSpec, ...] = (
    GateSpec("no_string_ops", "pytest_tfserving.gates.string_ops:check_no_string_ops",
             "tfs_no_string_ops", "no string op reachable from a served signature; string-op "
             "share of traced compute time under the limit", False,
             ("pytest_tfserving.gates.string_ops:NoStringOpsParams", SIGNATURES)),
    GateSpec("direct_tensor_inputs", "pytest_tfserving.gates.string_ops:check_direct_inputs",
             "tfs_direct_inputs", "served signatures take direct tensors, not serialized "
             "tf.Example", False,
             ("pytest_tfserving.gates.string_ops:DirectInputsParams", SIGNATURES)),
    GateSpec("int8_delta", "pytest_tfserving.gates.int8_delta:check", "tfs_int8_delta",
             "INT8 post-training quantization keeps the metric within bounds; size and CPU "
             "latency ratios measured", False, (INT8, SIGNATURES)),
    GateSpec("serving", "pytest_tfserving.gates.served_answers:check", "tfs_serving",
             "model loads; every signature answers; predictions equal an in-process call", True,
             ("pytest_tfserving.gates.served_answers:ServingParams", SIGNATURES)),
    GateSpec("warmup", "pytest_tfserving.gates.cold_start:check", "tfs_warmup",
             "warmup file valid, replayed by the server, first request not cold", True,
             ("pytest_tfserving.gates.cold_start:WarmupParams", SIGNATURES)),
    GateSpec("sla", "pytest_tfserving.gates.sla:check", "tfs_sla",
             "open-loop P99 and QPS under dynamic batching, with server-side batch evidence",
             True, ("pytest_tfserving.gates.sla:SlaParams", LOAD)),
    GateSpec("tune", "pytest_tfserving.gates.tune:check", "tfs_tune",
             "search batching and thread-pool configs for the highest QPS within the p99 "
             "budget; the shipped config within --tfs-tune-max-gap of the best", True,
             ("pytest_tfserving.gates.tune:TuneParams",), in_default_suite=False),
    GateSpec("rollout", "pytest_tfserving.gates.rollout:check", "tfs_rollout",
             "p99 and errors while the server swaps the production version "
             "(--tfs-baseline-model) for the candidate; signature compatibility, warmup, memory",
             True, ("pytest_tfserving.gates.rollout:RolloutParams",),
             in_default_suite=False),
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
