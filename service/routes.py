"""HTTP routes: parse the request, call the predictor, shape the response."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, g, jsonify, request

from service import metrics
from service.deadline import Deadline
from service.errors import ModelNotFound
from service.inputs import (
    PredictOptions,
    read_images,
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


@api.get("/v1/models/<name>")
def model_status(name: str) -> Response:
    """Model status and metadata: versions, state, signature, class names, accuracy."""
    model = _model_named(name)
    meta = model.metadata
    return jsonify(
        model_version_status=[
            {
                "version": str(model.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
        metadata={
            "name": settings().model_name,
            "version": model.version,
            "signature_name": meta["signature_name"],
            "inputs": meta["input"],
            "outputs": meta["output"],
            "class_names": model.class_names,
            "test_accuracy": meta["metrics"]["accuracy"],
            "parameters": meta.get("parameters"),
            "created": meta.get("created"),
        },
    )


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
    model, probabilities = _run_model(images)
    return jsonify(
        model={"name": settings().model_name, "version": model.version},
        predictions=[_prediction(row, model.class_names, options) for row in probabilities],
    )


def _model_named(name: str) -> LoadedModel:
    """Return the served model if `name` is its name."""
    if name != settings().model_name:
        raise ModelNotFound(
            f"No model named {name!r}; this server serves {settings().model_name!r}."
        )
    return predictor().current()


def _run_model(images: np.ndarray) -> tuple[LoadedModel, np.ndarray]:
    """Call the model on a batch, recording batch size, latency and predicted classes."""
    started = time.perf_counter()
    model, probabilities = predictor().predict(images)
    metrics.INFERENCE_LATENCY.observe(time.perf_counter() - started)
    metrics.BATCH_SIZE.observe(len(images))
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
