"""Call a SavedModel's signatures in this process: the reference the served answers must equal.

TF2 SavedModels are loaded with ``tf.saved_model.load`` and called eagerly. TF1 SavedModels run
in a ``tf.compat.v1.Session`` fed and fetched by the signature's tensor names, as TF Serving runs
them: ``tf.saved_model.load`` cannot turn a TF1 signature into a function when an output is a
reference tensor (TF1 variables, e.g. TF Serving's ``saved_model_counter``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=4)
def load_signatures(version_dir: Path) -> Any:
    """The loaded SavedModel's ``signatures`` mapping (kept alive with its object)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir), tags=["serve"])
    signatures = loaded.signatures
    signatures._tfs_owner = loaded  # keep variables alive as long as the signatures
    return signatures


@functools.lru_cache(maxsize=8)
def is_tf2(version_dir: Path) -> bool:
    """Whether the serving MetaGraph carries a TF2 object graph."""
    from pytest_tfserving.model import read_saved_model, serving_meta_graph

    meta_graph = serving_meta_graph(read_saved_model(version_dir), version_dir)
    return meta_graph.HasField("object_graph_def") and len(meta_graph.object_graph_def.nodes) > 0


@functools.lru_cache(maxsize=4)
def load_session(version_dir: Path) -> tuple[Any, Any]:
    """A TF1 Session with the SavedModel's 'serve' MetaGraph loaded, and that MetaGraph."""
    import tensorflow as tf

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    return session, meta_graph


@functools.lru_cache(maxsize=64)
def _session_callable(version_dir: Path, signature_name: str,
                      keys: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """A Session callable feeding ``keys`` and fetching every output (and the output keys).

    A callable runs like TF Serving's ``Session::Run``: a feed replaces the tensor, with no
    check against the tensor's static shape (``Session.run`` in Python refuses such feeds)."""
    from tensorflow.core.protobuf import config_pb2

    session, meta_graph = load_session(version_dir)
    signature = meta_graph.signature_def[signature_name]
    outputs = tuple(sorted(signature.outputs))
    options = config_pb2.CallableOptions(
        feed=[signature.inputs[k].name for k in keys],
        fetch=[signature.outputs[k].name for k in outputs])
    return session._make_callable_from_options(options), outputs


def call_session_signature(version_dir: Path, signature_name: str,
                           inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """One Session run of a TF1 signature, fed and fetched by its tensor names."""
    keys = tuple(sorted(inputs))
    run, outputs = _session_callable(version_dir, signature_name, keys)
    values = run(*(np.asarray(inputs[k]) for k in keys))
    return {k: np.asarray(v) for k, v in zip(outputs, values, strict=True)}


@functools.lru_cache(maxsize=4)
def load_tflite(version_dir: Path) -> Any:
    from pytest_tfserving.bundled_server.tflite_servable import load_tflite_servable

    return load_tflite_servable("reference", 1, version_dir)


def call_tflite_signature(version_dir: Path, signature_name: str,
                          inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The same call on ``version_dir/model.tflite`` in LiteRT (what --prefer_tflite serves)."""
    runner = load_tflite(version_dir).signatures[signature_name]
    result: dict[str, np.ndarray[Any, Any]] = runner.run(
        {k: np.asarray(v) for k, v in inputs.items()})
    return result


def call_signature(version_dir: Path, signature_name: str,
                   inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    import tensorflow as tf

    if not is_tf2(version_dir):
        return call_session_signature(version_dir, signature_name, inputs)
    function = load_signatures(version_dir)[signature_name]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    outputs = function(**tensors)
    return {k: v.numpy() for k, v in outputs.items()}
