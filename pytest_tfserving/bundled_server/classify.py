"""Classify and Regress in the bundled server: tf.Examples in, ClassificationResult /
RegressionResult out.

The Input's ``example_list`` (or ``example_list_with_context``, context merged into each example)
is serialized into the signature's single input, the model runs through the same
pipeline as Predict (batching included), and the outputs become results as TF Serving's
classifier.cc / regressor.cc build them: ``classes`` (string [batch, n]) and/or ``scores``
(float [batch, n]); ``outputs`` (float [batch] or [batch, 1]).
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.servable import Arrays, Servable, SignatureRunner
from pytest_tfserving.bundled_server.status import invalid
from pytest_tfserving.model import CLASSIFY_METHOD, REGRESS_METHOD


def serialized_examples(inp: Any) -> np.ndarray[Any, Any]:
    """The Input proto as a 1-D object array of serialized tf.Examples."""
    from tensorflow.core.example import example_pb2

    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        data = [ex.SerializeToString() for ex in inp.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        data = []
        for ex in inp.example_list_with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(ctx)
            merged.MergeFrom(ex)
            data.append(merged.SerializeToString())
    else:
        raise invalid("Input is empty: set example_list or example_list_with_context")
    if not data:
        raise invalid("Input is empty: it holds no examples")
    arr = np.empty(len(data), dtype=object)
    arr[:] = data
    return arr


_KIND = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


def check_outputs(runner: SignatureRunner, method: str) -> None:
    """The outputs TF Serving's Pre-Process{Classification,Regression} require, checked before
    the model runs."""
    if method == CLASSIFY_METHOD and not {"classes", "scores"} & set(runner.outputs):
        raise invalid('Expected classification signature outputs to contain at least one of '
                      f'"classes" or "scores". Signature \'{runner.name}\' has outputs '
                      f"{sorted(runner.outputs)}")
    if method == REGRESS_METHOD and len(runner.outputs) != 1:
        raise invalid(f"Expected one output Tensor. Signature '{runner.name}' has outputs "
                      f"{sorted(runner.outputs)}")


def string_input(runner: SignatureRunner, method: str, check_method: bool = False) -> str:
    """The signature's single input key (the serialized tf.Examples go there). Its method_name
    is checked against ``method`` only under ``--enable_signature_method_name_check``, as TF
    Serving does (TF2 SavedModels give every signature the predict method)."""
    if check_method and runner.method_name != method:
        raise invalid(f"Expected {_KIND.get(method, method)} signature method_name to be "
                      f"{method}. Was: {runner.method_name}")
    if len(runner.inputs) != 1:
        raise invalid(f"Expected one input Tensor in signature '{runner.name}', got "
                      f"{len(runner.inputs)}")
    check_outputs(runner, method)
    # the examples are fed by tensor name whatever dtype the SignatureDef declares, as TF
    # Serving's PreProcessClassification/Regression (TF rejects a tensor that is no string)
    return next(iter(runner.inputs))


def prepare(core: Core, request: Any, method: str, servable: Servable
            ) -> tuple[SignatureRunner, str, np.ndarray[Any, Any]]:
    """Check the signature on ``servable`` (held by the caller); returns the runner, the input
    key and the examples."""
    runner = core.signature(servable, request.model_spec.signature_name)
    key = string_input(runner, method, core.options.method_name_check)
    examples = serialized_examples(request.input)
    core.metrics.record_examples(servable.name, len(examples))
    return runner, key, examples


def submit(core: Core, runner: SignatureRunner, key: str, examples: np.ndarray[Any, Any],
            api: str) -> cf.Future[Arrays]:
    """Run the serialized examples through the batching pipeline; a future of the outputs."""
    return core.submit(runner, {key: examples}, tuple(runner.outputs), api)


def classification(servable: Servable, runner: SignatureRunner, outputs: Arrays,
                    n: int) -> Any:
    """The ClassificationResponse that TF Serving's classifier.cc builds from ``outputs``."""
    from tensorflow_serving.apis import classification_pb2

    response = classification_pb2.ClassificationResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = runner.name
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise invalid(f"Signature '{runner.name}' has neither 'classes' nor 'scores' outputs")
    for arr, what in ((classes, "classes"), (scores, "scores")):
        if arr is not None and (arr.ndim != 2 or arr.shape[0] != n):
            raise invalid(f"Expected {what} Tensor of shape [{n}, num_classes], got "
                          f"{list(arr.shape)}")
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    for i in range(n):
        row = response.result.classifications.add()
        for j in range(width):
            cls = row.classes.add()
            if classes is not None:
                value = classes[i, j]
                cls.label = value.decode("utf-8", "replace") if isinstance(value, bytes) \
                    else str(value)
            if scores is not None:
                cls.score = float(scores[i, j])
    return response


def regression(servable: Servable, runner: SignatureRunner, outputs: Arrays, n: int) -> Any:
    """The RegressionResponse that TF Serving's regressor.cc builds from ``outputs``."""
    from tensorflow_serving.apis import regression_pb2

    response = regression_pb2.RegressionResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = runner.name
    if "outputs" in outputs:
        values = outputs["outputs"]
    elif len(outputs) == 1:
        values = next(iter(outputs.values()))
    else:
        raise invalid(f"Signature '{runner.name}' has no 'outputs' output")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != n:
        raise invalid(f"Expected output Tensor shape to be [{n}] or [{n}, 1], got "
                      f"{list(values.shape)}")
    for v in values:
        response.result.regressions.add().value = float(v)
    return response


_BUILD = {CLASSIFY_METHOD: ("Classify", classification), REGRESS_METHOD: ("Regress", regression)}


async def run_async(core: Core, request: Any, method: str) -> Any:
    """Classify or Regress (``method``) through the batching pipeline, awaited (gRPC)."""
    api, build = _BUILD[method]
    with core.held(request.model_spec) as servable:
        runner, key, ex = prepare(core, request, method, servable)
        out = await core.run_async(runner, {key: ex}, tuple(runner.outputs), api)
    return build(servable, runner, out, len(ex))


def run_sync(core: Core, request: Any, method: str, servable: Servable | None = None,
             timeout_s: float | None = None) -> Any:
    """Classify or Regress (``method``) through the batching pipeline, waiting up to
    ``timeout_s`` (REST, warmup: warmup passes the servable it is loading)."""
    api, build = _BUILD[method]
    with core.held(request.model_spec, servable) as servable:
        runner, key, ex = prepare(core, request, method, servable)
        out = submit(core, runner, key, ex, api).result(timeout_s)
    return build(servable, runner, out, len(ex))


async def classify_async(core: Core, request: Any) -> Any:
    return await run_async(core, request, CLASSIFY_METHOD)


def classify_sync(core: Core, request: Any, servable: Servable | None = None) -> Any:
    return run_sync(core, request, CLASSIFY_METHOD, servable)


async def regress_async(core: Core, request: Any) -> Any:
    return await run_async(core, request, REGRESS_METHOD)


def regress_sync(core: Core, request: Any, servable: Servable | None = None) -> Any:
    return run_sync(core, request, REGRESS_METHOD, servable)
