"""What happens around every request: metrics, and one structured access-log line."""

from __future__ import annotations

import json
import logging
import secrets
import time

from flask import Flask, Response, g, request

from service import metrics

access_log = logging.getLogger("service.access")

# Any token is a method to gunicorn and Werkzeug (they answer 405), so labelling by the raw
# method would let a client create a new time series with every request: RFC 9110's methods
# and PATCH keep their name, the rest become "other".
METHOD_LABELS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def endpoint_label() -> str:
    """Label requests by route pattern, never by raw path, to bound label cardinality."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def method_label() -> str:
    """Label requests by method, folding non-standard methods into "other"."""
    return request.method if request.method in METHOD_LABELS else "other"


def init_app(app: Flask) -> None:
    """Register the hooks that time, count and log each request."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_leave)


def _start() -> None:
    """Note the start time and request id; count the request as in flight."""
    g.started = time.perf_counter()
    g.request_id = request.headers.get("X-Request-ID") or secrets.token_hex(16)
    g.in_flight = True
    metrics.IN_FLIGHT.inc()


def _finish(response: Response) -> Response:
    """Count and time the answered request, and write its access-log line."""
    started = g.get("started", time.perf_counter())
    seconds = time.perf_counter() - started
    endpoint = endpoint_label()
    metrics.REQUESTS.labels(endpoint, method_label(), str(response.status_code)).inc()
    metrics.REQUEST_LATENCY.labels(endpoint).observe(seconds)
    code = g.get("error_code")
    if code:
        metrics.ERRORS.labels(code).inc()
    response.headers["X-Request-ID"] = g.get("request_id", "")
    access_log.info(
        json.dumps(
            {
                "request_id": g.get("request_id"),
                "remote_addr": request.remote_addr,
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 3),
                "request_bytes": request.content_length,
                "response_bytes": response.calculate_content_length(),
                "images": g.get("images"),
                "error_code": code,
            }
        )
    )
    return response


def _leave(error: BaseException | None) -> None:
    """Leave the in-flight gauge, whatever happened."""
    if g.pop("in_flight", False):
        metrics.IN_FLIGHT.dec()
