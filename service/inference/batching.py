"""Adaptive server-side batching: concurrent requests in one worker share one model call."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from service.errors import DeadlineExceeded, Overloaded
from service.observability import metrics

if TYPE_CHECKING:
    from service.observability.buffers import MetricBuffer
    from service.settings import Settings

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BatchingConfig:
    """How a BatchingPredictor groups requests."""

    max_batch: int
    max_wait: float
    max_queue: int
    requests_in_worker: Callable[[], int] | None = None
    """How many requests the worker is handling now: with it, a gathering leader stops waiting
    once every one of them is queued, as no batch-mate can come any more."""

    @classmethod
    def from_settings(
        cls, settings: Settings, requests_in_worker: Callable[[], int] | None = None
    ) -> BatchingConfig | None:
        """The configuration the settings ask for, or None when batching is switched off."""
        if not settings.batching:
            return None
        wait = settings.batch_max_wait_ms / 1000
        return cls(settings.batch_max_size, wait, settings.queue_size, requests_in_worker)


@dataclass(eq=False)  # compared by identity: the queue removes one that gave up
class _Item:
    """One request's images waiting for the model, and, once done, its outcome.

    `wake` is held from the start; releasing it wakes the one thread that waits for this
    item, either because its outcome is in or because it is to lead the next batch.
    """

    images: np.ndarray
    queued_at: float = field(default_factory=time.perf_counter)
    done: bool = False
    result: np.ndarray | None = None
    error: BaseException | None = None
    wake: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        """Hold the wake-up lock, so that waiting on it blocks until it is released."""
        self.wake.acquire()


class BatchingPredictor:
    """Group concurrent predict calls into one model call, up to `max_batch` images.

    There is no batching thread (leader and followers): a request that finds the model idle
    calls it in its own thread for everything queued so far, its own images included, while
    requests arriving meanwhile queue up. When the call ends, the leader wakes exactly the
    requests it served and hands the lead to the oldest request still queued: no thread is
    woken only to find that it has nothing to do. A lone request therefore calls the model at
    once, with no hand-off between threads, and under load batches form while the model runs.
    The leader waits up to `max_wait` for batch-mates only when the previous batch held
    several requests (the sign of concurrent load), and is woken early only by a full batch or
    by the last request the worker holds joining the queue.
    A full queue refuses new work with 503 overloaded instead of growing latency, and a request
    that waits past its deadline leaves the queue with 503 deadline_exceeded.
    """

    def __init__(
        self, predict: PredictFn, config: BatchingConfig, metric_buffer: MetricBuffer | None = None
    ) -> None:
        self._predict = predict
        self._metric_buffer = metric_buffer  # times the wait in the queue; None: not recorded
        self.max_batch = config.max_batch
        self.max_wait = config.max_wait
        self.max_queue = config.max_queue
        self._requests_in_worker = config.requests_in_worker
        self._pending: deque[_Item] = deque()
        self._queued = 0  # images in _pending
        self._busy = False  # a leader is gathering or running a batch, or has been named
        self._under_load = False
        self._closed = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the leader waits for batch-mates
        self._idle = threading.Condition(self._lock)  # close() waits for the last batch

    def predict(self, images: np.ndarray, timeout: float = -1) -> np.ndarray:
        """Queue a request's images and return their probabilities, leading a batch if idle.

        A request that has to wait gives up after `timeout` seconds (-1: never) with 503
        deadline_exceeded, unless its batch is already running or it was handed the lead.
        """
        item = _Item(images)
        with self._lock:
            if self._closed or len(self._pending) >= self.max_queue:
                raise Overloaded(
                    "Too many requests are waiting for the model; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            self._pending.append(item)
            self._queued += len(images)
            lead = not self._busy
            self._busy = True
            if self._queued >= self.max_batch or self._everyone_queued():
                # Only a full batch, or the last request the worker holds, cuts a gathering
                # leader's wait short: waking it for each arrival would hand the GIL to it and
                # back for every request.
                self._arrived.notify()
        if not lead:
            # released when served, or when handed the lead
            if not item.wake.acquire(timeout=timeout):
                self._give_up(item, timeout)
            if item.done:
                return _outcome(item)
        self._lead()
        return _outcome(item)

    def _give_up(self, item: _Item, timeout: float) -> None:
        """Leave the queue after a wait that timed out, or go on if it ended meanwhile.

        Every release of `wake` that matters here happens under the lock (the hand-off of the
        lead) or after the item left the queue (its batch ran), so with the lock held exactly
        one holds: it was released (proceed as woken), it is still queued and not the next
        leader (leave: nobody else will touch it), or it is in a running batch (wait for the
        batch, which always releases it, and take its outcome: never half-served).
        """
        with self._lock:
            if item.wake.acquire(blocking=False):
                return  # served or handed the lead just as the wait ended
            if item in self._pending:
                self._pending.remove(item)
                self._queued -= len(item.images)
                raise DeadlineExceeded(
                    f"The request waited {timeout:.3g}s for the model, its time limit; "
                    "retry shortly.",
                    headers={"Retry-After": "1"},
                )
        item.wake.acquire()  # its batch is running: the answer is moments away

    def close(self, timeout: float = 30) -> None:
        """Refuse new requests and wait until every queued one has been served."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            self._arrived.notify_all()  # a gathering leader runs what it has now
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._idle.wait(remaining)

    def _lead(self) -> None:
        """Run one batch (the leader's own item is the oldest queued), then pass the lead on."""
        with self._lock:
            batch = self._gather()
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].wake.release()  # the next leader; _busy stays True
                else:
                    self._busy = False
                    self._idle.notify_all()
            for item in batch[1:]:  # batch[0] is the leader's own
                item.wake.release()

    def _gather(self) -> list[_Item]:
        """Take queued items up to max_batch images (always the first), the lock held."""
        if self._under_load and self.max_wait > 0:
            deadline = time.perf_counter() + self.max_wait
            while self._queued < self.max_batch and not self._everyone_queued():
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closed:
                    break
                self._arrived.wait(remaining)
        batch = [self._pending.popleft()]
        size = len(batch[0].images)
        while self._pending and size + len(self._pending[0].images) <= self.max_batch:
            item = self._pending.popleft()
            batch.append(item)
            size += len(item.images)
        self._queued -= size
        self._under_load = len(batch) > 1
        return batch

    def _everyone_queued(self) -> bool:
        """Whether every request the worker is handling waits in this queue, the lock held.

        Then waiting longer only idles the worker, every request it holds being in the batch
        already (docs/benchmarks.md measures batching against none). Requests that never
        reach the model (a refused upload, /healthz) keep it false: the wait ends at max_wait.
        """
        count = self._requests_in_worker
        return count is not None and len(self._pending) >= count()

    def _run(self, batch: list[_Item]) -> None:
        """Call the model once for the batch and hand each item its rows (or its error)."""
        started = time.perf_counter()
        if self._metric_buffer is not None:
            for item in batch:
                self._metric_buffer.observe(
                    metrics.BATCH_QUEUE_SECONDS, (), started - item.queued_at
                )
        try:
            self._run_batch(batch)
        except BaseException as error:
            # Interrupted, in the batch's call or in a retry one by one: every item not yet
            # answered learns it, so none waits forever or, woken unfinished, leads a batch
            # its images are not in.
            for item in batch:
                if not item.done:
                    item.error, item.done = error, True
            raise

    def _run_batch(self, batch: list[_Item]) -> None:
        """One call for the whole batch; on an error, one call per item."""
        try:
            probabilities = self._predict(np.concatenate([item.images for item in batch]))
        except Exception:  # noqa: BLE001 - retried one by one so only the culprit fails
            self._run_one_by_one(batch)
            return
        offset = 0
        for item in batch:
            item.result = probabilities[offset : offset + len(item.images)]
            offset += len(item.images)
            item.done = True

    def _run_one_by_one(self, batch: list[_Item]) -> None:
        """Isolate a failure: give each item its own call and its own outcome."""
        for item in batch:
            try:
                item.result = self._predict(item.images)
            except Exception as error:  # noqa: BLE001 - delivered to the waiting request
                item.error = error
            item.done = True


def _outcome(item: _Item) -> np.ndarray:
    """An item's probabilities, or the exception its model call raised."""
    if item.error is not None:
        raise item.error
    return cast(np.ndarray, item.result)
