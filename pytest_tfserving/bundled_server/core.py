"""The request pipeline shared by gRPC, REST and warmup: resolve, validate, run, respond.

Model calls never run on the event loop thread: without batching they go to a small thread pool
(TF releases the GIL), with batching to the scheduler's batch threads. Sync callers (REST, warmup)
get a ``concurrent.futures.Future``; coroutines await ``run_async``, whose batched futures are
resolved on the event loop, one wakeup per finished batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.bundled_server.batcher import BatchScheduler
from pytest_tfserving.bundled_server.convert import decode_inputs, encode_outputs, output_keys
from pytest_tfserving.bundled_server.manager import ModelManager
from pytest_tfserving.bundled_server.metrics import Metrics
from pytest_tfserving.bundled_server.servable import Arrays, Servable, SignatureRunner
from pytest_tfserving.bundled_server.status import ServingError, precondition, unavailable
from pytest_tfserving.model import DEFAULT_SIGNATURE, PREDICT_METHOD


@dataclass(frozen=True)
class RequestOptions:
    """Flags that change how requests are answered."""

    method_name_check: bool = False  # --enable_signature_method_name_check
    tensor_content: bool = False  # --enable_serialization_as_tensor_content


class Core:
    """Every served model (through the manager), the executor (direct or batched), metrics."""

    def __init__(self, manager: ModelManager, metrics: Metrics,
                 batching: BatchingParameters | None,
                 options: RequestOptions = RequestOptions()) -> None:
        self.manager = manager
        self.metrics = metrics
        self.batching = batching
        self.options = options
        cores = os.cpu_count() or 1
        self._pool = cf.ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="model")
        self.scheduler: BatchScheduler | None = None
        if batching is not None:
            self.scheduler = BatchScheduler(batching, metrics, batching.effective_threads(cores))
        # set once the initial config is loaded; before, a request for a servable that is not
        # AVAILABLE yet is UNAVAILABLE (not NOT_FOUND), as from a TF Serving whose ports are not
        # open yet. Status is answered all along; available versions are served at once.
        self.ready = threading.Event()

    # -- lookup ----------------------------------------------------------------------------
    def resolve(self, model_spec: Any, hold: bool = False) -> Servable:
        """The servable for ``model_spec`` (name, version or version_label), or NOT_FOUND;
        ``hold``: acquired for the caller, who releases it."""
        try:
            return self.manager.resolve(model_spec, hold)
        except ServingError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND and not self.ready.is_set():
                # no "Servable" here: TF Serving's clients read that word as "the server is up"
                raise unavailable("The model server is still loading its initial models") \
                    from None
            raise

    @contextlib.contextmanager
    def held(self, model_spec: Any, servable: Servable | None = None) -> Iterator[Servable]:
        """The servable a request runs on, held while the block runs (its version is not closed
        under the request, as TF Serving's ServableHandle keeps it): the one given (warmup,
        the version being loaded: TF Serving ignores the record's model_spec), else the one
        ``model_spec`` resolves to."""
        if servable is None:
            servable = self.resolve(model_spec, hold=True)
        else:
            servable.acquire()
        try:
            yield servable
        finally:
            servable.release()

    def forget(self, servable: Servable) -> None:
        """An unloaded servable: drop its batching queues."""
        if self.scheduler is not None:
            self.scheduler.forget(list(servable.signatures.values()))

    def signature(self, servable: Servable, name: str) -> SignatureRunner:
        key = name or DEFAULT_SIGNATURE
        runner = servable.signatures.get(key)
        if runner is None:
            raise precondition(f'Serving signature key "{key}" not found.')
        return runner

    # -- execution -------------------------------------------------------------------------
    def submit(self, runner: SignatureRunner, arrays: Mapping[str, np.ndarray[Any, Any]],
               outputs: tuple[str, ...], api: str = "Predict") -> cf.Future[Arrays]:
        if self.scheduler is not None:
            return self.scheduler.submit(runner, arrays, outputs)
        return self._pool.submit(self._run_direct, runner, arrays, outputs, api)

    async def run_async(self, runner: SignatureRunner,
                        arrays: Mapping[str, np.ndarray[Any, Any]], outputs: tuple[str, ...],
                        api: str = "Predict") -> Arrays:
        if self.scheduler is not None:
            return await self.scheduler.submit_async(runner, arrays, outputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_direct, runner, arrays, outputs,
                                          api)

    def _run_direct(self, runner: SignatureRunner, arrays: Mapping[str, np.ndarray[Any, Any]],
                    outputs: tuple[str, ...], api: str) -> Arrays:
        t0 = time.monotonic()
        out = runner.run(arrays, outputs)
        self.metrics.record_runtime(runner.model_name, api, (time.monotonic() - t0) * 1e6)
        return out

    # -- Predict ---------------------------------------------------------------------------
    def _prepare_predict(self, request: Any, servable: Servable
                         ) -> tuple[SignatureRunner, Arrays, tuple[str, ...]]:
        runner = self.signature(servable, request.model_spec.signature_name)
        if self.options.method_name_check and runner.method_name != PREDICT_METHOD:
            raise precondition(f"Expected prediction signature method_name to be one of "
                               f"{{{PREDICT_METHOD}}}. Was: {runner.method_name}")
        arrays = decode_inputs(runner, request.inputs)
        keys = output_keys(runner, request.output_filter)
        return runner, arrays, keys

    def _predict_response(self, servable: Servable, runner: SignatureRunner, outputs: Arrays,
                          keys: tuple[str, ...]) -> Any:
        from tensorflow_serving.apis import predict_pb2

        response = predict_pb2.PredictResponse()
        spec = response.model_spec
        spec.name = servable.name
        spec.version.value = servable.version
        spec.signature_name = runner.name
        encode_outputs(outputs, keys, response.outputs, self.options.tensor_content)
        return response

    async def predict_async(self, request: Any) -> Any:
        with self.held(request.model_spec) as servable:
            runner, arrays, keys = self._prepare_predict(request, servable)
            outputs = await self.run_async(runner, arrays, keys)
        return self._predict_response(servable, runner, outputs, keys)

    def predict_sync(self, request: Any, servable: Servable | None = None) -> Any:
        with self.held(request.model_spec, servable) as servable:
            runner, arrays, keys = self._prepare_predict(request, servable)
            outputs = self.submit(runner, arrays, keys).result()
        return self._predict_response(servable, runner, outputs, keys)

    # -- metadata --------------------------------------------------------------------------
    def metadata(self, request: Any) -> Any:
        from tensorflow_serving.apis import get_model_metadata_pb2

        from pytest_tfserving.bundled_server.status import invalid

        servable = self.resolve(request.model_spec)
        fields = list(request.metadata_field)
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field_name in fields:
            if field_name != "signature_def":
                raise invalid(f"Metadata field {field_name} is not supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sd in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sd)
        response.metadata["signature_def"].Pack(sig_map)
        return response

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
