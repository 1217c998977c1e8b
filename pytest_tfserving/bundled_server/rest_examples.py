"""The REST ``:classify`` / ``:regress`` verbs: the body's tf.Examples read from JSON as TF
Serving's json_tensor.cc reads them, the request run, and the results written as TF Serving
writes them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from pytest_tfserving.bundled_server import classify
from pytest_tfserving.bundled_server.core import Core
from pytest_tfserving.bundled_server.status import ServingError, invalid
from pytest_tfserving.model import CLASSIFY_METHOD, REGRESS_METHOD

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_JSON_TYPE = {type(None): "Null", bool: "Boolean", dict: "Object", list: "Array", str: "String",
              int: "Number", float: "Number"}


def _show(value: Any, limit: int = 200) -> str:
    """``value`` as JSON for an error message, cut at ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _kind_error(name: str, kind: str | None, value: Any) -> ServingError:
    return invalid(f"Unexpected element type in feature: {name} expecting type: "
                   f"{kind or 'UNKNOWN'}; got {_show(value)}")


def _element(name: str, value: Any) -> tuple[str, Any]:
    """One JSON element of feature ``name`` as (list kind, value for that list).

    TF Serving's rules: a JSON string -> bytes_list (UTF-8), ``{"b64": "..."}`` -> bytes_list
    (decoded), a number written with a fraction or exponent -> float_list, an integer or a
    boolean -> int64_list; null, nested lists and other objects are errors.
    """
    item: Any
    if isinstance(value, bool):
        want, item = "int64", int(value)
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            want, item = "int64", value
        elif 0 < value < (1 << 64):
            raise invalid(f"Feature: {name} has uint64_t element {value}. Only int64_t is "
                          "supported.")
        else:  # beyond 64 bits a JSON parser reads a double
            want, item = "float", float(value)
    elif isinstance(value, float):
        want, item = "float", value
    elif isinstance(value, str):
        want, item = "bytes", value.encode("utf-8")
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        want, text = "bytes", value["b64"]
        try:
            item = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise invalid(f"Feature: {name}: unable to base64 decode {_show(value)}") from None
    else:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: "
                      f"{_JSON_TYPE.get(type(value), type(value).__name__)}; got {_show(value)}"
                      + (" (a feature's value is a scalar or a flat list)"
                         if isinstance(value, list) else ""))
    return want, item


def json_example(obj: Any, where: str) -> Any:
    """A tf.train.Example from one JSON object of features (``where`` names it in errors)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise invalid(f"Example must be JSON object but got JSON "
                      f"{_JSON_TYPE.get(type(obj), type(obj).__name__)} at {where}: {_show(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        values: list[Any] = []
        kind: str | None = None  # one feature holds one kind
        for value in content if isinstance(content, list) else [content]:
            want, item = _element(name, value)
            if kind is not None and want != kind:
                raise _kind_error(name, kind, value)
            kind = want
            values.append(item)
        feature = example.features.feature[name]  # an empty list leaves the kind unset
        if kind == "int64":
            feature.int64_list.value.extend(values)
        elif kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "bytes":
            feature.bytes_list.value.extend(values)
    return example


def fill_examples_request(body: Any, request: Any, verb: str) -> None:
    """Fill a Classification/RegressionRequest's signature and Input from a REST body."""
    if not isinstance(body, dict):
        raise invalid(f"JSON Value: {_show(body)} Is not object")
    if "signature_name" in body:
        if not isinstance(body["signature_name"], str):
            raise invalid(f"JSON Value: {_show(body['signature_name'])} not formatted correctly."
                          " 'signature_name' key must be a string value.")
        request.model_spec.signature_name = body["signature_name"]
    inp = request.input
    has_context = "context" in body
    if has_context:
        inp.example_list_with_context.context.CopyFrom(json_example(body["context"], "'context'"))
    if "examples" not in body:
        raise invalid(f"JSON Value: {_show(body)} When method is {verb}, key 'examples' is "
                      "expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {_show(examples)} Expecting 'examples' value to be an "
                      "list/array")
    if not examples:
        raise invalid("JSON Value: [] 'examples' value is an empty array")
    target = (inp.example_list_with_context.examples if has_context
              else inp.example_list.examples)
    for i, obj in enumerate(examples):
        target.add().CopyFrom(json_example(obj, f"'examples'[{i}]"))


def _decimal(value: float) -> float:
    """A float32 result as its shortest round-trip decimal (TF Serving's WriteDecimal: 0.2, not
    0.20000000298023224)."""
    return float(str(np.float32(value)))


def classification_json(result: Any) -> dict[str, Any]:
    return {"results": [[[c.label, _decimal(c.score)] for c in row.classes]
                        for row in result.classifications]}


def regression_json(result: Any) -> dict[str, Any]:
    return {"results": [_decimal(r.value) for r in result.regressions]}


def answer_examples(core: Core, verb: str, spec: Any, data: Any,
                    timeout_s: float) -> dict[str, Any]:
    """Run one REST ``:classify`` or ``:regress`` body (``verb``) for the model in ``spec``."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request: Any = (classification_pb2.ClassificationRequest() if verb == "classify"
                    else regression_pb2.RegressionRequest())
    request.model_spec.CopyFrom(spec)
    fill_examples_request(data, request, verb)
    if verb == "classify":
        return classification_json(
            classify.run_sync(core, request, CLASSIFY_METHOD, timeout_s=timeout_s).result)
    return regression_json(
        classify.run_sync(core, request, REGRESS_METHOD, timeout_s=timeout_s).result)
