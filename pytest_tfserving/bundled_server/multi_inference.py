"""MultiInference: one shared Input of tf.Examples, several classify/regress tasks on one model.

Semantics follow TF Serving's multi_inference.cc / multi_inference_helper.cc:

* the servable is resolved from the first task's ``model_spec`` (no tasks: INVALID_ARGUMENT
  ``ModelSpec has no name specified.``);
* every task must name a model (``Found ModelSpec with an empty model name.``), the same model
  (``All ModelSpecs in a MultiInferenceRequest must access the same model name.``), a signature at
  most once (``Duplicate evaluation of signature: <name>``; empty means ``serving_default``) that
  exists (``Requested signature not found in model graph: <name>``), and a method of
  ``tensorflow/serving/classify`` or ``tensorflow/serving/regress`` (anything else is
  UNIMPLEMENTED ``Unsupported signature method_name: <method>``, as TF Serving answers);
* all tasks are checked before the Input is read (an empty Input: ``Input is empty``);
* the Input is serialized once, every task's signature runs on those examples, and the results
  come back in request order, each with the model name, the signature name and the version.

TF Serving runs the union of the tasks' tensors in one Session.Run; a TF2 SavedModel has one
function per signature, so here each signature runs once on the shared examples (concurrently,
through the same pipeline as Classify/Regress, batching included). TF Serving records no
request count or latency for MultiInference, only the example count, and neither does this.

The warmup replays ``multi_inference_log`` records (saved_model_warmup.cc runs them through
RunMultiInference) with ``multi_inference_sync``: the same checks and responses, against the
version being loaded, so a task's model name must be set and consistent but is not looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.bundled_server import classify
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.servable import Arrays, Servable, SignatureRunner
from pytest_tfserving.bundled_server.status import ServingError, invalid
from pytest_tfserving.model import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD

_API = {CLASSIFY_METHOD: "Classify", REGRESS_METHOD: "Regress"}


@dataclass(frozen=True)
class Task:
    """One validated InferenceTask: the runner to call, its string input key and its method."""

    runner: SignatureRunner
    input_key: str
    method: str


@contextlib.contextmanager
def plan(core: Core, request: Any, servable: Servable | None = None
         ) -> Iterator[tuple[Servable, list[Task], np.ndarray[Any, Any]]]:
    """Validate ``request`` as TF Serving does; yields the servable, the tasks and the examples.

    ``servable`` skips the lookup (for a warmup replay against the version being loaded). The
    servable is held while the block runs.
    """
    tasks = list(request.tasks)
    if not tasks:
        raise invalid("ModelSpec has no name specified.")
    if servable is None and not tasks[0].model_spec.name:
        raise invalid("ModelSpec has no name specified.")
    with core.held(tasks[0].model_spec, servable) as held:
        planned, examples = _plan_tasks(core, request, tasks, held)
        yield held, planned, examples


def _plan_tasks(core: Core, request: Any, tasks: list[Any], servable: Servable
                ) -> tuple[list[Task], np.ndarray[Any, Any]]:
    model_name = ""
    seen: set[str] = set()
    planned: list[Task] = []
    for task in tasks:
        spec = task.model_spec
        if not spec.name:
            raise invalid("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = spec.name
        elif spec.name != model_name:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same "
                          "model name.")
        signature = spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise invalid(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        runner = servable.signatures.get(signature)
        if runner is None:
            raise invalid(f"Requested signature not found in model graph: {signature}")
        if task.method_name not in _API:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
        key = classify.string_input(runner, task.method_name, core.options.method_name_check)
        planned.append(Task(runner, key, task.method_name))
    examples = classify.serialized_examples(request.input)
    core.metrics.record_examples(servable.name, len(examples))
    return planned, examples


def respond(servable: Servable, tasks: list[Task], outputs: list[Arrays], n: int) -> Any:
    """The MultiInferenceResponse: one InferenceResult per task, in request order."""
    from tensorflow_serving.apis import inference_pb2

    response = inference_pb2.MultiInferenceResponse()
    for task, out in zip(tasks, outputs, strict=True):
        result = response.results.add()
        if task.method == CLASSIFY_METHOD:
            one = classify.classification(servable, task.runner, out, n)
            result.classification_result.CopyFrom(one.result)
        else:
            one = classify.regression(servable, task.runner, out, n)
            result.regression_result.CopyFrom(one.result)
        result.model_spec.CopyFrom(one.model_spec)
    return response


async def multi_inference_async(core: Core, request: Any) -> Any:
    with plan(core, request) as (servable, tasks, examples):
        outputs = await asyncio.gather(*(
            core.run_async(t.runner, {t.input_key: examples}, tuple(t.runner.outputs),
                           _API[t.method])
            for t in tasks))
    return respond(servable, tasks, list(outputs), len(examples))


def multi_inference_sync(core: Core, request: Any, servable: Servable | None = None) -> Any:
    """MultiInference from a plain thread (warmup replay): every task submitted, then awaited.

    ``servable`` pins the version being loaded, as the warmup replay needs.
    """
    with plan(core, request, servable) as (servable, tasks, examples):
        futures = [classify.submit(core, t.runner, t.input_key, examples, _API[t.method])
                   for t in tasks]
        outputs = [f.result() for f in futures]
    return respond(servable, tasks, outputs, len(examples))
