"""graph.py on TF1 graphs: a signature's fed input tensors cut the walk (TF Serving feeds inputs
by tensor name, so nothing upstream of a fed tensor runs), tensor by tensor; and a signature
input whose declared dtype is not its graph tensor's is reported (graph + direct_tensor_inputs
gate). The cut rule is checked against TF's own pruning by running each signature in a
tf.compat.v1 Session the way TF Serving does (feeds and fetches by tensor name)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_tfserving.errors import ModelError
from pytest_tfserving.graph import TOP_LEVEL, SavedModelGraph

STRING_INPUT = "tf_example"  # the one DT_STRING placeholder of the TF1 model below


def _example(a: float, b: int) -> bytes:
    import tensorflow as tf

    feature = {"a": tf.train.Feature(float_list=tf.train.FloatList(value=[a])),
               "b": tf.train.Feature(int64_list=tf.train.Int64List(value=[b]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def build_tf1_parse(version_dir: Path) -> dict[str, str]:
    """half_plus_two's shape of graph: serialized tf.Examples -> ParseExample -> Identity 'x'.

    Signatures (inputs -> outputs):
      serving_default      x:0 -> y                       clean: the parse is upstream of x:0
      classify             tf_example:0 -> scores         ParseExample
      half_fed             ParseExample:0 -> y_raw, bucket  :1 still needed: ParseExample runs,
                                                            and AsString + hash on :1
      both_fed             ParseExample:0, :1 -> same     hashing only (it is downstream)
      raw_fed              ParseExample:0 -> y_raw        clean
      ctl_fed_identity     x:0 -> z (z has ^x)            x is an Identity: fed, it still runs for
                                                            its control edge, so the parse runs
      ctl_fed_placeholder  p:0 -> w (w has ^p; p has ^ParseExample)  clean: a fed Placeholder's
                                                            control edges move to the feed
    Returns the raw ParseExample output tensor names ("a" is output 0, "b" output 1).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        examples = v1.placeholder(tf.string, [None], name=STRING_INPUT)
        parsed = v1.io.parse_example(examples, {"a": v1.io.FixedLenFeature([1], tf.float32),
                                                "b": v1.io.FixedLenFeature([1], tf.int64)})
        a, b = parsed["a"], parsed["b"]
        assert a.op is b.op and (a.value_index, b.value_index) == (0, 1), (a.name, b.name)
        x = tf.identity(a, name="x")
        y = tf.add(x * 0.5, 2.0, name="y")
        y_raw = tf.add(a * 0.5, 2.0, name="y_raw")
        bucket = tf.strings.to_hash_bucket_fast(tf.strings.as_string(b), 10, name="bucket")
        with tf.control_dependencies([x]):
            z = tf.identity(x * 3.0, name="z")
        with tf.control_dependencies([a.op]):
            p = v1.placeholder(tf.float32, [None, 1], name="p")
        with tf.control_dependencies([p]):
            w = tf.identity(tf.constant([[1.0]]), name="w")
        sig = v1.saved_model.predict_signature_def
        builder = v1.saved_model.Builder(str(version_dir))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "serving_default": sig({"x": x}, {"y": y}),
            "classify": v1.saved_model.classification_signature_def(examples, None, y),
            "half_fed": sig({"a": a}, {"y": y_raw, "bucket": bucket}),
            "both_fed": sig({"a": a, "b": b}, {"y": y_raw, "bucket": bucket}),
            "raw_fed": sig({"a": a}, {"y": y_raw}),
            "ctl_fed_identity": sig({"x": x}, {"z": z}),
            "ctl_fed_placeholder": sig({"p": p}, {"w": w}),
        })
        builder.save()
    return {"a": a.name, "b": b.name}


def build_tf1_mismatch(version_dir: Path) -> None:
    """half_plus_three's defect and two more: SignatureDefs whose declared input dtype is not
    the graph tensor's, built by hand (build_tensor_info would take the tensor's dtype)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        examples = v1.placeholder(tf.string, [None], name=STRING_INPUT)
        parsed = v1.io.parse_example(examples, {"a": v1.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["a"], name="x")
        y = tf.add(x * 0.5, 3.0, name="y")
        uid = v1.placeholder(tf.int64, [None], name="uid")
        bucket = tf.math.floormod(uid, 10, name="bucket")

        def info(name: str, dtype: int) -> Any:
            return meta_graph_pb2.TensorInfo(name=name, dtype=dtype)

        def signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
            return v1.saved_model.build_signature_def(inputs, outputs, method)

        predict, regress = "tensorflow/serving/predict", "tensorflow/serving/regress"
        out_y = {"outputs": v1.saved_model.build_tensor_info(y)}
        builder = v1.saved_model.Builder(str(version_dir))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            # half_plus_three: regress input declared DT_FLOAT, the placeholder is DT_STRING
            "regress": signature({"inputs": info("tf_example:0", types_pb2.DT_FLOAT)}, out_y,
                                 regress),
            "ids": signature({"uid": info("uid:0", types_pb2.DT_INT32)},
                             {"bucket": v1.saved_model.build_tensor_info(bucket)}, predict),
            "ghost": signature({"x": info("x:0", types_pb2.DT_FLOAT),
                                "gone": info("gone:0", types_pb2.DT_FLOAT),
                                "far": info("x:3", types_pb2.DT_FLOAT)}, out_y, predict),
        })
        builder.save()


@pytest.fixture(scope="module")
def tf1_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tf1_feeds")
    parse_dir = root / "parse" / "1"
    names = build_tf1_parse(parse_dir)
    mismatch_dir = root / "mismatch" / "1"
    build_tf1_mismatch(mismatch_dir)
    return {"parse": parse_dir, "mismatch": mismatch_dir, "tensors": names}


def _ops(graph: SavedModelGraph, signature: str) -> set[str]:
    return {f.op_type for f in graph.findings(signature)}


def _reached(graph: SavedModelGraph, signature: str) -> set[str]:
    return {r.node.name for r in graph.reach(signature).nodes if r.function == TOP_LEVEL}


def test_signature_fed_below_a_parse_is_clean_and_the_parsing_one_is_flagged(
        tf1_models: dict[str, Any]) -> None:
    graph = SavedModelGraph.load(tf1_models["parse"])
    assert graph.findings("serving_default") == []
    reach = graph.reach("serving_default")
    assert reach.cut_at == {"x:0"}
    assert _reached(graph, "serving_default") & {"x", STRING_INPUT} == set()
    assert {n for n in _reached(graph, "serving_default") if "ParseExample" in n} == set()

    classify = graph.findings("classify")
    assert {f.op_type for f in classify} in ({"ParseExample"}, {"ParseExampleV2"})
    (parse,) = classify
    assert parse.family == "tf.Example parsing" and parse.function == TOP_LEVEL
    assert "x" in _reached(graph, "classify")  # the same Identity, not fed here
    assert graph.reach("classify").cut_at == {f"{STRING_INPUT}:0"}


def test_cut_is_per_tensor_not_per_op(tf1_models: dict[str, Any]) -> None:
    graph = SavedModelGraph.load(tf1_models["parse"])
    a, b = tf1_models["tensors"]["a"], tf1_models["tensors"]["b"]
    parse_op = a.split(":")[0]
    assert b == f"{parse_op}:1"
    # :0 is fed, but :1 still feeds the hash: the op runs whole, and so does its string input
    half = graph.findings("half_fed")
    assert {f.op_type for f in half} - {"ParseExample", "ParseExampleV2"} == {
        "AsString", "StringToHashBucketFast"}
    assert parse_op in {f.node for f in half}
    assert STRING_INPUT in _reached(graph, "half_fed")
    assert graph.reach("half_fed").cut_at == {a}  # the walk did meet the fed :0 and stop there
    # both outputs fed: the parse is gone, the hashing downstream of :1 still runs
    assert _ops(graph, "both_fed") == {"AsString", "StringToHashBucketFast"}
    assert parse_op not in _reached(graph, "both_fed")
    assert graph.reach("both_fed").cut_at == {a, b}
    # only :0 fed and only :0 needed
    assert graph.findings("raw_fed") == []
    assert parse_op not in _reached(graph, "raw_fed")


def test_control_edges_of_fed_nodes_follow_tf_feed_rewrite(tf1_models: dict[str, Any]) -> None:
    graph = SavedModelGraph.load(tf1_models["parse"])
    # x:0 is fed, but z has ^x and x is an Identity: TF keeps that edge, so x and the parse run
    assert _ops(graph, "ctl_fed_identity") & {"ParseExample", "ParseExampleV2"}
    assert "x" in _reached(graph, "ctl_fed_identity")
    assert graph.reach("ctl_fed_identity").cut_at == {"x:0"}
    # w has ^p and p (a fed Placeholder) has ^ParseExample: TF moves p's control edges to the
    # feed node, so neither p nor the parse runs
    assert graph.findings("ctl_fed_placeholder") == []
    assert graph.reach("ctl_fed_placeholder").cut_at == {"^p"}
    assert "p" not in _reached(graph, "ctl_fed_placeholder")


def test_cut_rule_agrees_with_tf_session_pruning(tf1_models: dict[str, Any]) -> None:
    """Run every signature that does not feed the string placeholder with TF's session, feeding
    and fetching by tensor name as TF Serving does, and leaving ``tf_example`` unfed: TF fails
    ("must feed a value for placeholder tensor 'tf_example'") exactly when our walk says the
    placeholder runs."""
    import tensorflow as tf

    graph = SavedModelGraph.load(tf1_models["parse"])
    v1 = tf.compat.v1
    verdicts: dict[str, tuple[bool, bool]] = {}
    with tf.Graph().as_default(), v1.Session() as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], str(tf1_models["parse"]))
        for name, sig in meta.signature_def.items():
            feeds = {info.name: np.zeros((2, 1), np.float32 if info.dtype == 1 else np.int64)
                     for info in sig.inputs.values()}
            if f"{STRING_INPUT}:0" in feeds:
                feeds[f"{STRING_INPUT}:0"] = np.array([_example(1.0, 3), _example(2.0, 4)])
                sess.run([i.name for i in sig.outputs.values()], feeds)  # runs: fed
                continue
            try:
                sess.run([i.name for i in sig.outputs.values()], feeds)
                tf_runs_placeholder = False
            except tf.errors.InvalidArgumentError as exc:
                assert STRING_INPUT in str(exc), exc
                tf_runs_placeholder = True
            verdicts[name] = (tf_runs_placeholder, STRING_INPUT in _reached(graph, name))
    assert set(verdicts) == {"serving_default", "half_fed", "both_fed", "raw_fed",
                             "ctl_fed_identity", "ctl_fed_placeholder"}
    assert {n: tf_says for n, (tf_says, _) in verdicts.items()} == {
        "serving_default": False, "half_fed": True, "both_fed": False, "raw_fed": False,
        "ctl_fed_identity": True, "ctl_fed_placeholder": False}
    assert all(tf_says == ours for tf_says, ours in verdicts.values()), verdicts


def test_input_dtype_mismatch_is_reported_with_name_and_both_dtypes(
        tf1_models: dict[str, Any]) -> None:
    graph = SavedModelGraph.load(tf1_models["mismatch"])
    (regress,) = graph.input_dtypes("regress")
    assert (regress.key, regress.tensor, regress.declared, regress.graph) == (
        "inputs", "tf_example:0", "DT_FLOAT", "DT_STRING")
    assert regress.effective == "DT_STRING"
    assert regress.problem == ("the signature declares DT_FLOAT but graph tensor "
                               "'tf_example:0' is DT_STRING")
    # the declaration is wrong, the graph is right: the parse behind it is still flagged
    assert _ops(graph, "regress") & {"ParseExample", "ParseExampleV2"}
    (ids,) = graph.input_dtypes("ids")
    assert (ids.declared, ids.graph) == ("DT_INT32", "DT_INT64") and ids.problem
    by_key = {d.key: d for d in graph.input_dtypes("ghost")}
    assert by_key["x"].problem is None and by_key["x"].graph == "DT_FLOAT"
    assert by_key["gone"].graph is None
    assert by_key["gone"].problem == "tensor 'gone:0' is not in the graph"
    assert by_key["far"].problem == ("tensor 'x:3' is not in the graph: Identity node 'x' has "
                                     "1 output(s)")
    (ok,) = graph.input_dtypes("serving_default")
    assert (ok.declared, ok.graph, ok.problem) == ("DT_FLOAT", "DT_FLOAT", None)
    with pytest.raises(ModelError, match="'nope' does not exist"):
        graph.input_dtypes("nope")


def test_direct_inputs_gate_reports_dtype_mismatch(pytester: pytest.Pytester,
                                                   tf1_models: dict[str, Any]) -> None:
    report = pytester.path / "gate.json"
    model = tf1_models["mismatch"].parent
    result = pytester.runpytest_subprocess(
        f"--tfs-model={model}", "--tfs-gates=no_string_ops,direct_tensor_inputs",
        "--tfs-signatures=serving_default,regress,ids", "--tfs-string-time=off",
        f"--tfs-report={report}", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*gate direct_tensor_inputs FAILED: signature 'regress' input 'inputs' (tf_example:0) "
        "is DT_STRING in the graph, although the signature declares DT_FLOAT (serialized "
        "tf.Example, parsed on the serving path by ParseExample*",
        "*signature 'regress' input 'inputs': the signature declares DT_FLOAT but graph "
        "tensor 'tf_example:0' is DT_STRING*",
        "*signature 'ids' input 'uid': the signature declares DT_INT32 but graph tensor "
        "'uid:0' is DT_INT64*",
        "*Remedy: re-export the model so that each SignatureDef input declares the dtype*",
    ])
    gates = {g["name"]: g for g in json.loads(report.read_text())["gates"]}
    direct = gates["direct_tensor_inputs"]
    assert direct["passed"] is False
    assert direct["threshold"] == {"string_inputs": 0, "dtype_mismatches": 0}
    assert direct["measured"]["dtype_mismatches"] == 2
    # in the order of --tfs-signatures
    assert direct["measured"]["mismatched_inputs"] == "regress/inputs,ids/uid"
    assert {(m["signature"], m["input"], m["declared_dtype"], m["graph_dtype"])
            for m in direct["details"]["dtype_mismatches"]} == {
        ("regress", "inputs", "DT_FLOAT", "DT_STRING"), ("ids", "uid", "DT_INT32", "DT_INT64")}
    (item,) = direct["details"]["findings"]  # the graph's dtype decides what is a string input
    assert (item["signature"], item["input"], item["dtype"], item["declared_dtype"]) == (
        "regress", "inputs", "DT_STRING", "DT_FLOAT")
    ops = gates["no_string_ops"]
    assert {f["signature"] for f in ops["details"]["findings"]} == {"regress"}


# --- TF Serving's own test models (optional) -----------------------------------------------------

TESTDATA = os.environ.get("TFS_TESTDATA", "")


def _tfs_graph(model: str) -> SavedModelGraph:
    if not TESTDATA:
        pytest.skip("TFS_TESTDATA is not set: point it at TF Serving's "
                    "tensorflow_serving/servables/tensorflow/testdata to check its models")
    base = Path(TESTDATA) / model
    if not base.is_dir():
        pytest.skip(f"TFS_TESTDATA={TESTDATA} has no {model}/")
    versions = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert versions, f"{base} has no numeric version dir"
    return SavedModelGraph.load(versions[-1])  # zero-padded ("00000123"): load it directly


def test_tfs_half_plus_two_cpu_serving_default_is_clean() -> None:
    graph = _tfs_graph("saved_model_half_plus_two_cpu")
    verdicts = {s: sorted(_ops(graph, s)) for s in graph.signature_names}
    assert verdicts == {
        "serving_default": [],  # x:0 is fed; the ParseExample above it is not run
        "classify_x_to_y": ["ParseExample"], "regress_x_to_y": ["ParseExample"],
        "regress_x_to_y2": ["ParseExample"],
        # fed x2:0, an Identity of ParseExample:1: clean by the same rule
        "regress_x2_to_y3": [],
    }
    assert graph.reach("serving_default").cut_at == {"x:0"}
    assert all(d.problem is None for s in graph.signature_names for d in graph.input_dtypes(s))


def test_tfs_half_plus_three_regress_declares_float_for_a_string_placeholder() -> None:
    graph = _tfs_graph("saved_model_half_plus_three")
    assert graph.findings("serving_default") == []
    (regress,) = graph.input_dtypes("tensorflow/serving/regress")
    assert (regress.key, regress.tensor, regress.declared, regress.graph) == (
        "inputs", "tf_example:0", "DT_FLOAT", "DT_STRING")
    assert _ops(graph, "tensorflow/serving/regress") == {"ParseExample"}


def test_tfs_half_plus_two_tf2_cpu_functions_are_cut_at_their_arguments() -> None:
    graph = _tfs_graph("saved_model_half_plus_two_tf2_cpu")
    verdicts = {s: sorted(_ops(graph, s)) for s in graph.signature_names}
    assert verdicts == {"serving_default": [], "classify_x2_to_y3": [], "regress_x2_to_y3": [],
                        "classify_x_to_y": ["ParseExampleV2"],
                        "regress_x_to_y": ["ParseExampleV2"],
                        "regress_x_to_y2": ["ParseExampleV2"]}
    # a fed PlaceholderWithDefault: its default is not computed
    assert graph.reach("serving_default").cut_at == {"serving_default_x:0"}
    assert "serving_default_x/input" not in _reached(graph, "serving_default")


def test_tfs_counter_signatures_without_inputs_are_clean() -> None:
    graph = _tfs_graph("saved_model_counter")
    assert {s: graph.findings(s) for s in graph.signature_names} == {
        "get_counter": [], "incr_counter": [], "incr_counter_by": [], "reset_counter": []}
    assert graph.reach("incr_counter").cut_at == set()  # nothing fed: nothing cut
    assert graph.reach("incr_counter_by").cut_at == {"delta:0"}
    (delta,) = graph.input_dtypes("incr_counter_by")
    assert (delta.declared, delta.graph, delta.problem) == ("DT_FLOAT", "DT_FLOAT", None)
