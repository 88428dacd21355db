"""What happens around every gRPC call, as service/observability/instrumentation.py does around
every HTTP request: counted and timed, one JSON access-log line, and errors turned into status
codes (service/errors.py's GRPC_STATUS) with the stable code in the trailing metadata.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from service.errors import InternalError, ServiceError, grpc_status
from service.observability import metrics
from service.observability.instrumentation import Instrumentation, log_access

log = logging.getLogger(__name__)

ERROR_CODE_KEY = "fmnist-error-code"  # trailing metadata: the stable code of service/errors.py
RETRY_AFTER_KEY = "retry-after"  # trailing metadata: seconds, as the HTTP header says
REQUEST_ID_KEY = "x-request-id"  # metadata in and out, as the HTTP header

# The images of the call in progress, set by the servicer that read them (for the log line).
IMAGES: ContextVar[int | None] = ContextVar("images", default=None)
Handler = Callable[[Any, grpc.ServicerContext], Any]


class Observed(grpc.ServerInterceptor):
    """Wrap every unary call of the server: metrics, access log, errors to status codes."""

    def __init__(self, instrumentation: Instrumentation) -> None:
        self.instrumentation = instrumentation

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        """The method's handler, its unary behaviour wrapped (streams, as Health's Watch, pass)."""
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method, behaviour = details.method, handler.unary_unary

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            return self.call(method, behaviour, request, context)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def call(
        self, method: str, behaviour: Handler, request: Any, context: grpc.ServicerContext
    ) -> Any:
        """Run one call; count, time and log it; answer a failure with its status code."""
        started = time.perf_counter()
        metadata = dict(context.invocation_metadata())
        request_id = metadata.get(REQUEST_ID_KEY) or secrets.token_hex(16)
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        in_process = self.instrumentation.requests_in_process
        in_process.enter()  # the batcher's count of the requests the worker holds
        IMAGES.set(None)
        response, status, error = None, "OK", None
        try:
            response = behaviour(request, context)
        except ServiceError as failure:
            status, error = grpc_status(failure), failure
        except Exception:
            log.exception("unhandled error in %s", method)
            status = "INTERNAL"
            error = ServiceError("The server failed; the error was logged.")
            error.code = InternalError.code
        finally:
            in_process.leave()
        self.record(method, status, error, started, request_id, request, response, context)
        if error is not None:
            trailers = [(ERROR_CODE_KEY, error.code)]
            if "Retry-After" in error.headers:
                trailers.append((RETRY_AFTER_KEY, error.headers["Retry-After"]))
            context.set_trailing_metadata(trailers)
            context.abort(grpc.StatusCode[status], error.detail)
        return response

    def record(
        self,
        method: str,
        status: str,
        error: ServiceError | None,
        started: float,
        request_id: str,
        request: Any,
        response: Any,
        context: grpc.ServicerContext,
    ) -> None:
        """Count and time the call, and write its access-log line (the HTTP line's fields)."""
        seconds = time.perf_counter() - started
        buffer = self.instrumentation.metric_buffer
        buffer.add(metrics.GRPC_REQUESTS, (method, status), 1)
        buffer.observe(metrics.GRPC_REQUEST_LATENCY, (method,), seconds)
        code = error.code if error is not None else None
        if code:
            buffer.add(metrics.ERRORS, (code,), 1)
        log_access(
            request_id,
            context.peer(),
            "grpc",
            method,
            method,
            status,
            seconds,
            request.ByteSize(),
            None if response is None else response.ByteSize(),
            IMAGES.get(),
            code,
        )
