"""One error hierarchy, and the one place that turns every error into a JSON problem."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# TensorFlow Serving (/v1) and the Open Inference Protocol (/v2) answer errors {"error": "..."};
# our stable code rides along as "code", which their clients ignore.
PROTOCOL_PREFIXES = ("/v1/", "/v2/")


class ServiceError(Exception):
    """A failure with an HTTP status and a stable, machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class MalformedRequest(ServiceError):
    """The request cannot be parsed: bad JSON, bad base64, missing fields."""

    status, code = 400, "malformed_request"


class InvalidParameter(ServiceError):
    """A query or form parameter has a value outside its documented range."""

    status, code = 400, "invalid_parameter"


class UnknownSignature(InvalidParameter):
    """A TensorFlow Serving request names a serving signature the model does not have."""

    def __init__(self, sent: Any, served: str) -> None:
        super().__init__(f"Serving signature {sent!r} is not found; the model has {served!r}.")


class CorruptImage(ServiceError):
    """The bytes claim an allowed image format but do not decode (truncated, bad checksum)."""

    status, code = 400, "corrupt_image"


class BodyTooLarge(ServiceError):
    """The request body is over the byte limit, or has too many parts."""

    status, code = 413, "body_too_large"


class ImageTooLarge(ServiceError):
    """An image declares more pixels than the limit (decompression-bomb guard)."""

    status, code = 413, "image_too_large"


class BatchTooLarge(ServiceError):
    """A request carries more images than the batch limit."""

    status, code = 413, "batch_too_large"

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} images; the limit is {limit} per request.")


class UnsupportedMediaType(ServiceError):
    """The request's Content-Type is not one /predict accepts."""

    status, code = 415, "unsupported_media_type"


class NotAnImage(ServiceError):
    """The bytes are not an image in any format this service decodes."""

    status, code = 415, "not_an_image"


class UnsupportedImageFormat(ServiceError):
    """The bytes are an image, in a format outside the allow-list."""

    status, code = 415, "unsupported_image_format"


class UnusableImage(ServiceError):
    """The image decodes but cannot be classified (animated, degenerate shape, blank)."""

    status, code = 422, "unusable_image"


class InvalidPixels(ServiceError):
    """A pixel array has the wrong shape, or values that are not numbers 0 to 255."""

    status, code = 422, "invalid_pixels"


class Overloaded(ServiceError):
    """The model's queue is full; the client should retry after a pause."""

    status, code = 503, "overloaded"


class RequestTimeout(ServiceError):
    """The request body did not arrive within the request time limit (a stalled upload)."""

    status, code = 408, "request_timeout"


class DeadlineExceeded(ServiceError):
    """The request could not be answered within the request time limit."""

    status, code = 503, "deadline_exceeded"


class ModelNotFound(ServiceError):
    """The request names a model (or version) this server does not serve."""

    status, code = 404, "model_not_found"

    def __init__(self, name: str, served: str) -> None:
        super().__init__(f"No model named {name!r}; this server serves {served!r}.")


class ModelVersionNotFound(ModelNotFound):
    """The request names a model version that is not served (absent, broken, or not listed)."""

    status, code = 404, "model_version_not_found"

    def __init__(self, version: object, served: Iterable[int]) -> None:
        shown = str(version)[:40]  # a URL's text may be long
        versions = ", ".join(map(str, sorted(served))) or "none"
        ServiceError.__init__(self, f"Version {shown} is not served; served versions: {versions}.")


class InvalidTensor(ServiceError):
    """A protocol request's tensor has the wrong name, datatype, shape, size or values."""

    status, code = 400, "invalid_tensor"


class UnknownTensor(InvalidTensor):
    """A protocol request names an input or output the model does not have."""

    def __init__(self, kind: str, sent: Any, served: str) -> None:
        super().__init__(f"Unknown {kind} {sent!r}; the model's {kind} is {served!r}.")


class UnknownVersionLabel(InvalidParameter):
    """A TensorFlow Serving request names a version label; this server assigns none."""

    def __init__(self, label: str) -> None:
        # TF Serving's own words (and INVALID_ARGUMENT) for a label it does not know.
        super().__init__(f"Unrecognized servable version label: {label[:40]}")


class ModelNotReady(ServiceError):
    """No model version is loaded yet."""

    status, code = 503, "model_not_ready"


# The gRPC status of each error (service/grpc/observed.py), the nearest class in an error's MRO
# deciding: the canonical codes of https://grpc.github.io/grpc/core/md_doc_statuscodes.html,
# by name, so that this module imports no gRPC. The stable code rides along in the trailing
# metadata (fmnist-error-code), as Retry-After does (retry-after).
GRPC_STATUS: dict[type[ServiceError], str] = {
    ServiceError: "INVALID_ARGUMENT",
    ModelNotFound: "NOT_FOUND",
    BodyTooLarge: "RESOURCE_EXHAUSTED",
    ImageTooLarge: "RESOURCE_EXHAUSTED",
    BatchTooLarge: "RESOURCE_EXHAUSTED",
    Overloaded: "UNAVAILABLE",
    ModelNotReady: "UNAVAILABLE",
    RequestTimeout: "DEADLINE_EXCEEDED",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
}


def grpc_status(error: ServiceError) -> str:
    """The name of the gRPC status code an error answers with."""
    return next(GRPC_STATUS[cls] for cls in type(error).__mro__ if cls in GRPC_STATUS)


class HTTPAnswer:
    """An error Werkzeug answers by itself, named by http_error_code: documented, not raised."""

    status = 500
    code = "internal_error"


class RouteNotFound(HTTPAnswer):
    """No route matches the path: an unknown path, or a path value that does not fit its route."""

    status, code = 404, "not_found"


class MethodNotAllowed(HTTPAnswer):
    """The route does not take this method (see the Allow header)."""

    status, code = 405, "method_not_allowed"


class InternalError(HTTPAnswer):
    """An unexpected failure; it was logged, and the answer tells nothing more."""


Answer = type[ServiceError] | type[HTTPAnswer]


def error_codes() -> list[str]:
    """Every stable code the service answers with: its errors' and Werkzeug's."""
    found: set[str] = set()
    pending: list[type[ServiceError] | type[HTTPAnswer]] = [ServiceError, HTTPAnswer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.add(cls.code)
    return sorted(found - {ServiceError.code})


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """Build an RFC 9457 problem-details response carrying our stable `code`."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if has_request_context():
        g.error_code = code  # counted and logged by service.observability.instrumentation
    response = jsonify(body)
    response.status_code = status
    response.content_type = PROBLEM_JSON
    response.headers.update(headers or {})
    return response


def protocol_error(status: int, code: str, detail: str, headers: dict[str, str] | None) -> Response:
    """Build the {"error": "..."} body that TF Serving and KServe v2 clients read."""
    g.error_code = code
    response = jsonify(error=detail, code=code)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """Answer in the request's protocol's form under /v1 and /v2, else as RFC 9457 problem JSON."""
    if has_request_context() and (request.path + "/").startswith(PROTOCOL_PREFIXES):
        return protocol_error(status, code, detail, headers)
    return problem(status, code, detail, headers)


def http_error_code(error: HTTPException) -> str:
    """Name Werkzeug's HTTP errors in the same snake_case style as ours."""
    if error.code == 413:
        return BodyTooLarge.code
    return HTTPStatus(error.code or 500).phrase.lower().replace(" ", "_").replace("-", "_")


def register_error_handlers(app: Flask) -> None:
    """Map ServiceError, Werkzeug HTTP errors and anything unexpected to JSON errors."""

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Response:
        return error_response(error.status, error.code, error.detail, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        return error_response(
            error.code or 500, http_error_code(error), error.description or "", headers
        )

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, InternalError.code, "The server failed; the error was logged.")
