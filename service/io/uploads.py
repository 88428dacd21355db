"""Read the images of a /predict request, whichever of its three forms it takes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flask import Request
from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser
from werkzeug.datastructures import MultiDict

from service.contract.predict import PREDICT_REFUSALS, Base64Image, PredictRequest
from service.contract.reading import read
from service.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidParameter,
    MalformedRequest,
    UnsupportedMediaType,
)
from service.io.deadline import Deadline
from service.io.images import decode_image
from service.io.preprocessing import Invert, pixels_from_array, to_model_input
from service.observability import metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.observability.buffers import MetricBuffer

IMAGE_FIELD = "image"
RAW_IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"}
)
INVERT_VALUES: tuple[Invert, ...] = ("auto", "true", "false")
MULTIPART = "multipart/form-data"
# A form holds the images plus a few parameter fields (top_k, invert) of a few bytes each:
# more parts than that, or a longer text field, is refused with 413 before any image decodes.
FORM_PARAMETER_PARTS = 8
MAX_FORM_FIELD_BYTES = 128 * 1024


@dataclass(frozen=True)
class Form:
    """A multipart/form-data body: its text fields, and its files by field name."""

    fields: MultiDict[str, str] = field(default_factory=MultiDict)
    files: MultiDict[str, bytes] = field(default_factory=MultiDict)


@dataclass(frozen=True)
class PredictOptions:
    """Caller's choices: how many top classes to list, and the polarity rule."""

    top_k: int | None = None
    invert: Invert = "auto"


def read_options(values: dict[str, str], num_classes: int) -> PredictOptions:
    """Validate the `top_k` and `invert` parameters (query string or form fields)."""
    top_k = values.get("top_k")
    # Compare spellings, not int(top_k): str.isdigit() takes "²", which int() refuses, and
    # int() refuses numbers of over 4300 digits; both were answered 500.
    if top_k is not None and top_k not in {str(k) for k in range(1, num_classes + 1)}:
        raise InvalidParameter(f"top_k must be an integer from 1 to {num_classes}.")
    return PredictOptions(int(top_k) if top_k else None, read_invert(values))


def read_invert(values: dict[str, str]) -> Invert:
    """Validate the `invert` parameter, the one /predict and /preprocess share."""
    text = values.get("invert", "auto").lower()
    for invert in INVERT_VALUES:
        if text == invert:
            return invert
    raise InvalidParameter("invert must be auto, true or false.")


def read_parameters(request: Request, form: Form) -> dict[str, str]:
    """Each parameter's first value, from the query string, else from the (multipart) form."""
    parameters = dict(form.fields.items())  # a MultiDict's items: each key's first value
    if request.query_string:
        parameters.update(request.args.items())
    return parameters


def read_form(request: Request, max_images: int) -> Form:
    """Parse a multipart/form-data body, already read, into text fields and files.

    Any other body has no form. The `multipart` package's push parser does the parsing, in one
    pass over the bytes in memory, for a fraction of what Werkzeug's form parser costs a
    single-image upload (docs/request-path.md, "a single-image multipart form parsed").
    """
    if request.mimetype != MULTIPART:
        return Form()
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise MalformedRequest("A multipart/form-data body needs a boundary in its Content-Type.")
    form = Form()
    try:
        parser = PushMultipartParser(boundary, max_segment_count=max_images + FORM_PARAMETER_PARTS)
        for part, data in _parts(parser, request.get_data()):
            if part.filename is not None:  # a file, as Werkzeug tells them apart
                form.files.add(part.name or "", data)
            else:
                form.fields.add(part.name or "", data.decode("utf-8", "replace"))
    except ParserLimitReached as error:
        raise BodyTooLarge(f"The multipart form is over a limit: {error}.") from None
    except MultipartError as error:
        raise MalformedRequest(f"The multipart body cannot be parsed: {error}.") from None
    return form


def _parts(parser: PushMultipartParser, body: bytes) -> list[tuple[MultipartSegment, bytes]]:
    """Every part of a whole multipart body with its bytes; text fields bounded in size."""
    parts: list[tuple[MultipartSegment, bytes]] = []
    part: MultipartSegment | None = None
    chunks: list[bytes] = []
    for event in parser.parse(body):
        if isinstance(event, MultipartSegment):
            part, chunks = event, []
        elif event is not None:
            assert part is not None  # the parser sends a part's header before its data
            chunks.append(event)
            if part.filename is None and part.bytes_received > MAX_FORM_FIELD_BYTES:
                raise BodyTooLarge(
                    f"The form field {part.name!r} is longer than {MAX_FORM_FIELD_BYTES} bytes."
                )
        else:
            parts.append((part, b"".join(chunks)))
    parser.close()  # raises for a body that ends before its closing boundary
    return parts


def read_images(
    request: Request,
    form: Form,
    settings: Settings,
    invert: Invert,
    deadline: Deadline,
    max_images: int,
    metric_buffer: MetricBuffer,
) -> np.ndarray:
    """Return the request's images, at most `max_images`, as one uint8 batch (N, 28, 28), in
    request order; each one's decoding and preprocessing are timed in `metric_buffer`."""
    mimetype = request.mimetype
    if mimetype == MULTIPART:
        items: list[Any] = _multipart_files(form)
    elif mimetype in RAW_IMAGE_TYPES:
        items = [request.get_data(cache=False)]
    elif mimetype == "application/json":
        items = _json_instances(request.get_data(cache=False))
    else:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'} is not accepted; send multipart/form-data, "
            f"application/json or one of {', '.join(sorted(RAW_IMAGE_TYPES))}."
        )
    if len(items) > max_images:
        raise BatchTooLarge(len(items), max_images)
    batch = []
    for index, item in enumerate(items):
        deadline.check(f"image {index + 1} of {len(items)}")
        batch.append(_preprocess(item, settings, invert, metric_buffer))
    return np.stack(batch)


def _preprocess(
    item: bytes | list[Any], settings: Settings, invert: Invert, metric_buffer: MetricBuffer
) -> np.ndarray:
    """Turn image bytes or a pixel array into model input, timing decoding and the rest apart."""
    if isinstance(item, bytes):
        # Timed even when decoding fails: refusing a bad file costs CPU time too.
        with metric_buffer.timed(metrics.DECODE_LATENCY):
            image = decode_image(item, settings.max_pixels, settings.max_aspect_ratio)
        with metric_buffer.timed(metrics.PREPROCESS_LATENCY):
            return to_model_input(image, invert)
    with metric_buffer.timed(metrics.PREPROCESS_LATENCY):
        return pixels_from_array(item)


def _multipart_files(form: Form) -> list[bytes]:
    """Every file of the `image` field."""
    files = form.files.getlist(IMAGE_FIELD)
    if not files:
        fields = sorted(set(form.files) | set(form.fields))
        raise MalformedRequest(
            f"multipart uploads need one or more files in a field named '{IMAGE_FIELD}'"
            + (f"; found {', '.join(fields)}." if fields else ".")
        )
    return files


def _reject_constant(name: str) -> None:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not."""
    raise MalformedRequest(f"{name} is not valid JSON.")


def parse_json(body: bytes) -> Any:
    """Parse a JSON body, answering 400 (never 500) for anything that is not JSON."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # RecursionError: deeply nested input
        raise MalformedRequest(f"The body is not valid JSON: {error}") from None


def _json_instances(body: bytes) -> list[bytes | list[Any]]:
    """Parse {"instances": [...]} into image bytes (b64, decoded) and pixel arrays."""
    request = read(PredictRequest, parse_json(body), PREDICT_REFUSALS)
    # b64 is declared as the text it is sent as; its validator has turned it into bytes.
    return [
        cast(bytes, item.b64) if isinstance(item, Base64Image) else item
        for item in request.instances
    ]
