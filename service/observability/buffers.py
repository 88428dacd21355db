"""What request threads hand over instead of writing: metric updates and access-log lines,
each written by one thread of its own every FLUSH_INTERVAL seconds, and at close.

A request thread only appends to a queue: it takes no lock, makes no system call and wakes no
thread. Under load each of those costs a handoff of the worker's GIL among its threads, and a
thread holding a lock when it loses the GIL stalls every other thread that wants it
(docs/request-path.md measures both buffers against writing directly).

gunicorn.conf.py imports this module in the master, which must load neither Flask nor the
metric declarations (service/observability/metrics.py): the buffers are handed the metrics
they write.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from logging.handlers import QueueHandler
from typing import TextIO, cast

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1  # seconds a scrape or a log reader may lag behind the requests it sees
Counted = tuple[Counter | Gauge, tuple[str, ...]]  # a counter or gauge and its label values
Observed = tuple[Histogram, tuple[str, ...]]  # a histogram and its label values


class Flusher:
    """Call `flush` on a thread of its own every `interval` seconds until closed, and once
    more at close, so that nothing queued before close is lost."""

    def __init__(self, flush: Callable[[], None], what: str, interval: float) -> None:
        self.flush = flush
        self.what = what
        self.interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the flushing thread in this process, once."""
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            name = f"flush {self.what}"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the flushing thread and flush what is queued."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        """Flush every `interval` seconds until closed."""
        while not self._stopping.wait(self.interval):
            try:
                self.flush()
            except Exception:  # keep flushing; the failed batch is lost
                log.exception("writing the queued %s failed", self.what)


class MetricBuffer:
    """Metric updates queued by request threads and written by a Flusher.

    prometheus_client's multiprocess values take one lock per process and check the process id
    on every write, and its histograms walk their buckets in Python, for each of the many
    updates of one request. The flush adds up each series' updates and writes each changed
    value once: a counter's increments as one increment, a histogram's observations as one
    increment per bucket they fall in, and one of its sum. One per app (create_app).
    """

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self._increments: deque[tuple[Counted, float]] = deque()
        self._observations: deque[tuple[Observed, float]] = deque()
        # A request's whole cost per update: one append of ((metric, labels), amount).
        self.queue_increment = self._increments.append
        self.queue_observation = self._observations.append
        self._flushing = threading.Lock()  # the flushing thread, and a flush at close
        self._flusher = Flusher(self.flush, "metric updates", interval)

    def add(self, metric: Counter | Gauge, labels: tuple[str, ...], amount: float) -> None:
        """Queue an increment of a counter or gauge (negative: a gauge's decrement)."""
        self.queue_increment(((metric, labels), amount))

    def observe(self, histogram: Histogram, labels: tuple[str, ...], value: float) -> None:
        """Queue one observation of a histogram."""
        self.queue_observation(((histogram, labels), value))

    def timed(self, histogram: Histogram) -> Timed:
        """A `with` block whose seconds `histogram` observes, even when it raises."""
        return Timed(self, histogram)

    def start(self) -> None:
        """Start writing the queued updates in this process (create_app, in the worker)."""
        self._flusher.start()

    def close(self) -> None:
        """Stop the flushing thread and write what is queued (at worker exit)."""
        self._flusher.close()

    def flush(self) -> None:
        """Write every update queued so far, each series' updates added up into one write."""
        with self._flushing:  # the only consumer: popleft cannot find a queue emptier
            increments: dict[Counted, float] = {}
            take_increment = self._increments.popleft
            for _ in range(len(self._increments)):  # what later requests add waits its turn
                counted, amount = take_increment()
                increments[counted] = increments.get(counted, 0.0) + amount
            observations: dict[Observed, list[float]] = {}
            take_observation = self._observations.popleft
            for _ in range(len(self._observations)):
                observed, value = take_observation()
                values = observations.get(observed)
                if values is None:
                    observations[observed] = [value]
                else:
                    values.append(value)
            for (metric, labels), amount in increments.items():
                (metric.labels(*labels) if labels else metric).inc(amount)
            for (histogram, labels), values in observations.items():
                _observe_all(histogram.labels(*labels) if labels else histogram, values)


class Timed:
    """Observe the seconds a `with` block takes, through a MetricBuffer, even when it raises."""

    __slots__ = ("buffer", "histogram", "started")

    def __init__(self, buffer: MetricBuffer, histogram: Histogram) -> None:
        self.buffer = buffer
        self.histogram = histogram
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.buffer.observe(self.histogram, (), time.perf_counter() - self.started)


def _observe_all(histogram: Histogram, values: list[float]) -> None:
    """What observe() does for each value, with each bucket and the sum written once.

    observe() adds a value to the sum and one to the first bucket whose upper bound is at
    least the value (buckets are stored uncumulated and added up when scraped);
    tests/test_metrics.py checks that this matches observe() value by value.
    """
    bounds = histogram._upper_bounds
    for index, count in Tally(bisect_left(bounds, value) for value in values).items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(values))


class AccessLogBuffer(QueueHandler):
    """Access-log records held in a queue and written by a Flusher, all waiting lines in one
    write.

    As with nginx's `access_log ... buffer= flush=`. The record's message already is the
    finished JSON line and no other handler sees it, so QueueHandler's formatting and copy
    are skipped too.
    """

    def __init__(
        self, target: logging.StreamHandler[TextIO], interval: float = FLUSH_INTERVAL
    ) -> None:
        self._records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(self._records)
        self.target = target
        self._flusher = Flusher(self.flush, "access-log lines", interval)
        self._flusher.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Enqueue the record without the handler lock: SimpleQueue.put is thread-safe."""
        passed = bool(self.filter(record))
        if passed:
            self.emit(record)
        return passed

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record itself."""
        return record

    def flush(self) -> None:
        """Write every waiting line in one write."""
        lines, record = [], None
        while True:
            try:  # logging.shutdown may flush at exit beside the flushing thread
                record = self._records.get_nowait()
            except queue.Empty:
                break
            lines.append(self.target.format(record) + "\n")
        if record is None:
            return
        try:
            self.target.stream.write("".join(lines))
            self.target.stream.flush()
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: report, keep logging
            self.handleError(record)

    def close(self) -> None:
        """Stop the flushing thread and write what is left."""
        self._flusher.close()
        super().close()


def buffer_access_log() -> AccessLogBuffer:
    """Route the access log through an AccessLogBuffer in front of its stdout handler (in each
    worker: gunicorn.conf.py's post_fork).

    Records skip what no format here uses, a large part of the cost of logging a line: the
    thread and multiprocessing names and the caller lookup (the Logging HOWTO's Optimization).
    """
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    logger = logging.getLogger("service.access")
    (stdout,) = logger.handlers  # logconfig_dict's one handler, a StreamHandler
    logger.removeHandler(stdout)
    buffered = AccessLogBuffer(cast("logging.StreamHandler[TextIO]", stdout))
    logger.addHandler(buffered)
    return buffered
