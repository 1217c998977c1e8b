"""Share of a signature's compute time spent in string ops, measured by running it traced.

How: the SavedModel is loaded in this process into a ``tf.compat.v1.Session`` (the same
Session/Grappler path TF Serving runs), the signature is run on representative requests with
``RunOptions(trace_level=FULL_TRACE, output_partition_graphs=True)``, and the per-node times
of ``RunMetadata.step_stats`` are summed. An executed node counts as string time when

* its name is the runtime name of a string op found statically (Grappler inlines function calls
  as ``<call node>/<call node>/<node>``), or
* the executed NodeDef (from the partition graphs) is itself a string op by :func:`graph.classify`
  (this catches Grappler rewrites such as ``AsString`` + ``StringToHashBucketFast`` fused into
  ``_TensorToHashBucketFast``).

Requests: the model's warmup records for the signature first; else tf.Example records built from
the graph's parse spec for a serialized-example input; else inputs synthesized from the
signature (batch 32).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_tfserving.graph import OpFinding
from pytest_tfserving.model import ModelInfo, Signature
from pytest_tfserving.op_kinds import classify

METHOD = "tf.compat.v1.Session + RunOptions(FULL_TRACE) step_stats"
DEFAULT_RUNS = 50
DEFAULT_BATCH = 32
_WARMUP_RUNS = 3
_SKIP_NODES = frozenset({"_SOURCE", "_SINK"})
# Every traced run logs ~5 lines from TF's C++ profiler session; they are dropped, the rest kept.
_PROFILER_LOG = re.compile(r"profiler_session\.cc|xplane_to_step_stats\.cc")

Inputs = dict[str, Any]


@dataclass
class TimeShare:
    """String-op share of one signature's traced compute time."""

    signature: str
    measured: bool
    share: float | None = None
    string_us: float = 0.0
    total_us: float = 0.0
    runs: int = 0
    requests: str = ""
    top_string_ops: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    per_node_us: dict[str, float] = field(default_factory=dict)  # string nodes, us per run

    def as_dict(self) -> dict[str, Any]:
        return {"measured": self.measured,
                "share": None if self.share is None else round(self.share, 4),
                "string_us": round(self.string_us, 1), "total_us": round(self.total_us, 1),
                "runs": self.runs, "requests": self.requests,
                "top_string_ops": self.top_string_ops, "note": self.note, "method": METHOD}


def representative_inputs(model: ModelInfo, signature: Signature, limit: int,
                          string_fed: bool = False) -> tuple[list[Inputs], str]:
    """Requests to time (up to ``limit``) and where they came from; [] with the reason if none.
    ``string_fed``: the signature's single input is a string tensor in the graph whatever it
    declares (TF Serving's saved_model_half_plus_three declares DT_FLOAT): feed tf.Examples."""
    from pytest_tfserving.predict_requests import synthesize_inputs, warmup_inputs

    recorded = warmup_inputs(model.version_dir, signature.name, limit=limit)
    if recorded:
        return recorded, f"{len(recorded)} warmup record(s)"
    if string_fed or any(spec.is_string for spec in signature.inputs.values()):
        from pytest_tfserving.examples import synthesize_example_inputs

        built = synthesize_example_inputs(model, signature, DEFAULT_BATCH,
                                          as_examples_api=string_fed)
        if built is None:
            return [], ("string input with no warmup record and no tf.Example parse spec in the "
                        "graph: add assets.extra/tf_serving_warmup_requests to time it")
        return [built], f"tf.Example batch of {DEFAULT_BATCH} built from the graph's parse spec"
    return ([synthesize_inputs(signature, batch_size=DEFAULT_BATCH, seed=11)],
            f"batch of {DEFAULT_BATCH} synthesized from the signature")


@contextlib.contextmanager
def _without_profiler_logs() -> Iterator[None]:
    """Route fd 2 to a temp file while tracing; write back what is not profiler chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not _PROFILER_LOG.search(line.decode(errors="replace"))]
            if kept:
                os.write(2, b"".join(kept))


def _node_us(stats: Any) -> float:
    if stats.op_end_rel_nanos or stats.op_start_rel_nanos:
        return float(max(0, stats.op_end_rel_nanos - stats.op_start_rel_nanos)) / 1e3
    return float(max(0, stats.op_end_rel_micros - stats.op_start_rel_micros))


def _op_type(stats: Any, executed: Mapping[str, Any]) -> str:
    node = executed.get(stats.node_name)
    if node is not None:
        return str(node.op)
    label = stats.timeline_label  # "name = OpType(args)"
    return label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else "?"


def measure(model: ModelInfo, findings: Mapping[str, Iterable[OpFinding]],
            runs: int = DEFAULT_RUNS) -> dict[str, TimeShare]:
    """Time share of string ops for each signature in ``findings`` (name -> static findings)."""
    import tensorflow as tf

    out: dict[str, TimeShare] = {}
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        from tensorflow.python.saved_model.loader_impl import SavedModelLoader

        # SavedModelLoader: what tf.compat.v1.saved_model.load wraps, minus its deprecation log.
        meta_graph = SavedModelLoader(str(model.version_dir)).load(session, ["serve"])
        for name, sig_findings in findings.items():
            out[name] = _measure_one(session, meta_graph, model, model.signature(name),
                                     list(sig_findings), runs)
    return out


def _measure_one(session: Any, meta_graph: Any, model: ModelInfo, signature: Signature,
                 findings: list[OpFinding], runs: int) -> TimeShare:
    import tensorflow as tf

    sig_def = meta_graph.signature_def[signature.name]
    string_fed = len(sig_def.inputs) == 1 and all(
        session.graph.get_tensor_by_name(info.name).dtype == tf.string
        and not signature.inputs[key].is_string for key, info in sig_def.inputs.items())
    requests, source = representative_inputs(model, signature, limit=runs,
                                             string_fed=string_fed)
    if not requests:
        return TimeShare(signature.name, measured=False, note=source)
    fetches = {k: v.name for k, v in sig_def.outputs.items()}
    feeds = [{sig_def.inputs[k].name: v for k, v in request.items() if k in sig_def.inputs}
             for request in requests]
    started = time.perf_counter()
    try:
        traces = _run_traced(session, fetches, feeds, runs)
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        return TimeShare(signature.name, measured=False, requests=source,
                         note=f"running the signature failed: {_failure_reason(exc)[:300]}")
    elapsed = time.perf_counter() - started
    static_names = {n for f in findings if f.kind == "string" for n in f.runtime_names}
    share = _string_share(signature.name, _node_times(traces), static_names, runs)
    share.requests = source
    share.note = f"{runs} traced runs in {elapsed:.2f}s"
    return share


def _run_traced(session: Any, fetches: Mapping[str, str], feeds: list[dict[str, Any]],
                runs: int) -> list[Any]:
    """The RunMetadata of ``runs`` traced runs, after a few untraced warmup runs."""
    import tensorflow as tf

    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE,
                                      output_partition_graphs=True)
    for i in range(_WARMUP_RUNS):
        session.run(fetches, feeds[i % len(feeds)])
    traces: list[Any] = []
    with _without_profiler_logs():
        for i in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetches, feeds[i % len(feeds)], options=options, run_metadata=metadata)
            traces.append(metadata)
    return traces


def _failure_reason(exc: Exception) -> str:
    """The line of a TF error that says what went wrong (not the node trace around it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in reversed(lines) if not line.startswith(
        ("[[", "Detected at node", "Graph execution error"))), type(exc).__name__)


@dataclass
class _NodeTimes:
    """Per-node times summed over traced runs, with the executed NodeDefs by name."""

    executed: dict[str, Any] = field(default_factory=dict)
    per_node: dict[str, float] = field(default_factory=dict)  # us over all runs
    node_ops: dict[str, str] = field(default_factory=dict)
    total: float = 0.0


def _node_times(traces: Iterable[Any]) -> _NodeTimes:
    times = _NodeTimes()
    for metadata in traces:
        partitions = [*metadata.partition_graphs,
                      *(p for f in metadata.function_graphs for p in f.partition_graphs)]
        for partition in partitions:
            for node in partition.node:
                times.executed.setdefault(node.name, node)
        for device in metadata.step_stats.dev_stats:
            for stats in device.node_stats:
                if stats.node_name in _SKIP_NODES:
                    continue
                us = _node_us(stats)
                times.total += us
                times.per_node[stats.node_name] = times.per_node.get(stats.node_name, 0.0) + us
                times.node_ops.setdefault(stats.node_name, _op_type(stats, times.executed))
    return times


def _string_share(signature: str, times: _NodeTimes, static_names: set[str],
                  runs: int) -> TimeShare:
    """The string nodes' share of the traced time, with the top five string nodes."""
    per_node, total = times.per_node, times.total
    string_nodes = {name for name in per_node
                    if name in static_names or (name in times.executed and
                                                classify(times.executed[name]).kind == "string")}
    string_us = sum(per_node[n] for n in string_nodes)
    top = sorted(string_nodes, key=lambda n: -per_node[n])[:5]
    return TimeShare(
        signature, measured=True,
        share=(string_us / total) if total > 0 else 0.0,
        string_us=string_us / runs, total_us=total / runs, runs=runs,
        top_string_ops=[{"node": n, "op_type": times.node_ops.get(n, "?"),
                         "us_per_run": round(per_node[n] / runs, 1),
                         "share": round(per_node[n] / total, 4) if total else 0.0} for n in top],
        per_node_us={n: per_node[n] / runs for n in string_nodes},
    )
