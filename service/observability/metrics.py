"""Every Prometheus metric of the service, declared once, and the buffer requests write them
through.

Under gunicorn the metrics are shared through prometheus_client's multiprocess mode: bin/serve
sets PROMETHEUS_MULTIPROC_DIR (and empties it) before any worker starts, and the gunicorn
master serves the merged view on its own port (see gunicorn.conf.py). docs/metrics.md
describes each metric.

A request does not write its metrics itself: `add` and `observe` queue each update in the
worker's MetricBuffer, which one thread writes out every FLUSH_INTERVAL seconds, all the
updates of one series in one write.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

NAMESPACE = "fmnist"
# From a health check to a request that reaches its deadline (FMNIST_REQUEST_TIMEOUT, 30 s by
# default), checked between steps so that a request can pass it by the step in progress; 60 s
# leaves room for that or a raised deadline (docs/metrics.md, "Buckets", and its measurements).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Powers of two up to the default FMNIST_MAX_BATCH (64), and one above for a raised limit.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# The top class of ten has at least 0.1; finer steps near 1, where a trained model sits.
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route pattern, method and status.",
    ["endpoint", "method", "status"],
    namespace=NAMESPACE,
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request start to response, by route pattern.",
    ["endpoint"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being handled now, all live workers together.",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "errors",
    "Error responses, by stable error code.",
    ["code"],
    namespace=NAMESPACE,
)
DECODE_LATENCY = Histogram(
    "image_decode_duration_seconds",
    "Time to decode one uploaded image file into pixels.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
PREPROCESS_LATENCY = Histogram(
    "preprocess_duration_seconds",
    "Time to turn one decoded image or pixel array into the 28x28 model input.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "inference_duration_seconds",
    "Time of one model call, for a whole batch.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "batch_size_images",
    "Images per model call.",
    namespace=NAMESPACE,
    buckets=BATCH_BUCKETS,
)
BATCH_QUEUE_SECONDS = Histogram(
    "batch_queue_duration_seconds",
    "Time a request waited in the batching queue before its model call started.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "predictions",
    "Images classified, by predicted class (a drift signal).",
    ["class_name"],
    namespace=NAMESPACE,
)
CONFIDENCE = Histogram(
    "prediction_confidence_ratio",
    "Probability of the top class, per image.",
    namespace=NAMESPACE,
    buckets=CONFIDENCE_BUCKETS,
)
MODEL_LOAD_SECONDS = Gauge(
    "model_load_duration_seconds",
    "Seconds the served model version took to load, slowest live worker.",
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "model_info",
    "Always 1, labelled with the model name and version a live worker serves.",
    ["name", "version"],
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)

FLUSH_INTERVAL = 0.1  # seconds a scrape may lag behind the requests it counts
Series = tuple[Counter | Gauge | Histogram, tuple[str, ...]]  # a metric and its label values


class MetricBuffer:
    """Metric updates queued by request threads and written by one thread of its own every
    FLUSH_INTERVAL seconds, and at close.

    As for the access log (gunicorn.conf.py's AccessLogBuffer), a request thread only appends
    to a queue: it takes no lock and makes no system call. prometheus_client's multiprocess
    values take one lock per process and check the process id on every write, and its
    histograms walk their buckets in Python: a single-image /predict made 18 such writes
    (docs/request-path.md measures both ways). The flush adds up each series' updates and
    writes each changed value once: a counter's increments as one increment, a histogram's
    observations as one increment per bucket they fall in, and one of its sum.
    """

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self.interval = interval
        self._increments: deque[tuple[Series, float]] = deque()
        self._observations: deque[tuple[Series, float]] = deque()
        # A request's whole cost per update: one append of ((metric, labels), amount).
        self.queue_increment = self._increments.append
        self.queue_observation = self._observations.append
        self._flushing = threading.Lock()  # the flushing thread, and a flush at close
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def add(self, metric: Counter | Gauge, labels: tuple[str, ...], amount: float) -> None:
        """Queue an increment of a counter or gauge (negative: a gauge's decrement)."""
        self.queue_increment(((metric, labels), amount))

    def observe(self, histogram: Histogram, labels: tuple[str, ...], value: float) -> None:
        """Queue one observation of a histogram."""
        self.queue_observation(((histogram, labels), value))

    def start(self) -> None:
        """Start the flushing thread in this process, once."""
        if self._flusher is None or not self._flusher.is_alive():
            self._stopping.clear()
            self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
            self._flusher.start()

    def close(self) -> None:
        """Stop the flushing thread and write what is queued."""
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()

    def flush(self) -> None:
        """Write every update queued so far, each series' updates added up into one write."""
        with self._flushing:  # the only consumer: popleft cannot find the queue emptier
            increments: dict[tuple, float] = {}
            pop = self._increments.popleft
            for _ in range(len(self._increments)):  # what later requests add waits its turn
                series, amount = pop()
                increments[series] = increments.get(series, 0.0) + amount
            observations: dict[tuple, list[float]] = {}
            pop = self._observations.popleft
            for _ in range(len(self._observations)):
                series, value = pop()
                values = observations.get(series)
                if values is None:
                    observations[series] = [value]
                else:
                    values.append(value)
            for (metric, labels), amount in increments.items():
                (metric.labels(*labels) if labels else metric).inc(amount)
            for (histogram, labels), values in observations.items():
                _observe_all(histogram.labels(*labels) if labels else histogram, values)

    def _flush_periodically(self) -> None:
        """Write the queued updates every `interval` seconds until closed."""
        while not self._stopping.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the failed batch is lost
                log.exception("writing the queued metric updates failed")


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


BUFFER = MetricBuffer()


def add(metric: Counter | Gauge, amount: float = 1.0, *labels: str) -> None:
    """Queue an increment of a counter or gauge (a negative one: a gauge's decrement)."""
    BUFFER.queue_increment(((metric, labels), amount))


def observe(histogram: Histogram, value: float, *labels: str) -> None:
    """Queue one observation of a histogram."""
    BUFFER.queue_observation(((histogram, labels), value))


class Timed:
    """Observe the seconds a `with` block takes, through the buffer, even when it raises."""

    __slots__ = ("histogram", "started")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        observe(self.histogram, time.perf_counter() - self.started)
