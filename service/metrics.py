"""Every Prometheus metric of the service, declared once.

Under gunicorn the metrics are shared through prometheus_client's multiprocess mode: the
entry script sets PROMETHEUS_MULTIPROC_DIR (and empties it) before any worker starts, and
the gunicorn master serves the merged view on its own port (see gunicorn.conf.py).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)

NAMESPACE = "fmnist"
# Sub-millisecond (health checks, errors) to seconds (large batches on a busy CPU).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered.",
    ["endpoint", "method", "status"],
    namespace=NAMESPACE,
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request start to response, by endpoint.",
    ["endpoint"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being handled now.",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "errors",
    "Error responses, by stable error code.",
    ["code"],
    namespace=NAMESPACE,
)
PREPROCESS_LATENCY = Histogram(
    "preprocess_duration_seconds",
    "Time to decode and preprocess one image.",
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
    "Seconds the newest model load took, slowest worker.",
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "model_info",
    "The model version served (1), by name and version.",
    ["name", "version"],
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)


def master_registry() -> CollectorRegistry:
    """Return a fresh registry merging every worker's files, plus the master's process metrics.

    process_start_time_seconds is the master's: when the service started.
    """
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    ProcessCollector(registry=registry)
    return registry
