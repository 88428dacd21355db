"""HTTP routes: parse the request, call the predictor, shape the response."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, g, jsonify, request
from PIL import Image

from service import metrics
from service.deadline import Deadline
from service.errors import ModelNotFound
from service.inputs import (
    PredictOptions,
    read_images,
    read_invert,
    read_options,
    read_parameters,
    receive_body,
)
from service.model import LoadedModel, Predictor
from service.settings import Settings

api = Blueprint("api", __name__)


def predictor() -> Predictor:
    """The app's predictor, registered once by create_app."""
    return current_app.extensions["predictor"]


def settings() -> Settings:
    """The app's settings object."""
    return current_app.extensions["settings"]


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify(status="alive")


@api.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 only once a model is loaded and warmed up."""
    model = predictor().model
    if model is None:
        return jsonify(status="loading", error=predictor().error), 503
    return jsonify(status="ready", model=settings().model_name, version=model.version), 200


@api.post("/predict")
def predict() -> Response:
    """Classify one or more images from a multipart, raw-image or JSON request."""
    model = predictor().current()
    deadline = Deadline(settings().request_timeout)
    receive_body(request, deadline)
    options = read_options(read_parameters(request), len(model.class_names))
    images = read_images(request, settings(), options.invert, deadline)
    g.images = len(images)
    deadline.check("running the model")
    model, probabilities = run_model(images)
    return jsonify(
        model={"name": settings().model_name, "version": model.version},
        predictions=[_prediction(row, model.class_names, options) for row in probabilities],
    )


@api.post("/preprocess")
def preprocess() -> Response:
    """Return, as a PNG, the 28x28 image /predict would give the model for this upload."""
    deadline = Deadline(settings().request_timeout)
    receive_body(request, deadline)
    invert = read_invert(read_parameters(request))
    # The same parsing as /predict, with a batch limit of one: one PNG answers one image.
    one_image = dataclasses.replace(settings(), max_batch=1)
    images = read_images(request, one_image, invert, deadline)
    g.images = len(images)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def model_named(name: str, version: int | None = None) -> LoadedModel:
    """Return the served model's default or given version if `name` is its name."""
    if name != settings().model_name:
        raise ModelNotFound(
            f"No model named {name!r}; this server serves {settings().model_name!r}."
        )
    return predictor().current(version)


def run_model(images: np.ndarray, version: int | None = None) -> tuple[LoadedModel, np.ndarray]:
    """Classify a request's images, counting predicted classes and confidence."""
    model, probabilities = predictor().predict(images, version)
    for row in probabilities:
        metrics.PREDICTIONS.labels(model.class_names[int(row.argmax())]).inc()
        metrics.CONFIDENCE.observe(float(row.max()))
    return model, probabilities


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
