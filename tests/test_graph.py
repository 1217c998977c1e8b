"""graph.py, op_kinds.py, op_allowlist.py: reachability, string-op classification and
allowlists on SavedModels built here, plus the string-op time share of string_time.py. Models
are tiny and built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_tfserving.errors import ModelError
from pytest_tfserving.graph import TOP_LEVEL, SavedModelGraph
from pytest_tfserving.op_allowlist import AllowEntry, allow_entries, parse_allowlist
from pytest_tfserving.op_kinds import classify

FEATURES_SPEC = {"uid": ("int64", [])}


def _save(module: Any, path: Path, signatures: dict[str, Any] | Any) -> Path:
    import tensorflow as tf

    version_dir = path / "1"
    tf.saved_model.save(module, str(version_dir), signatures=signatures)
    return version_dir


def _embedding_lookup(path: Path, spec: Any, bucket: Any) -> Path:
    """A model that gathers rows of a 10x4 embedding variable (so the saver's string ops exist)
    at ``bucket(input)``, the input declared by ``spec``."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = tf.Variable(np.arange(40, dtype=np.float32).reshape(10, 4))

        @tf.function(input_signature=[spec])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"vec": tf.gather(self.emb, bucket(x))}

    m = M()
    return _save(m, path, {"serving_default": m.serve})


def build_strings(path: Path) -> Path:
    """The playbook's 'before': tf.Example in, ParseExample + AsString + string hashing."""
    import tensorflow as tf

    def bucket(examples: Any) -> Any:
        f = tf.io.parse_example(examples, {"uid": tf.io.FixedLenFeature([], tf.int64)})
        return tf.strings.to_hash_bucket_fast(tf.strings.as_string(f["uid"]), 10)

    return _embedding_lookup(path, tf.TensorSpec([None], tf.string, name="examples"), bucket)


def build_direct(path: Path) -> Path:
    """The 'after': int64 ids, floormod hashing; variables, so the saver's string ops exist."""
    import tensorflow as tf

    return _embedding_lookup(path, tf.TensorSpec([None], tf.int64, name="uid"),
                             lambda uid: tf.math.floormod(uid, 10))


def build_hidden(path: Path) -> Path:
    """String ops hidden in tf.cond, tf.while_loop and a nested tf.function; one clean
    signature beside them."""
    import tensorflow as tf

    @tf.function
    def nested_hash(ids: Any) -> Any:
        return tf.strings.to_hash_bucket_fast(tf.strings.as_string(ids), 10)

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="uid")])
        def with_cond(self, uid: Any) -> dict[str, Any]:
            out = tf.cond(tf.reduce_sum(uid) > 0,
                          lambda: tf.strings.to_hash_bucket_strong(
                              tf.strings.as_string(uid), 10, [1, 2]),
                          lambda: tf.math.floormod(uid, 10))
            return {"bucket": out}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="uid")])
        def with_while(self, uid: Any) -> dict[str, Any]:
            def body(i: Any, acc: Any) -> tuple[Any, Any]:
                length = tf.strings.length(tf.strings.as_string(uid + i))
                return i + 1, acc + tf.cast(length, tf.int64)

            _, acc = tf.while_loop(lambda i, acc: i < 3, body,
                                   (tf.constant(0, tf.int64), tf.zeros_like(uid)))
            return {"acc": acc}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="uid")])
        def with_nested(self, uid: Any) -> dict[str, Any]:
            return {"bucket": nested_hash(uid) + 1}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="uid")])
        def clean(self, uid: Any) -> dict[str, Any]:
            return {"bucket": tf.math.floormod(uid, 10)}

    m = M()
    return _save(m, path, {"with_cond": m.with_cond, "with_while": m.with_while,
                           "with_nested": m.with_nested, "clean": m.clean})


def build_tf1(path: Path) -> Path:
    """A TF1 graph: serving ops in the top-level graph; 'predict' is numeric, 'as_text' turns
    its result into strings in the same graph."""
    import tensorflow as tf

    version_dir = path / "1"
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((2, 1), np.float32))
        y = tf.matmul(x, w, name="y")
        text = tf.strings.join([tf.strings.as_string(y), "units"], separator=" ", name="text")
        sess.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(str(version_dir))
        sig = tf.compat.v1.saved_model.predict_signature_def
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={
                "serving_default": sig({"x": x}, {"y": y}),
                "as_text": sig({"x": x}, {"text": text})})
        builder.save()
    return version_dir


def rename_op(version_dir: Path, old: str, new: str) -> None:
    """Turn every ``old`` node into an op TF does not know (a stand-in for a custom op)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = version_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == old:
                node.op = new
    pb.write_bytes(proto.SerializeToString())


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("string_models")
    out = {name: builder(root / name) for name, builder in (
        ("strings", build_strings), ("direct", build_direct), ("hidden", build_hidden),
        ("tf1", build_tf1))}
    custom = build_strings(root / "custom")
    rename_op(custom, "StringToHashBucketFast", "TextCustomHashOp")
    out["custom"] = custom
    return out


def _ops(graph: SavedModelGraph, signature: str) -> set[str]:
    return {f.op_type for f in graph.findings(signature)}


def test_strings_model_flags_exact_op_types_with_node_detail(built: dict[str, Path]) -> None:
    graph = SavedModelGraph.load(built["strings"])
    findings = graph.findings("serving_default")
    assert {f.op_type for f in findings} == {"ParseExampleV2", "AsString",
                                             "StringToHashBucketFast"}
    parse = next(f for f in findings if f.op_type == "ParseExampleV2")
    assert parse.signature == "serving_default"
    assert parse.dtype == "DT_STRING"
    assert "serialized" in parse.reason and parse.family == "tf.Example parsing"
    assert parse.function.startswith("__inference_serve")
    assert parse.kind == "string"
    hashing = next(f for f in findings if f.op_type == "StringToHashBucketFast")
    assert "input 'input' DT_STRING" in hashing.reason
    assert hashing.runtime_names == (f"StatefulPartitionedCall/StatefulPartitionedCall/"
                                     f"{hashing.node}",)
    # TF2: the top-level walk stops at the fed placeholder; inside the function the argument
    # is not a node, so the parse downstream of it is found and nothing upstream is crossed
    reach = graph.reach("serving_default")
    assert reach.cut_at == {"serving_default_examples:0"}
    assert not [r for r in reach.nodes if r.function == TOP_LEVEL and r.node.op == "Placeholder"]


def test_direct_model_is_clean_although_saver_has_string_ops(built: dict[str, Path]) -> None:
    graph = SavedModelGraph.load(built["direct"])
    assert graph.findings("serving_default") == []
    off_path = {node.op for _, node in graph.string_ops_anywhere()}
    assert {"StringJoin", "SaveV2", "RestoreV2"} <= off_path  # the saver, never flagged
    reached = graph.reach("serving_default").functions
    assert reached and not any("traced_save" in f or "traced_restore" in f for f in reached)
    assert graph.reach("serving_default").cut_at == {"serving_default_uid:0"}


def test_string_ops_in_cond_while_and_nested_function_are_flagged(
        built: dict[str, Path]) -> None:
    graph = SavedModelGraph.load(built["hidden"])
    assert {"AsString", "StringToHashBucketStrong"} <= _ops(graph, "with_cond")
    assert {"AsString", "StringLength"} <= _ops(graph, "with_while")
    assert {"AsString", "StringToHashBucketFast"} <= _ops(graph, "with_nested")
    assert graph.findings("clean") == []
    # the findings live in branch / body / nested functions, not in the signature's own body
    for name in ("with_cond", "with_while", "with_nested"):
        functions = {f.function for f in graph.findings(name)}
        assert all(fn != TOP_LEVEL for fn in functions)
        assert len(graph.reach(name).functions) >= 3, graph.reach(name).functions


def test_tf1_graph_reachability_is_per_signature(built: dict[str, Path]) -> None:
    graph = SavedModelGraph.load(built["tf1"])
    assert graph.findings("serving_default") == []  # same graph, strings not on its path
    text = graph.findings("as_text")
    assert {"AsString", "StringJoin"} <= {f.op_type for f in text}
    assert all(f.function == TOP_LEVEL for f in text)
    assert "text" in {f.node for f in text}
    assert graph.reach("as_text").cut_at == {"x:0"}
    assert "x" not in {r.node.name for r in graph.reach("as_text").nodes}


def test_unregistered_op_is_reported_unknown(built: dict[str, Path]) -> None:
    findings = SavedModelGraph.load(built["custom"]).findings("serving_default")
    unknown = [f for f in findings if f.kind == "unknown"]
    assert [f.op_type for f in unknown] == ["TextCustomHashOp"]
    assert "not in TF's op registry" in unknown[0].reason


def test_fixture_models_exact_op_types(ctr_strings: Path, ctr_direct: Path) -> None:
    graph = SavedModelGraph.load(ctr_strings / "1")
    assert _ops(graph, "serving_default") == {"ParseExampleV2", "AsString",
                                              "StringToHashBucketFast"}
    assert len(graph.findings("serving_default")) == 7  # 1 parse + 3 x (AsString + hash)
    assert SavedModelGraph.load(ctr_direct / "1").findings("serving_default") == []


def test_unknown_signature_and_corrupt_file_raise_clear_errors(
        built: dict[str, Path], tmp_path: Path) -> None:
    graph = SavedModelGraph.load(built["direct"])
    with pytest.raises(ModelError, match=r"'nope' does not exist .* it has: serving_default"):
        graph.reach("nope")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\x07not a protobuf at all")
    with pytest.raises(ModelError, match="corrupt or not a SavedModel"):
        SavedModelGraph.load(tmp_path / "1")


def test_allowlist_parsing_and_matching(built: dict[str, Path]) -> None:
    entries = parse_allowlist("AsString=ids are text upstream; glob:*Parse*=legacy clients\n"
                              "StringToHash*=until v3", "op")
    assert [(e.kind, e.pattern, e.reason) for e in entries] == [
        ("op", "AsString", "ids are text upstream"), ("node", "*Parse*", "legacy clients"),
        ("op", "StringToHash*", "until v3")]
    findings = SavedModelGraph.load(built["strings"]).findings("serving_default")
    assert all(any(e.matches(f) for e in entries) for f in findings)
    assert not AllowEntry("op", "Regex*", "r").matches(findings[0])
    with pytest.raises(ValueError, match="needs PATTERN=REASON"):
        parse_allowlist("AsString", "op")
    assert allow_entries({"examples": "classify API"}, "input", "m")[0].matches_input(
        "serving_default", "examples")
    with pytest.raises(ValueError, match="is not an allowlist"):
        allow_entries(3, "op", "m")


def test_classify_carriers_calls_and_families() -> None:
    from tensorflow.core.framework import node_def_pb2, types_pb2

    const = node_def_pb2.NodeDef(name="c", op="Const")
    const.attr["dtype"].type = types_pb2.DT_STRING
    assert classify(const).kind == "clean"  # a string constant alone does no work
    reshape = node_def_pb2.NodeDef(name="r", op="Reshape")
    reshape.attr["T"].type = types_pb2.DT_STRING
    assert classify(reshape).kind == "string"
    floormod = node_def_pb2.NodeDef(name="f", op="FloorMod")
    floormod.attr["T"].type = types_pb2.DT_INT64
    assert classify(floormod).kind == "clean"


def test_time_share_is_measured_high_for_strings_and_zero_for_direct(
        built: dict[str, Path]) -> None:
    from pytest_tfserving.model import inspect_model
    from pytest_tfserving.string_time import measure

    strings = inspect_model(built["strings"])
    graph = SavedModelGraph.load(built["strings"])
    share = measure(strings, {"serving_default": graph.findings("serving_default")},
                    runs=10)["serving_default"]
    assert share.measured and share.share is not None and share.share > 0
    assert {op["op_type"] for op in share.top_string_ops} & {"ParseExampleV2",
                                                             "_TensorToHashBucketFast",
                                                             "StringToHashBucketFast"}
    direct = inspect_model(built["direct"])
    clean = measure(direct, {"serving_default": []}, runs=10)["serving_default"]
    assert clean.measured and clean.share == 0.0 and clean.total_us > 0


def test_call_to_function_missing_from_library_is_unknown(built: dict[str, Path],
                                                          tmp_path: Path) -> None:
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    version_dir = tmp_path / "1"
    shutil.copytree(built["direct"], version_dir)
    pb = version_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    library = proto.meta_graphs[0].graph_def.library
    kept = [f for f in library.function if not f.signature.name.startswith("__inference_serve")]
    del library.function[:]
    library.function.extend(kept)
    pb.write_bytes(proto.SerializeToString())
    (finding,) = SavedModelGraph.load(version_dir).findings("serving_default")
    assert finding.kind == "unknown" and finding.op_type == "StatefulPartitionedCall"
    assert "__inference_serve" in finding.reason and "not in the SavedModel" in finding.reason
