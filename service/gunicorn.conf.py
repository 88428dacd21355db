"""Gunicorn settings for the service; every number can be overridden from the environment.

Start it through bin/serve, which empties the metrics directory first.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from gunicorn.glogging import Logger
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service.observability.buffers import buffer_access_log
from service.settings import Settings

if TYPE_CHECKING:  # gunicorn's classes, for the hooks' signatures (untyped: Any to mypy)
    from datetime import timedelta

    from gunicorn.arbiter import Arbiter
    from gunicorn.http.message import Request
    from gunicorn.http.wsgi import Response
    from gunicorn.workers.base import Worker

# Every setting, this file's and the app's, is read and checked once here, in the master,
# before a worker starts: a value out of range stops start-up with one line naming the
# variable and what it accepts (SystemExit passes gunicorn's config loader: exit status 1).
try:
    SETTINGS = Settings.from_env()
except ValueError as error:
    sys.exit(f"fashion-mnist-serving: {error}")

# Public API port; $PORT is the convention of most platforms (and `make serve`).
bind = [f"{SETTINGS.host}:{SETTINGS.port}"]

# Each worker listens on a socket of its own (SO_REUSEPORT), and Linux spreads new connections
# over them by a hash of their addresses. On one shared socket, whichever worker woke first
# accepted them: a burst of kept-alive connections (a load balancer's pool, a benchmark's 32)
# often all went to one worker, whose GIL held it to one core while the other core idled
# (docs/benchmarks.md, "Connections per worker", measures both). Linux only: elsewhere
# (macOS) the option lets every worker bind but does not spread connections.
reuse_port = SETTINGS.reuse_port and sys.platform == "linux"

# Each worker is a process with its own LiteRT interpreters and model copy, and no TensorFlow
# unless FMNIST_RUNTIME=savedmodel (memory per worker: docs/operations.md, "Resources").
# Measured at concurrency 32 on 2 cores (docs/benchmarks.md, "Workers and threads"): 2 workers
# beat 1, whose Python is held to one core by its GIL; 3 were level, for one more model copy.
workers = SETTINGS.workers

# gthread: threads overlap request parsing with inference, and every request waiting in a
# worker can join its next model call. 16 threads (FMNIST_THREADS) measured among the best
# (docs/benchmarks.md, "Workers and threads"); 16 lets up to 16 requests share a call and a
# slow client holds one thread of many. One model thread (FMNIST_TF_THREADS=1): two gained
# nothing there, as both cores are already busy with the workers' Python. gthread's own class
# hands each new connection to a thread that waits for its first bytes; this one parks it in
# the poller until they come, so a client that connects and sends nothing holds no thread
# (service/worker.py; docs/security.md, "Slow clients and the front door").
worker_class = "service.worker.ParkingThreadWorker"
threads = SETTINGS.threads

# Kill a worker stuck longer than this; converting and loading the model takes a few seconds
# (post_worker_init keeps notifying the master meanwhile).
timeout = SETTINGS.timeout

# Let in-flight requests finish on SIGTERM before workers exit.
graceful_timeout = SETTINGS.graceful_timeout

# Keep-alive for clients and load balancers that reuse connections; also how long a new
# connection may stay silent before it is closed (service/worker.py). The front door's
# upstream keepalive_timeout (deploy/nginx/fashion-mnist.conf) stays below it, so nginx never
# sends a request on a connection gunicorn is closing.
keepalive = 5

# Off: each worker loads its model after the fork (interpreter and thread pools do not survive
# one), and the master imports no app code.
preload_app = False


class AppLogger(Logger):
    """Gunicorn's logger minus its access log: the app writes each request's JSON line."""

    def access(
        self, resp: Response, req: Request, environ: dict[str, Any], request_time: timedelta
    ) -> None:
        """Write nothing. With logconfig_dict set, gunicorn would otherwise build the
        access-log fields of every request (visible in profiles of a loaded worker) for a
        logger nobody reads."""


# Per-request lines come from the app as JSON (service/observability/instrumentation.py), so
# gunicorn's own access log stays off; its error log (start-up, worker deaths) goes to stderr.
accesslog = None
logger_class = AppLogger
errorlog = "-"
loglevel = SETTINGS.log_level

# Bound request-line and header sizes (request smuggling and header-flood hardening).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Metrics have their own port, kept off the public listener (docs/metrics.md says why), and
# the master serves it from every worker's files: one merged answer per scrape, even while
# every worker is busy or restarting.
METRICS_PORT = SETTINGS.metrics_port
METRICS_HOST = SETTINGS.metrics_host

# One JSON line per request on stdout; start-up, worker and error messages on stderr.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(message)s"},
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "stream": "ext://sys.stdout",
        },
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "service.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}


def when_ready(server: Arbiter) -> None:
    """Serve /metrics from the master, merging every worker's metric files."""
    # A fresh registry: the master must not import the app (or declare metrics) to serve it.
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    # The master's process metrics: process_start_time_seconds is when the service started.
    ProcessCollector(registry=registry)
    server.metrics_server, _ = start_http_server(METRICS_PORT, addr=METRICS_HOST, registry=registry)
    server.log.info(json.dumps({"event": "metrics_listening", "port": METRICS_PORT}))


def post_fork(server: Arbiter, worker: Worker) -> None:
    """Close the worker's inherited metrics socket (only the master serves it); buffer its
    access log."""
    server.metrics_server.socket.close()
    worker.access_log = buffer_access_log()


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Drop a dead worker's live gauges so they stop counting."""
    mark_process_dead(worker.pid)


def post_worker_init(worker: Worker) -> None:
    """Start accepting connections only once this worker's model is loaded (or failed to).

    With reuse_port (the default) each worker listens on a socket of its own from the fork,
    and the kernel hands it its share of new connections: a restarted worker that accepted at
    once would answer them 503 model_not_ready while its siblings are ready; they wait in its
    backlog instead. Notifying keeps the master's timeout off.
    """
    versions = worker_extension(worker, "versions")
    while versions is not None and not versions.wait_ready(1.0) and versions.error is None:
        worker.notify()
    if versions is not None:  # the service's app (not a benchmark's): its gRPC server too
        from service.grpc.server import serve  # after the fork: gRPC must not start in the master

        worker.grpc_server = serve(worker.wsgi)


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """Let the worker's gRPC calls in flight finish (as gunicorn did its HTTP requests), serve
    whatever the batching queues still hold, then write the last metric updates and log
    lines."""
    grpc_server = getattr(worker, "grpc_server", None)
    if grpc_server is not None:
        from service.grpc.server import stop

        stop(grpc_server, SETTINGS.graceful_timeout)
    versions = worker_extension(worker, "versions")
    if versions is not None:
        versions.stop()
    metric_buffer = worker_extension(worker, "metric_buffer")
    if metric_buffer is not None:
        metric_buffer.close()
    if getattr(worker, "access_log", None) is not None:
        worker.access_log.close()  # writes every held line before it returns


def worker_extension(worker: Worker, name: str) -> Any:
    """One of the worker's app extensions (its ModelVersions, its MetricBuffer); None before
    the app loaded, or for an app without it (the benchmark's HTTP-floor app shares this
    configuration)."""
    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get(name)
