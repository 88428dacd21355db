"""What happens around every request: metrics, and one structured access-log line."""

from __future__ import annotations

import logging
import secrets
import threading
import time

from flask import Flask, Request, Response, g, request

from service.io.jsonio import dump
from service.observability import metrics
from service.observability.buffers import MetricBuffer

access_log = logging.getLogger("service.access")

# Any token is a method to gunicorn and Werkzeug (they answer 405), so labelling by the raw
# method would let a client create a new time series with every request: RFC 9110's methods
# and PATCH keep their name, the rest become "other".
METHOD_LABELS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class RequestsInProcess:
    """How many requests this process is handling now, from before_request to teardown (the
    batcher asks: service/inference/batching.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def __call__(self) -> int:
        """The number now."""
        return self._count

    def enter(self) -> None:
        """Count one request more."""
        with self._lock:
            self._count += 1

    def leave(self) -> None:
        """Count one request less."""
        with self._lock:
            self._count -= 1


def endpoint_label(req: Request) -> str:
    """Label requests by route pattern, never by raw path, to bound label cardinality."""
    return req.url_rule.rule if req.url_rule is not None else "unmatched"


def method_label(req: Request) -> str:
    """Label requests by method, folding non-standard methods into "other"."""
    return req.method if req.method in METHOD_LABELS else "other"


def log_access(
    request_id: str | None,
    remote_addr: str | None,
    method: str,
    path: str,
    endpoint: str,
    status: int | str,
    seconds: float,
    request_bytes: int | None,
    response_bytes: int | None,
    images: int | None,
    error_code: str | None,
) -> None:
    """Write one request's JSON access-log line, the same fields for HTTP and gRPC calls."""
    if access_log.isEnabledFor(logging.INFO):  # the line is built only to be written
        access_log.info(
            dump(
                {
                    "request_id": request_id,
                    "remote_addr": remote_addr,
                    "method": method,
                    "path": path,
                    "endpoint": endpoint,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "request_bytes": request_bytes,
                    "response_bytes": response_bytes,
                    "images": images,
                    "error_code": error_code,
                }
            ).decode()
        )


class Instrumentation:
    """Time, count and log each request of one app; registered once by create_app.

    It holds the app's MetricBuffer, which the app's other parts are handed too, and its count
    of the requests in process, which the batcher asks.
    """

    def __init__(self, metric_buffer: MetricBuffer) -> None:
        self.metric_buffer = metric_buffer
        self.requests_in_process = RequestsInProcess()

    def init_app(self, app: Flask) -> None:
        """Register the hooks around each request; start writing the app's metrics."""
        app.extensions["instrumentation"] = self
        app.extensions["metric_buffer"] = self.metric_buffer
        self.metric_buffer.start()
        app.before_request(self._start)
        app.after_request(self._finish)
        app.teardown_request(self._leave)

    def _start(self) -> None:
        """Note the start time and request id; count the request as in flight."""
        g.started = time.perf_counter()
        g.request_id = request.environ.get("HTTP_X_REQUEST_ID") or secrets.token_hex(16)
        g.in_flight = True
        self.requests_in_process.enter()
        self.metric_buffer.add(metrics.IN_FLIGHT, (), 1)

    def _finish(self, response: Response) -> Response:
        """Count and time the answered request, and write its access-log line."""
        # The proxies resolved once: each lookup through them costs about a microsecond.
        req, state = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        # g.get, not getattr: g raises AttributeError for each missing name, which costs.
        seconds = time.perf_counter() - state.get("started", time.perf_counter())
        endpoint = endpoint_label(req)
        status = str(response.status_code)
        buffer = self.metric_buffer
        buffer.add(metrics.REQUESTS, (endpoint, method_label(req), status), 1)
        buffer.observe(metrics.REQUEST_LATENCY, (endpoint,), seconds)
        code = state.get("error_code")
        if code:
            buffer.add(metrics.ERRORS, (code,), 1)
        request_id = state.get("request_id", "")
        response.headers["X-Request-ID"] = request_id
        log_access(
            request_id or None,
            req.remote_addr,
            req.method,
            req.path,
            endpoint,
            response.status_code,
            seconds,
            req.content_length,
            response.calculate_content_length(),
            state.get("images"),
            code,
        )
        return response

    def _leave(self, error: BaseException | None) -> None:
        """Leave the in-flight gauge, whatever happened."""
        if g.pop("in_flight", False):
            self.requests_in_process.leave()
            self.metric_buffer.add(metrics.IN_FLIGHT, (), -1)
