"""Dynamic batching with TF Serving's BasicBatchScheduler semantics.

- One queue per (signature, input key set, output filter).
- Tasks are whole requests: a request of n examples takes n slots; a task larger than
  ``max_batch_size`` fails with INVALID_ARGUMENT ``Task size N is larger than maximum input batch
  size M`` (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h).
- The open batch closes when the next task does not fit, or when a batch thread looks for work
  and the batch is full or ``batch_timeout_micros`` have passed since its FIRST task (with a
  timeout of 0 a free thread takes whatever is queued, tasks pile up while all threads are busy).
- A queue holds at most ``max_enqueued_batches`` batches (the open one included); a task that
  needs a new batch when the queue is full fails with UNAVAILABLE ``The batch scheduling queue to
  which this task was submitted is full; currently N batches enqueued and max_enqueued_batches
  is M``.
- ``num_batch_threads`` threads (0 = cores) run batches; ``allowed_batch_sizes`` pads the merged
  batch up to the next allowed size by repeating the last row; ``pad_variable_length_inputs``
  pads non-batch dims to the batch's max (zeros / empty strings), else differing shapes fail as
  in ``batching/batching_session.cc``.
- ``enable_large_batch_splitting``: the open batch closes at ``max_execution_batch_size``; a task
  that does not fit the open batch is split (its first piece fills the open batch, the rest goes
  in pieces of ``max_execution_batch_size``), so tasks may span batches and no executed batch is
  larger than ``max_execution_batch_size``; the task's outputs are the pieces' outputs
  concatenated in order, and one failed piece fails the task. A task larger than the queue's
  remaining capacity fails with UNAVAILABLE (``shared_batch_scheduler.h``
  ValidateBatchTaskQueueCapacity).
- Per batch: processed (padded) size, padding size and each task's queuing delay go to metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from pytest_tfserving.batching import BatchingParameters
from pytest_tfserving.bundled_server.metrics import Metrics
from pytest_tfserving.bundled_server.servable import Arrays, SignatureRunner
from pytest_tfserving.bundled_server.status import ServingError, invalid, precondition, unavailable
from pytest_tfserving.bundled_server.task_split import Future, TaskSplit, piece_sizes

QueueKey = tuple[int, tuple[str, ...], tuple[str, ...]]  # (id(runner), inputs, outputs)


@dataclass
class _Task:
    arrays: Mapping[str, np.ndarray[Any, Any]]
    size: int
    enqueued: float
    future: Future | None  # None for a piece of a split task
    loop: asyncio.AbstractEventLoop | None  # set for asyncio futures: resolved on their loop
    split: TaskSplit | None = None
    part: int = 0


@dataclass
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    start: float = 0.0


@dataclass
class _Queue:
    runner: SignatureRunner
    outputs: tuple[str, ...]
    params: BatchingParameters
    open: _Batch = field(default_factory=_Batch)
    closed: deque[_Batch] = field(default_factory=deque)

    def idle(self) -> bool:
        return not self.closed and not self.open.tasks

    @property
    def timeout_s(self) -> float:
        return self.params.batch_timeout_micros / 1e6


def task_size(arrays: Mapping[str, np.ndarray[Any, Any]]) -> int:
    if not arrays:  # batching_util.h ComputeTensorBatchSize
        raise invalid("Batching Run() must have at least one input tensor")
    sizes = set()
    for key, arr in arrays.items():
        if arr.ndim == 0:
            raise invalid(f"Batching session Run() input tensors must have at least one "
                          f"dimension; input '{key}' is a scalar")
        sizes.add(arr.shape[0])
    if len(sizes) != 1:
        dims = {k: int(a.shape[0]) for k, a in arrays.items()}
        raise invalid(f"Batching session Run() input tensors must have equal 0th-dimension "
                      f"size; got {dims}")
    return int(sizes.pop())


def _pad_value(arr: np.ndarray[Any, Any]) -> Any:
    return b"" if arr.dtype == object else 0


def merge_inputs(key: str, parts: list[np.ndarray[Any, Any]], pad_variable: bool,
                 padded_extra: int) -> np.ndarray[Any, Any]:
    """Concatenate the tasks' tensors along dim 0, then pad to the allowed batch size."""
    first = parts[0].shape[1:]
    if any(p.shape[1:] != first for p in parts[1:]):
        if not pad_variable:
            raise precondition(
                f"Tensors with name '{key}' from different tasks have different shapes and "
                "padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
                "all tensors with the same name have equal dimensions starting with the first "
                "dim."
            )
        if any(p.ndim != parts[0].ndim for p in parts):
            raise invalid(f"Tensors with name '{key}' from different tasks have different ranks "
                          "and cannot be padded")
        target = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
        parts = [
            np.pad(p, [(0, 0)] + [(0, t - s) for t, s in zip(target, p.shape[1:], strict=True)],
                   constant_values=_pad_value(p))
            if p.shape[1:] != target else p
            for p in parts
        ]
    merged = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if padded_extra:
        merged = np.concatenate([merged, np.repeat(merged[-1:], padded_extra, axis=0)])
    return merged


class BatchScheduler:
    """Queues tasks and runs merged batches on ``threads`` worker threads."""

    def __init__(self, params: BatchingParameters, metrics: Metrics, threads: int) -> None:
        self.params = params
        self._metrics = metrics
        self._overrides: dict[int, BatchingParameters] = {}  # id(runner) -> its model's params
        self._cond = threading.Condition()
        self._queues: dict[QueueKey, _Queue] = {}
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch_threads_{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def set_params(self, runners: list[SignatureRunner], params: BatchingParameters) -> None:
        """A model's own batching parameters (``--enable_per_model_batching_parameters``); the
        batch threads stay shared, as TF Serving's."""
        with self._cond:
            for r in runners:
                self._overrides[id(r)] = params

    def params_for(self, runner: SignatureRunner) -> BatchingParameters:
        return self._overrides.get(id(runner), self.params)

    def forget(self, runners: list[SignatureRunner]) -> None:
        """Drop the queues of unloaded runners (a queue holds its runner alive)."""
        gone = {id(r) for r in runners}
        with self._cond:
            for key in [k for k, q in self._queues.items() if k[0] in gone and q.idle()]:
                del self._queues[key]
            for r in gone:
                self._overrides.pop(r, None)

    # -- enqueue ---------------------------------------------------------------------------
    def submit(self, runner: SignatureRunner, arrays: Mapping[str, np.ndarray[Any, Any]],
               outputs: tuple[str, ...]) -> cf.Future[Arrays]:
        """Enqueue one task; the future resolves on the batch thread (for sync callers)."""
        future: cf.Future[Arrays] = cf.Future()
        self._enqueue(runner, arrays, outputs, future, None)
        return future

    def submit_async(self, runner: SignatureRunner, arrays: Mapping[str, np.ndarray[Any, Any]],
                     outputs: tuple[str, ...]) -> asyncio.Future[Arrays]:
        """Enqueue one task from a coroutine; the future resolves on the caller's event loop.

        A finished batch wakes each loop once (one ``call_soon_threadsafe`` for all of the
        batch's tasks of that loop) instead of once per task.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self._enqueue(runner, arrays, outputs, future, loop)
        return future

    def _enqueue(self, runner: SignatureRunner, arrays: Mapping[str, np.ndarray[Any, Any]],
                 outputs: tuple[str, ...], future: Future,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        size = task_size(arrays)
        params = self.params_for(runner)
        limit = params.max_batch_size
        if size > limit:
            raise invalid(f"Task size {size} is larger than maximum input batch size {limit}")
        self._metrics.record_input_batch_size(size, len(arrays))
        key: QueueKey = (id(runner), tuple(sorted(arrays)), outputs)
        with self._cond:
            if self._stopping:
                raise unavailable("The model server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(runner, outputs, params)
            if params.enable_large_batch_splitting:
                self._enqueue_split(queue, _Task(arrays, size, time.monotonic(), future, loop))
                return
            now = time.monotonic()
            open_batch = queue.open
            wake = queue.timeout_s == 0  # a free thread takes whatever is queued
            if open_batch.size + size > limit:
                self._close_open(queue)
                open_batch = queue.open
                wake = True
            if not open_batch.tasks:
                open_batch.start = now
                wake = True  # a waiting thread must (re)arm its timer for this batch
            open_batch.tasks.append(_Task(arrays, size, now, future, loop))
            open_batch.size += size
            # Waking a batch thread costs a GIL handoff; a thread that waits already sleeps
            # until the open batch's deadline, so only a new batch or a full one needs a wake.
            if wake or open_batch.size >= limit:
                self._cond.notify()

    def _close_open(self, queue: _Queue) -> None:
        """Close the open batch and open a new one; UNAVAILABLE when the queue is full."""
        enqueued = len(queue.closed) + 1
        if enqueued >= queue.params.max_enqueued_batches:
            raise unavailable(
                "The batch scheduling queue to which this task was submitted is full; "
                f"currently {enqueued} batches enqueued and max_enqueued_batches is "
                f"{queue.params.max_enqueued_batches}"
            )
        queue.closed.append(queue.open)
        queue.open = _Batch()

    def _enqueue_split(self, queue: _Queue, task: _Task) -> None:
        """Large-batch splitting (under the lock): fill the open batch, then new batches of at
        most ``max_execution_batch_size``; the pieces resolve the task together."""
        params = queue.params
        limit = params.execution_batch_size
        enqueued = len(queue.closed) + 1
        capacity = (params.max_enqueued_batches - enqueued) * limit + limit - queue.open.size
        if task.size > capacity:
            raise unavailable(
                "The batch scheduling queue to which this task was submitted is full; task size "
                f"is {task.size} but scheduling capacity is only {capacity} "
                f"(num_enqueued_batches={enqueued}, max_enqueued_batches="
                f"{params.max_enqueued_batches}, open_batch_size={queue.open.size}, "
                f"max_execution_batch_size={limit})")
        room = limit - queue.open.size
        sizes = piece_sizes(task.size, room, limit)
        pieces = [task]
        if len(sizes) > 1:
            assert task.future is not None
            split = TaskSplit(task.future, task.loop, len(sizes))
            offsets = np.cumsum([0] + sizes)
            pieces = [
                _Task({k: a[offsets[i]:offsets[i + 1]] for k, a in task.arrays.items()}, n,
                      task.enqueued, None, None, split, i)
                for i, n in enumerate(sizes)
            ]
        for piece in pieces:
            if queue.open.size + piece.size > limit:
                self._close_open(queue)
            if not queue.open.tasks:
                queue.open.start = time.monotonic()
            queue.open.tasks.append(piece)
            queue.open.size += piece.size
        self._cond.notify()

    # -- workers ---------------------------------------------------------------------------
    def _pick(self, now: float) -> tuple[_Queue, _Batch] | None:
        best: tuple[_Queue, _Batch] | None = None
        for q in self._queues.values():
            if q.closed and (best is None or q.closed[0].start < best[1].start):
                best = (q, q.closed[0])
        if best is not None:
            best[0].closed.popleft()
            return best
        for q in self._queues.values():
            b = q.open
            if b.tasks and (b.size >= q.params.execution_batch_size or now >= b.start + q.timeout_s
                            or self._stopping):
                if best is None or b.start < best[1].start:
                    best = (q, b)
        if best is not None:
            best[0].open = _Batch()
        return best

    def _wait_s(self, now: float) -> float | None:
        due = [q.open.start + q.timeout_s for q in self._queues.values() if q.open.tasks]
        if not due:
            return None
        return max(0.0, min(due) - now)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    picked = self._pick(now)
                    if picked is not None:
                        self._cond.notify()  # there may be more for another thread
                        break
                    if self._stopping:
                        return
                    self._cond.wait(self._wait_s(now))
            self._process(*picked)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks = batch.tasks
        size = batch.size
        params = queue.params
        padded = params.padded_size(size)
        now = time.monotonic()
        runner = queue.runner
        try:
            if len(tasks) == 1 and padded == size:
                merged: Mapping[str, np.ndarray[Any, Any]] = tasks[0].arrays
            else:
                merged = {
                    key: merge_inputs(key, [t.arrays[key] for t in tasks],
                                      params.pad_variable_length_inputs, padded - size)
                    for key in tasks[0].arrays
                }
            self._metrics.record_batch(size, padded, [(now - t.enqueued) * 1e6 for t in tasks])
            outputs = runner.run(merged, queue.outputs)
            self._metrics.record_runtime(runner.model_name, "Predict",
                                         (time.monotonic() - now) * 1e6)
            for value in outputs.values():
                if value.ndim == 0:
                    raise precondition("Batched output tensor has 0 dimensions")
                if value.shape[0] != padded:
                    raise precondition(
                        "Batched output tensor's 0th dimension does not equal the sum of the "
                        "0th dimension sizes of the input tensors"
                    )
            offset = 0
            results: list[Arrays | BaseException] = []
            for t in tasks:
                end = offset + t.size
                results.append({k: v[offset:end] for k, v in outputs.items()})
                offset = end
        except ServingError as exc:
            results = [exc] * len(tasks)
        except Exception as exc:  # noqa: BLE001 - a batch never kills a worker thread
            err = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            results = [err] * len(tasks)
        _deliver(tasks, results)

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _resolve(items: list[tuple[asyncio.Future[Arrays], Arrays | BaseException]]) -> None:
    """On the event loop: resolve a batch's asyncio futures (skipping cancelled RPCs)."""
    for future, result in items:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _deliver(tasks: list[_Task], results: list[Arrays | BaseException]) -> None:
    """Hand each task its result: cf futures directly, asyncio ones with one wakeup per loop."""
    by_loop: dict[asyncio.AbstractEventLoop,
                  list[tuple[asyncio.Future[Arrays], Arrays | BaseException]]] = {}
    for t, result in zip(tasks, results, strict=True):
        if t.split is not None:
            whole = t.split.piece_done(t.part, result)
            if whole is None:
                continue
            t, result = _Task({}, 0, 0.0, t.split.future, t.split.loop), whole
        if t.loop is not None:
            assert isinstance(t.future, asyncio.Future)
            by_loop.setdefault(t.loop, []).append((t.future, result))
            continue
        assert isinstance(t.future, cf.Future)
        if t.future.done():
            continue
        if isinstance(result, BaseException):
            t.future.set_exception(result)
        else:
            t.future.set_result(result)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
