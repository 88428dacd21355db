"""Adaptive server-side batching: concurrent requests in one worker share one model call."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.errors import Overloaded

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BatchingConfig:
    """How a BatchingPredictor groups requests."""

    max_batch: int
    max_wait: float
    max_queue: int


@dataclass
class _Item:
    """One request's images waiting for the model, and where its result goes."""

    images: np.ndarray
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


_STOP = object()  # queued by close(): everything before it is still served


class BatchingPredictor:
    """Group concurrent predict calls into one model call, up to `max_batch` images.

    The loop takes whatever is queued. It waits up to `max_wait` for more only when the
    previous batch held several requests (the sign of concurrent load), so a lone request
    never waits. A full queue refuses new work with 503 instead of growing latency.
    """

    def __init__(self, predict: PredictFn, config: BatchingConfig) -> None:
        self._predict = predict
        self.max_batch = config.max_batch
        self.max_wait = config.max_wait
        self._queue: queue.Queue = queue.Queue(maxsize=config.max_queue)
        self._under_load = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Queue a request's images and block until its probabilities are ready."""
        item = _Item(images)
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded(
                "Too many requests are waiting for the model; retry shortly.",
                headers={"Retry-After": "1"},
            ) from None
        return item.future.result()

    def close(self, timeout: float = 30) -> None:
        """Serve everything already queued, then stop the loop."""
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        """Run batches until close(); then serve anything that raced past it."""
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            if first is _STOP:
                break
            batch, carry = self._gather(first)
            self._under_load = len(batch) > 1
            self._run(batch)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                self._run([item])

    def _gather(self, first: _Item) -> tuple[list[_Item], object | None]:
        """Collect items up to max_batch images; return the batch and any item left over."""
        batch, size = [first], len(first.images)
        deadline = time.perf_counter() + (self.max_wait if self._under_load else 0.0)
        while size < self.max_batch:
            item = self._next(deadline)
            if item is None:
                break
            if item is _STOP or size + len(item.images) > self.max_batch:
                return batch, item
            batch.append(item)
            size += len(item.images)
        return batch, None

    def _next(self, deadline: float) -> object | None:
        """Take the next queued item, waiting until `deadline` at most; None if none came."""
        try:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def _run(self, batch: list[_Item]) -> None:
        """Call the model once for the batch and hand each item its rows."""
        started = time.perf_counter()
        for item in batch:
            metrics.BATCH_QUEUE_SECONDS.observe(started - item.queued_at)
        try:
            probabilities = self._predict(np.concatenate([item.images for item in batch]))
        except Exception:  # noqa: BLE001 - retried one by one so only the culprit fails
            self._run_one_by_one(batch)
            return
        offset = 0
        for item in batch:
            item.future.set_result(probabilities[offset : offset + len(item.images)])
            offset += len(item.images)

    def _run_one_by_one(self, batch: list[_Item]) -> None:
        """Isolate a failure: give each item its own call and its own outcome."""
        for item in batch:
            try:
                item.future.set_result(self._predict(item.images))
            except Exception as error:  # noqa: BLE001 - delivered to the waiting request
                item.future.set_exception(error)
