"""The service's own routes: health, readiness, /predict and /preprocess.

Each parses its request and shapes its response; the request path between them is the data
plane's (service/inference/dataplane.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request
from PIL import Image

from service.errors import (
    Answer,
    BatchTooLarge,
    BodyTooLarge,
    CorruptImage,
    DeadlineExceeded,
    ImageTooLarge,
    InvalidParameter,
    InvalidPixels,
    MalformedRequest,
    ModelNotReady,
    NotAnImage,
    Overloaded,
    RequestTimeout,
    UnsupportedImageFormat,
    UnsupportedMediaType,
    UnusableImage,
)
from service.inference.dataplane import Received, dataplane
from service.io.uploads import (
    IMAGE_FIELD,
    INVERT_VALUES,
    RAW_IMAGE_TYPES,
    PredictOptions,
    read_form,
    read_images,
    read_invert,
    read_options,
    read_parameters,
)

api = Blueprint("api", __name__)

# What each route can answer besides 200, for service/api/openapi.py: reading an upload, then (for
# /predict) waiting for the model.
UPLOAD_ERRORS: tuple[Answer, ...] = (
    MalformedRequest,
    InvalidParameter,
    CorruptImage,
    RequestTimeout,
    BodyTooLarge,
    ImageTooLarge,
    BatchTooLarge,
    UnsupportedMediaType,
    NotAnImage,
    UnsupportedImageFormat,
    UnusableImage,
    InvalidPixels,
    DeadlineExceeded,
)
PREDICT_ERRORS = (*UPLOAD_ERRORS, ModelNotReady, Overloaded)


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify(status="alive")


@api.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 only once a model is loaded and warmed up."""
    plane = dataplane()
    model = plane.versions.model
    if model is None:
        return jsonify(status="loading", error=plane.versions.error), 503
    return jsonify(status="ready", model=plane.settings.model_name, version=model.version), 200


@dataclass(frozen=True)
class Upload:
    """An upload to /predict or /preprocess, as read: its images and the caller's options."""

    images: np.ndarray
    options: PredictOptions


@api.post("/predict")
def predict() -> Response:
    """Classify one or more images from a multipart, raw-image or JSON request."""
    answer = dataplane().infer(request, read_upload)
    model, options = answer.model, answer.request.options
    return jsonify(
        model={"name": dataplane().settings.model_name, "version": model.version},
        predictions=[_prediction(row, model.class_names, options) for row in answer.probabilities],
    )


@api.post("/preprocess")
def preprocess() -> Response:
    """Return, as a PNG, the 28x28 image /predict would give the model for this upload."""
    upload = dataplane().preprocess(request, read_upload)
    buffer = io.BytesIO()
    Image.fromarray(upload.images[0]).save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def read_upload(received: Received) -> Upload:
    """Read an upload's images and parameters: for /predict, a batch of up to the batch limit;
    for /preprocess (no model), exactly one image, as one PNG answers one image."""
    req, settings, model = received.request, received.settings, received.model
    max_images = settings.max_batch if model is not None else 1
    form = read_form(req, settings.max_batch)
    parameters = read_parameters(req, form)
    if model is None:
        options = PredictOptions(invert=read_invert(parameters))
    else:
        options = read_options(parameters, len(model.class_names))
    images = read_images(req, form, settings, options.invert, received.deadline, max_images)
    return Upload(images, options)


def _prediction(row: np.ndarray, class_names: list[str], options: PredictOptions) -> dict[str, Any]:
    """Shape one image's result: label, class id, confidence, every class's probability."""
    class_id = int(row.argmax())
    result: dict[str, Any] = {
        "label": class_names[class_id],
        "class_id": class_id,
        "confidence": float(row[class_id]),
        "probabilities": {name: float(p) for name, p in zip(class_names, row, strict=True)},
    }
    if options.top_k is not None:
        best = np.argsort(-row, kind="stable")[: options.top_k]
        result["top_k"] = [
            {"label": class_names[i], "class_id": int(i), "probability": float(row[i])}
            for i in best
        ]
    return result


def upload_content(max_images: int) -> dict[str, Any]:
    """The OpenAPI content of an upload's forms that are not JSON: multipart files, raw images."""
    file = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": file, "minItems": 1, "maxItems": max_images}
    multipart = {
        "type": "object",
        "required": [IMAGE_FIELD],
        "properties": {
            IMAGE_FIELD: files if max_images > 1 else file,
            "invert": {"type": "string", "enum": list(INVERT_VALUES)},
        },
    }
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": multipart,
            "encoding": {IMAGE_FIELD: {"contentType": ", ".join(sorted(RAW_IMAGE_TYPES))}},
        }
    }
    content.update({media: {"schema": file} for media in sorted(RAW_IMAGE_TYPES)})
    return content
