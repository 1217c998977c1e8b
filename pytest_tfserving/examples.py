"""Serialized tf.Example inputs built from the parse spec found in the serving graph.

A signature that takes serialized tf.Example (the playbook's "before" case) cannot be fed random
bytes; the ParseExample(V2) / ParseSingleExample node says which features with which dtypes and
shapes it expects, so valid requests can be made for it without any user data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_tfserving.model import ModelInfo, Signature, read_saved_model, serving_meta_graph

PARSE_OPS = ("ParseExampleV2", "ParseExample", "ParseSingleExample")


@dataclass(frozen=True)
class FeatureSpec:
    key: str
    dtype: str  # "DT_INT64" | "DT_FLOAT" | "DT_STRING"
    shape: tuple[int, ...]  # dense shape per example; () for scalars; sparse -> (1,)


def _const_strings(nodes: dict[str, Any], ref: str) -> list[str] | None:
    name = ref.lstrip("^").split(":")[0]
    node = nodes.get(name)
    if node is None or node.op != "Const":
        return None
    return [v.decode() for v in node.attr["value"].tensor.string_val]


def _node_maps(meta_graph: Any) -> list[dict[str, Any]]:
    maps = [{n.name: n for n in meta_graph.graph_def.node}]
    maps += [{n.name: n for n in f.node_def} for f in meta_graph.graph_def.library.function]
    return maps


def parse_specs(model: ModelInfo) -> list[FeatureSpec]:
    """Features of every tf.Example parse op in the graph (dense and sparse)."""
    from tensorflow.core.framework import types_pb2

    meta_graph = serving_meta_graph(read_saved_model(model.version_dir), model.version_dir)
    features: dict[str, FeatureSpec] = {}
    for nodes in _node_maps(meta_graph):
        for node in nodes.values():
            if node.op not in PARSE_OPS:
                continue
            dense_types = [types_pb2.DataType.Name(t) for t in node.attr["Tdense"].list.type]
            dense_shapes = [tuple(max(d.size, 1) for d in s.dim)
                            for s in node.attr["dense_shapes"].list.shape]
            sparse_types = [types_pb2.DataType.Name(t) for t in node.attr["sparse_types"].list.type]
            if node.op == "ParseExampleV2":
                sparse_keys = _const_strings(nodes, node.input[2]) or []
                dense_keys = _const_strings(nodes, node.input[3]) or []
            elif node.op == "ParseExample":
                n_sparse = node.attr["Nsparse"].i
                refs = list(node.input[2:])
                sparse_keys = [k for r in refs[:n_sparse] for k in (_const_strings(nodes, r) or [])]
                dense_keys = [k for r in refs[n_sparse:n_sparse + len(dense_types)]
                              for k in (_const_strings(nodes, r) or [])]
            else:
                sparse_keys = [k.decode() if isinstance(k, bytes) else k
                               for k in node.attr["sparse_keys"].list.s]
                dense_keys = [k.decode() if isinstance(k, bytes) else k
                              for k in node.attr["dense_keys"].list.s]
            for key, dtype, shape in zip(dense_keys, dense_types, dense_shapes, strict=False):
                features[key] = FeatureSpec(key, dtype, shape)
            for key, dtype in zip(sparse_keys, sparse_types, strict=False):
                features.setdefault(key, FeatureSpec(key, dtype, (1,)))
    return list(features.values())


def make_examples(features: list[FeatureSpec], count: int, seed: int = 0) -> list[bytes]:
    from tensorflow.core.example import example_pb2

    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for _ in range(count):
        example = example_pb2.Example()
        for spec in features:
            size = int(np.prod(spec.shape)) if spec.shape else 1
            feature = example.features.feature[spec.key]
            if spec.dtype == "DT_INT64":
                feature.int64_list.value.extend(int(v) for v in rng.integers(0, 10_000, size))
            elif spec.dtype == "DT_FLOAT":
                feature.float_list.value.extend(float(v) for v in rng.random(size))
            else:
                feature.bytes_list.value.extend(b"v%d" % v for v in rng.integers(0, 100, size))
        out.append(example.SerializeToString())
    return out


def synthesize_example_inputs(model: ModelInfo, signature: Signature, batch_size: int,
                              as_examples_api: bool = False
                              ) -> dict[str, np.ndarray[Any, Any]] | None:
    """Inputs for a signature whose single string input is serialized tf.Example.

    ``as_examples_api``: feed the single input as the Classify/Regress APIs do, a [batch]
    vector of serialized tf.Examples, whatever the SignatureDef declares for it (its dtype, as
    TF Serving's ``saved_model_half_plus_three`` shows, may be wrong)."""
    string_inputs = [k for k, s in signature.inputs.items() if s.is_string or as_examples_api]
    if len(string_inputs) != 1 or len(signature.inputs) != 1:
        return None
    features = parse_specs(model)
    if not features:
        return None
    spec = signature.inputs[string_inputs[0]]
    records = make_examples(features, batch_size)
    arr: np.ndarray[Any, Any] = np.empty(len(records), dtype=object)
    arr[:] = records
    if spec.shape == () and not as_examples_api:
        arr = arr[:1].reshape(())
    return {string_inputs[0]: arr}
