"""Every Prometheus metric of the service, declared once.

Under gunicorn the metrics are shared through prometheus_client's multiprocess mode: bin/serve
sets PROMETHEUS_MULTIPROC_DIR (and empties it) before any worker starts, and the gunicorn
master serves the merged view on its own port (see gunicorn.conf.py). docs/metrics.md
describes each metric.

A request does not write its metrics itself: it queues each update in its app's MetricBuffer
(service/observability/buffers.py), which one thread writes out every FLUSH_INTERVAL seconds,
all the updates of one series in one write.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# gRPC's calls, in series of their own beside the HTTP ones (whose names dashboards and alerts
# already read): by full method name (/package.Service/Method, a fixed set) and status code name.
GRPC_REQUESTS = Counter(
    "grpc_requests",
    "gRPC calls answered, by full method name and status code.",
    ["method", "code"],
    namespace=NAMESPACE,
)
GRPC_REQUEST_LATENCY = Histogram(
    "grpc_request_duration_seconds",
    "Time from a gRPC call's start in the handler to its answer, by full method name.",
    ["method"],
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
MODEL_LOAD_FAILURES = Counter(
    "model_load_failures",
    "Version folders a worker did not serve because loading failed, by reason: "
    "missing_artifact (no serving artifact, and no TensorFlow to convert), checksum (an "
    "artifact differs from its metadata), error (anything else). Once per folder state.",
    ["reason"],
    namespace=NAMESPACE,
)
MODEL_INFO = Gauge(
    "model_info",
    "Always 1, labelled with the model name and version a live worker serves.",
    ["name", "version"],
    namespace=NAMESPACE,
    multiprocess_mode="livemax",
)
