"""The service's own routes: health, readiness, /predict and /preprocess.

Each parses its request and shapes its response; the request path between them is the data
plane's (service/inference/dataplane.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Request, Response, jsonify, request
from PIL import Image

from service.api.openapi import PIXELS_EXAMPLE, documented, ok, ref, with_batch_limit
from service.contract.values import BATCH_LIMIT, NUM_CLASSES
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
TOP_K = {
    "name": "top_k",
    "in": "query",
    "description": "Also list the k most probable classes, best first.",
    "schema": {"type": "integer", "minimum": 1, "maximum": NUM_CLASSES},
}
INVERT = {
    "name": "invert",
    "in": "query",
    "description": "Negate intensities: `auto` does it when the image's border is light (a photo "
    "on a light background). Case-insensitive.",
    "schema": {"type": "string", "enum": list(INVERT_VALUES), "default": "auto"},
}


@api.get("/healthz")
@documented("Liveness", ok(ref("Alive"), "The worker answers."))
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify(status="alive")


@api.get("/readyz")
@documented(
    "Readiness",
    ok(ref("Ready"), "The model is loaded and warmed up."),
    {
        "503": {
            "description": "The model is still loading, or failed to load.",
            "content": {"application/json": {"schema": ref("Loading")}},
        }
    },
)
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
@documented(
    "Classify images",
    ok(ref("PredictResponse"), "One prediction per image, in request order."),
    description="One or more images, as multipart files in the field `image`, a raw image "
    "body, or JSON `instances` (base64 image files or 28x28 pixel arrays). Parameters come "
    "from the query string, or from form fields of a multipart upload.",
    parameters=(TOP_K, INVERT),
    body=lambda models: upload_body(models, batch=True),
    raises=PREDICT_ERRORS,
)
def predict() -> Response:
    """Classify one or more images from a multipart, raw-image or JSON request."""
    answer = dataplane().infer(request, read_upload)
    model, options = answer.model, answer.request.options
    return jsonify(
        model={"name": dataplane().settings.model_name, "version": model.version},
        predictions=[_prediction(row, model.class_names, options) for row in answer.probabilities],
    )


@api.post("/preprocess")
@documented(
    "The image the model receives",
    {
        "200": {
            "description": "A 28x28 8-bit grayscale PNG: light garment on black.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    description="The same request forms as /predict, for exactly one image; answers the 28x28 "
    "8-bit grayscale image /predict gives the model, as a PNG.",
    parameters=(INVERT,),
    body=lambda models: upload_body(models, batch=False),
    raises=UPLOAD_ERRORS,
)
def preprocess() -> Response:
    """Return, as a PNG, the 28x28 image /predict would give the model for this upload."""
    upload = dataplane().preprocess(request, read_upload)
    buffer = io.BytesIO()
    Image.fromarray(upload.images[0]).save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def read_upload(received: Received[Request]) -> Upload:
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
    images = read_images(
        req, form, settings, options.invert, received.deadline, max_images, received.metric_buffer
    )
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


def upload_body(models: dict[str, Any], batch: bool) -> dict[str, Any]:
    """An upload's three forms, in the OpenAPI document: multipart files, a raw image, or JSON
    instances; a batch up to the batch limit (/predict) or one image (/preprocess)."""
    file = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": file, "minItems": 1, **BATCH_LIMIT}
    properties: dict[str, Any] = {
        IMAGE_FIELD: files if batch else file,
        "invert": {"type": "string", "enum": list(INVERT_VALUES)},
    }
    if batch:
        properties["top_k"] = TOP_K["schema"]
    multipart = {"type": "object", "required": [IMAGE_FIELD], "properties": properties}
    instances = models["PredictRequest"] if batch else with_batch_limit(models["PredictRequest"], 1)
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": multipart,
            "encoding": {IMAGE_FIELD: {"contentType": ", ".join(sorted(RAW_IMAGE_TYPES))}},
        }
    }
    content.update({media: {"schema": file} for media in sorted(RAW_IMAGE_TYPES)})
    content["application/json"] = {"schema": instances, "example": {"instances": [PIXELS_EXAMPLE]}}
    return {"required": True, "content": content}
