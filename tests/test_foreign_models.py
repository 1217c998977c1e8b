"""The default gate suite on models nobody here wrote: TF Serving's own test models.

Small stand-ins, built with TensorFlow in the tests, reproduce what those models do to the
plugin: a TF1 model in a zero-padded version dir (``00000042``) with a 1-D input and
tf.Example classify/regress signatures; a TF1 model with reference variables, signatures
without inputs and a shapeless input, all but one writing the variable (``saved_model_counter``);
a TF1 model whose SignatureDefs carry no shapes and declare DT_FLOAT for a tf.Example input
(``saved_model_half_plus_three``); a TF2 model whose tf.Example signature has method_name
predict. Each is gated through ``pytester.runpytest_subprocess`` and every gate's verdict and
message is asserted. ``test_tf_serving_testdata`` runs the suite on TF Serving's real testdata
when ``TFS_TESTDATA`` points at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("bundled-e2e")

# A short, lenient SLA: these tests are about which verdict each gate earns, not about latency.
QUICK = ["--tfs-backend=bundled", "--tfs-sla-duration=1", "--tfs-sla-warmup=0.5",
         "--tfs-sla-stability-pct=0", "--tfs-sla-min-qps=50", "--tfs-sla-p99-ms=2000",
         # enough to decide on a few hundred requests: a verdict, not a latency claim
         "--tfs-sla-confidence=0.5", "--tfs-sla-max-error-rate=0.05",
         "--tfs-warmup-max-cold-ratio=1000", "--tfs-warmup-steady-requests=5",
         "-p", "no:cacheprovider"]
PREDICT = "tensorflow/serving/predict"


# --- stand-ins ------------------------------------------------------------------------------

def _signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
    import tensorflow as tf

    utils = tf.compat.v1.saved_model.utils
    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        inputs={k: utils.build_tensor_info(t) for k, t in inputs.items()},
        outputs={k: utils.build_tensor_info(t) for k, t in outputs.items()}, method_name=method)


def _save_tf1(session: Any, version_dir: Path, signatures: dict[str, Any]) -> Path:
    import tensorflow as tf

    builder = tf.compat.v1.saved_model.Builder(str(version_dir))
    builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
    builder.save()
    return version_dir


def build_tf1_examples(base: Path) -> Path:
    """half_plus_two as TF Serving exports it, in version dir 00000042: serving_default takes
    x float[-1] (1-D), classify/regress take serialized tf.Example (feature x)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        a, b = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(tf.reshape(parsed["x"], [-1]), name="x")
        y = tf.add(a * x, b, name="y")
        scores = tf.reshape(y, [-1, 1], name="scores")
        session.run(v1.global_variables_initializer())
        return _save_tf1(session, base / "00000042", {
            "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            "classify_x_to_y": _signature({"inputs": serialized}, {"scores": scores},
                                          "tensorflow/serving/classify"),
            "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": scores},
                                         "tensorflow/serving/regress"),
        })


def build_tf1_counter(base: Path) -> Path:
    """saved_model_counter: a reference variable, three signatures without inputs, one with a
    shapeless input; every signature but get_counter writes the variable."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        counter = v1.Variable(0.0, name="counter", use_resource=False)
        with tf.name_scope("incr_counter_op"):
            incr = counter.assign_add(1.0)
        delta = v1.placeholder(tf.float32, name="delta")  # no shape
        with tf.name_scope("incr_counter_by_op"):
            incr_by = counter.assign_add(delta)
        with tf.name_scope("reset_counter_op"):
            reset = counter.assign(0.0)
        session.run(v1.global_variables_initializer())
        return _save_tf1(session, base / "00000007", {
            "get_counter": _signature({}, {"output": counter}, PREDICT),
            "incr_counter": _signature({}, {"output": incr}, PREDICT),
            "incr_counter_by": _signature({"delta": delta}, {"output": incr_by}, PREDICT),
            "reset_counter": _signature({}, {"output": reset}, PREDICT),
        })


def build_tf1_legacy(base: Path) -> Path:
    """saved_model_half_plus_three: SignatureDefs without tensor_shape, and a regress signature
    that declares DT_FLOAT for its DT_STRING tf.Example placeholder."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(a * x, b, name="y")
        out = tf.identity(y, name="Identity")
        session.run(v1.global_variables_initializer())
        predict = _signature({"x": x}, {"y": y}, PREDICT)
        regress = _signature({"inputs": serialized}, {"outputs": out},
                             "tensorflow/serving/regress")
        regress.inputs["inputs"].dtype = types_pb2.DT_FLOAT  # wrong, as in the original
        for signature in (predict, regress):
            for info in (*signature.inputs.values(), *signature.outputs.values()):
                info.ClearField("tensor_shape")
        return _save_tf1(session, base / "00000123", {
            "serving_default": predict, "tensorflow/serving/regress": regress})


def build_tf2_predict_classify(base: Path) -> Path:
    """A TF2 export: every signature's method_name is predict, the classify one included."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = tf.Variable(0.5), tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
        def predict(self, x: Any) -> dict[str, Any]:
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def classify(self, serialized: Any) -> dict[str, Any]:
            spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
            x = tf.io.parse_example(serialized, spec)["x"]
            return {"scores": self.a * x + self.b}

    module = HalfPlusTwo()
    version = base / "3"
    tf.saved_model.save(module, str(version), signatures={
        "serving_default": module.predict, "classify_x_to_y": module.classify})
    return version


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stand-in's base dir (built once per module)."""
    root = tmp_path_factory.mktemp("foreign")
    built = {
        "tf1_examples": build_tf1_examples(root / "tf1_examples"),
        "tf1_counter": build_tf1_counter(root / "tf1_counter"),
        "tf1_legacy": build_tf1_legacy(root / "tf1_legacy"),
        "tf2_predict_classify": build_tf2_predict_classify(root / "tf2_predict_classify"),
    }
    return {name: version.parent for name, version in built.items()}


# --- helpers --------------------------------------------------------------------------------

def _gate(pytester: pytest.Pytester, model: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run the default suite on ``model``; the pytest result and the gates by name."""
    report = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}.json"
    result = pytester.runpytest_subprocess(f"--tfs-model={model}", f"--tfs-report={report}",
                                           *QUICK, *args)
    data = json.loads(report.read_text())
    return result, {g["name"]: g for g in data["gates"]} | {"_report": data}


def _verdict(gate: dict[str, Any]) -> str:
    return "SKIP" if gate["skipped"] else ("PASS" if gate["passed"] else "FAIL")


def _verdicts(gates: dict[str, Any]) -> dict[str, str]:
    return {name: _verdict(g) for name, g in gates.items() if not name.startswith("_")}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_tfserving", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def _copy(pytester: pytest.Pytester, foreign: dict[str, Path], name: str) -> Path:
    """A writable copy of stand-in ``name`` (warmup make writes into the version dir)."""
    base = pytester.path / name
    shutil.copytree(foreign[name], base)
    return base


def _warmup_make(base: Path, records: int, *more: str) -> subprocess.CompletedProcess[str]:
    return _cli("warmup", "make", "--model", str(base), "--synthetic", str(records), *more)


def _kinds(warmup_file: Path) -> dict[str, set[str]]:
    """Record kinds per signature in a warmup file."""
    from tensorflow_serving.apis import prediction_log_pb2

    from pytest_tfserving.tfrecord import read_records

    out: dict[str, set[str]] = {}
    for raw in read_records(warmup_file):
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        kind = log.WhichOneof("log_type")
        out.setdefault(getattr(log, kind).request.model_spec.signature_name, set()).add(kind)
    return out


# --- unit: what inspection and the traits say about the stand-ins ----------------------------

def test_traits_of_the_stand_ins(foreign: dict[str, Path]) -> None:
    from pytest_tfserving.model import inspect_model
    from pytest_tfserving.servability import model_traits

    examples = inspect_model(foreign["tf1_examples"])
    assert (examples.version, examples.version_dir.name) == (42, "00000042")
    assert examples.signatures["serving_default"].inputs["x"].shape == (None,)
    traits = model_traits(examples)
    assert traits["classify_x_to_y"].takes_examples
    assert not traits["serving_default"].takes_examples
    assert all(t.batching_reason() is None and not t.stateful for t in traits.values())

    counter = model_traits(inspect_model(foreign["tf1_counter"]))
    assert not counter["get_counter"].stateful
    assert counter["get_counter"].batching_reason().startswith("takes no inputs")
    assert counter["incr_counter"].writes == ("AssignAdd 'incr_counter_op/AssignAdd'",)
    assert counter["reset_counter"].writes == ("Assign 'reset_counter_op/Assign'",)
    assert counter["incr_counter_by"].unknown_rank_inputs == ("delta",)

    legacy = inspect_model(foreign["tf1_legacy"])
    assert legacy.signatures["serving_default"].inputs["x"].shape is None  # not a scalar
    regress = model_traits(legacy)["tensorflow/serving/regress"]
    assert regress.takes_examples and regress.batching_reason() is None
    assert regress.dtype_problems == ("input 'inputs': the signature declares DT_FLOAT but graph "
                                      "tensor 'tf_example:0' is DT_STRING",)

    tf2 = model_traits(inspect_model(foreign["tf2_predict_classify"]))
    assert tf2["classify_x_to_y"].method_name == PREDICT
    assert not tf2["classify_x_to_y"].takes_examples  # predict method: Predict API only


def test_tflite_conversion_of_reference_variables_names_the_fix(
        foreign: dict[str, Path]) -> None:
    from pytest_tfserving.int8.quantize import QuantizationError, convert
    from pytest_tfserving.model import inspect_model

    model = inspect_model(foreign["tf1_counter"])
    with pytest.raises(QuantizationError) as caught:
        convert(model.version_dir, model.signature("get_counter"), representative=None)
    assert "The SavedModel keeps TF1 reference variables (VariableV2" in str(caught.value)
    assert "tf.compat.v1.enable_resource_variables()" in str(caught.value)


def test_relative_int8_bound_from_a_perfect_float_metric_says_what_to_set() -> None:
    from pytest_tfserving.int8.metrics import ChangeThreshold

    bound = ChangeThreshold("lower", max_rel_delta=0.05)
    assert bound.violations(0.0, 0.0027) == [
        "worse by 0.0027 from a float value of 0, which no relative bound (allowed 5.00%) can "
        "admit; bound it in the metric's units instead: --tfs-int8-max-delta (max_delta= on "
        "the marker)"]
    assert bound.violations(0.0, 0.0) == []


# --- the suite on each stand-in -------------------------------------------------------------

def test_tf1_zero_padded_model_with_1d_input_and_tf_example_signatures(
        pytester: pytest.Pytester, foreign: dict[str, Path]) -> None:
    base = foreign["tf1_examples"]
    result, gates = _gate(pytester, base)
    assert _verdicts(gates) == {
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"}
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    assert gates["_report"]["model"]["version"] == 42
    assert gates["_report"]["model"]["path"].endswith("00000042")
    assert "2 string op(s) on the serving path of classify_x_to_y, regress_x_to_y" in \
        gates["no_string_ops"]["message"]
    assert "no eval data configured: pass --tfs-eval-data=FILE.npz (arrays x: float[-1] " \
        "plus 'labels')" in gates["int8_delta"]["message"]
    assert "3 signature(s) answered, 3 matched the in-process call" in \
        gates["serving"]["message"]
    per_signature = gates["serving"]["details"]["per_signature"]
    assert per_signature["classify_x_to_y"]["request"] == (
        "tf.Example built from the graph's parse spec, fed as the Classify/Regress APIs do")
    assert gates["warmup"]["message"].startswith(
        f"warmup file invalid: no warmup file at {base}/00000042/assets.extra/"
        "tf_serving_warmup_requests")
    assert f"warmup make --model {base}/00000042 --synthetic 10`" in gates["warmup"]["message"]
    assert gates["sla"]["measured"]["errors"] == {}
    result.stdout.fnmatch_lines([
        "model tf1_examples v42; backend bundled*",
        "serving*PASS*signatures_answered=3*",
        "release gate FAILED",
    ])


def test_warmup_make_on_zero_padded_tf1_model_then_the_gate_replays_it(
        pytester: pytest.Pytester, foreign: dict[str, Path]) -> None:
    base = _copy(pytester, foreign, "tf1_examples")
    made = _warmup_make(base, 3)
    assert made.returncode == 0, made.stderr
    warmup_file = base / "00000042" / "assets.extra" / "tf_serving_warmup_requests"
    assert f"wrote 9 warmup record(s) to {warmup_file}" in made.stdout
    assert _kinds(warmup_file) == {"classify_x_to_y": {"classify_log"},
                                   "regress_x_to_y": {"regress_log"},
                                   "serving_default": {"predict_log"}}
    result, gates = _gate(pytester, base, "--tfs-gates=serving,warmup")
    assert _verdicts(gates) == {"serving": "PASS", "warmup": "PASS"}
    assert gates["warmup"]["measured"]["replayed_records"] == 9
    assert gates["warmup"]["message"].startswith("9 warmup record(s) valid and replayed")
    result.assert_outcomes(passed=2)


def test_tf1_counter_with_reference_variables_and_shapeless_inputs(
        pytester: pytest.Pytester, foreign: dict[str, Path]) -> None:
    """Under the playbook's batching nothing of this model can be served: the serving gate
    fails and says why; the gates that cannot apply skip with the reason."""
    result, gates = _gate(pytester, foreign["tf1_counter"])
    assert _verdicts(gates) == {
        "no_string_ops": "PASS", "direct_tensor_inputs": "PASS", "int8_delta": "SKIP",
        "serving": "FAIL", "warmup": "SKIP", "sla": "SKIP"}
    result.assert_outcomes(passed=2, failed=1, skipped=3)
    assert gates["int8_delta"]["message"].startswith(
        "no eval data configured, and no signature to quantize: model 'tf1_counter' has no "
        "'serving_default' signature and 4 served ones (get_counter, incr_counter, "
        "incr_counter_by, reset_counter)")
    first, second = gates["serving"]["message"].splitlines()
    assert first.startswith("get_counter, incr_counter, reset_counter: Predict failed (")
    assert "Why: each takes no inputs, so TF Serving's batching session has no batch " \
        "dimension to merge and rejects every call to it" in first
    assert first.endswith("gate it the same way: --tfs-batching=off")
    assert second.startswith("incr_counter_by: Predict failed (synthesized, 'delta' of unknown "
                             "rank sent as [4]: ")
    assert "sent as a scalar: " in second
    assert "Why: input(s) 'delta' have no shape in the SignatureDef" in second
    assert gates["warmup"]["message"].startswith(
        "no warmup file, and no signature of ")
    assert "left out 'incr_counter': signature 'incr_counter' writes variables (AssignAdd " \
        "'incr_counter_op/AssignAdd')" in gates["warmup"]["message"]
    assert gates["sla"]["message"].startswith(
        "no signature to load: model 'tf1_counter' has no 'serving_default' signature")
    assert gates["sla"]["message"].endswith("name it with --tfs-sla-signature=NAME")
    assert "Traceback" not in result.stdout.str()


def test_tf1_counter_served_without_batching(pytester: pytest.Pytester,
                                             foreign: dict[str, Path]) -> None:
    """Served as TF Serving's own tests serve it (no batching): every signature answers, the
    ones that write the variable are not compared, and named signatures are gated."""
    result, gates = _gate(pytester, foreign["tf1_counter"], "--tfs-batching=off",
                          "--tfs-sla-signature=get_counter", "--tfs-int8-signature=get_counter")
    assert _verdicts(gates) == {
        "no_string_ops": "PASS", "direct_tensor_inputs": "PASS", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"}
    assert gates["int8_delta"]["message"].startswith(
        "signature 'get_counter' takes no inputs, so there are no eval rows to feed it")
    serving = gates["serving"]
    assert serving["measured"]["signatures_answered"] == 4
    assert serving["measured"]["signatures_compared"] == 1
    summary, note = serving["message"].splitlines()
    assert summary.endswith("4 signature(s) answered, 1 matched the in-process call "
                            "(max abs diff 0)")
    assert note.startswith("Note: incr_counter (AssignAdd 'incr_counter_op/AssignAdd'), "
                           "incr_counter_by (AssignAdd 'incr_counter_by_op/AssignAdd'), "
                           "reset_counter (Assign 'reset_counter_op/Assign') answered but not "
                           "compared")
    requests = {name: v["request"] for name, v in serving["details"]["per_signature"].items()}
    assert requests["incr_counter_by"] == (
        "synthesized, 'delta' of unknown rank sent as a scalar")
    assert gates["warmup"]["message"].endswith(
        "--synthetic 10 --signatures get_counter` (or --from-npz FILE with real inputs).")
    assert gates["sla"]["measured"]["errors"] == {}
    assert "batching off" in gates["sla"]["message"]
    result.assert_outcomes(passed=4, failed=1, skipped=1)


def test_warmup_make_refuses_what_cannot_be_warmed_safely(pytester: pytest.Pytester,
                                                          foreign: dict[str, Path]) -> None:
    base = _copy(pytester, foreign, "tf1_counter")
    everything = _warmup_make(base, 2)
    assert everything.returncode == 2
    assert "error: No signature of " in everything.stderr
    assert "left out 'get_counter': signature 'get_counter' takes no inputs" in \
        everything.stderr
    assert "if production serves without batching, warm it by name: --signatures " \
        "get_counter" in everything.stderr
    stateful = _warmup_make(base, 2, "--signatures", "incr_counter")
    assert stateful.returncode == 2
    assert "error: Refusing to warm 'incr_counter': signature 'incr_counter' writes " \
        "variables (AssignAdd 'incr_counter_op/AssignAdd')" in stateful.stderr
    warmup_file = base / "00000007" / "assets.extra" / "tf_serving_warmup_requests"
    assert not warmup_file.exists()
    named = _warmup_make(base, 2, "--signatures", "get_counter")
    assert named.returncode == 0, named.stderr
    assert "NOTE 'get_counter' is warmed as asked, but signature 'get_counter' takes no " \
        "inputs" in named.stderr
    assert _kinds(warmup_file) == {"get_counter": {"predict_log"}}
    # Under batching the gate knows the file fails the load, and says so before serving it.
    result, gates = _gate(pytester, base, "--tfs-gates=warmup")
    assert _verdicts(gates) == {"warmup": "FAIL"}
    assert "records 0, 1: the predict request for signature 'get_counter' has no input, and " \
        "with --enable_batching TF Serving's batching session rejects it" in \
        gates["warmup"]["message"]


def test_tf1_signatures_without_shapes_and_a_wrong_declared_dtype(
        pytester: pytest.Pytester, foreign: dict[str, Path]) -> None:
    """half_plus_three: x has no declared shape (not a scalar), so it batches and loads; the
    regress signature's DT_FLOAT declaration for a tf.Example placeholder fails
    direct_tensor_inputs, naming the declaration, while serving passes: the server feeds by
    tensor name, as TF Serving does, so the tf.Examples reach the DT_STRING placeholder."""
    result, gates = _gate(pytester, foreign["tf1_legacy"],
                          "--tfs-gates=no_string_ops,direct_tensor_inputs,int8_delta,serving,sla")
    assert _verdicts(gates) == {"no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL",
                                "int8_delta": "SKIP", "serving": "PASS", "sla": "PASS"}
    # the string-op time is measured with tf.Examples fed to the DT_STRING placeholder
    timed = gates["no_string_ops"]["details"]["time_share"]["tensorflow/serving/regress"]
    assert timed["measured"] is True, timed
    assert timed["requests"] == "tf.Example batch of 32 built from the graph's parse spec"
    assert "(arrays x: float[?] plus 'labels')" in gates["int8_delta"]["message"]
    assert "DT_FLOAT" in gates["direct_tensor_inputs"]["message"]
    assert gates["serving"]["details"]["per_signature"]["serving_default"]["compared"] is True
    assert "input(s) 'x' of unknown rank sent as [1] vectors" in gates["sla"]["message"]
    assert gates["sla"]["measured"]["errors"] == {}
    result.assert_outcomes(passed=2, failed=2, skipped=1)


def test_tf2_classify_signature_with_predict_method(pytester: pytest.Pytester,
                                                    foreign: dict[str, Path]) -> None:
    base = _copy(pytester, foreign, "tf2_predict_classify")
    made = _warmup_make(base, 2)
    assert made.returncode == 0, made.stderr
    warmup_file = base / "3" / "assets.extra" / "tf_serving_warmup_requests"
    # method predict: Predict records (a classify_log would be refused by TF Serving's
    # classifier under --enable_signature_method_name_check), carrying tf.Examples
    assert _kinds(warmup_file) == {"classify_x_to_y": {"predict_log"},
                                   "serving_default": {"predict_log"}}
    result, gates = _gate(pytester, base)
    assert _verdicts(gates) == {
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "PASS", "sla": "PASS"}
    assert "2 signature(s) answered, 2 matched the in-process call" in \
        gates["serving"]["message"]
    assert gates["serving"]["details"]["per_signature"]["classify_x_to_y"]["request"] == \
        "warmup record"
    assert gates["warmup"]["measured"]["replayed_records"] == 4
    assert "signature 'classify_x_to_y' input 'serialized' (classify_x_to_y_serialized:0) is " \
        "DT_STRING" in gates["direct_tensor_inputs"]["message"]
    result.assert_outcomes(passed=3, failed=2, skipped=1)


# --- TF Serving's own testdata ---------------------------------------------------------------

TESTDATA_VERDICTS = {
    "saved_model_half_plus_two_cpu": {
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"},
    "saved_model_half_plus_two_tf2_cpu": {
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"},
    "saved_model_counter": {
        "no_string_ops": "PASS", "direct_tensor_inputs": "PASS", "int8_delta": "SKIP",
        "serving": "FAIL", "warmup": "SKIP", "sla": "SKIP"},
    "saved_model_half_plus_three": {  # fed by tensor name, its regress signature answers
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"},
    "saved_model_half_plus_two_2_versions": {
        "no_string_ops": "FAIL", "direct_tensor_inputs": "FAIL", "int8_delta": "SKIP",
        "serving": "PASS", "warmup": "FAIL", "sla": "PASS"},
}


def _testdata() -> Path:
    raw = os.environ.get("TFS_TESTDATA")
    if not raw:
        pytest.skip("TFS_TESTDATA is not set: point it at TF Serving's "
                    "tensorflow_serving/servables/tensorflow/testdata to gate its own models")
    path = Path(raw)
    if not (path / "saved_model_half_plus_two_cpu").is_dir():
        pytest.skip(f"TFS_TESTDATA={raw} has no saved_model_half_plus_two_cpu: point it at "
                    "TF Serving's tensorflow_serving/servables/tensorflow/testdata")
    return path


@pytest.mark.parametrize("name", sorted(TESTDATA_VERDICTS))
def test_tf_serving_testdata(pytester: pytest.Pytester, name: str) -> None:
    """Every gate earns its verdict on TF Serving's own models (read in place, never written:
    the plugin stages the version it serves)."""
    model = _testdata() / name
    result, gates = _gate(pytester, model)
    assert _verdicts(gates) == TESTDATA_VERDICTS[name], \
        {g: gates[g]["message"] for g in TESTDATA_VERDICTS[name]}
    for gate in TESTDATA_VERDICTS[name]:
        assert gates[gate]["message"], gate
    assert "Traceback" not in result.stdout.str()
    report = gates["_report"]["model"]
    assert report["path"] == str(model / ("00000124" if "2_versions" in name else "00000123"))
