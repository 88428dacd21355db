"""TensorFlow Serving's REST API: model status, model metadata and predict.

Predict takes the row format {"instances": [...]} or the columnar {"inputs": ...}: pixel values
0 to 255 shaped [N, 28, 28] or [N, 28, 28, 1]. Errors are {"error": "..."} (service/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Request, Response, jsonify, request
from werkzeug.routing import BaseConverter, IntegerConverter

from service.api.openapi import MAX_BATCH, PIXELS_EXAMPLE, documented, json_body, ok, ref
from service.contract.reading import read
from service.contract.tf_serving import TF_PREDICT_REFUSALS, TfPredictRequest
from service.errors import (
    Answer,
    BatchTooLarge,
    BodyTooLarge,
    DeadlineExceeded,
    InvalidParameter,
    InvalidTensor,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    ModelVersionNotFound,
    Overloaded,
    RequestTimeout,
    RouteNotFound,
    UnknownSignature,
    UnknownTensor,
)
from service.inference.dataplane import Received, dataplane
from service.inference.model import LoadedModel
from service.io.tensors import nested_array, to_images
from service.io.uploads import parse_json


class ModelName(BaseConverter):
    """A model name as TensorFlow Serving's REST paths take it: no "/" and no ":".

    With ":" allowed, GET /v1/models/<model_name:name> also matched /v1/models/m:predict (name
    "m:predict"): the predict URL answered GET with 404 and listed GET in its Allow header.
    """

    regex = "[^/:]+"


class Version(IntegerConverter):
    """A version number in ASCII digits: Werkzeug's int converter matches any Unicode digit
    (its regex is \\d+), so /versions/%EF%BC%91 (a fullwidth one) was version 1 here, while
    /v2 refuses it."""

    regex = "[0-9]+"


v1 = Blueprint("tf_serving", __name__, url_prefix="/v1/models")
# Recorded before the routes below, so the converters are in the app's map when they are added.
v1.record_once(
    lambda state: state.app.url_map.converters.update(model_name=ModelName, version=Version)
)

OK = {"error_code": "OK", "error_message": ""}
# What each route can answer besides 200, for the OpenAPI document (with /versions/N, also
# ModelVersionNotFound): the model lookup, then reading and running a predict request.
LOOKUP_ERRORS: tuple[Answer, ...] = (ModelNotFound, RouteNotFound, ModelNotReady)
PREDICT_ERRORS = (
    *LOOKUP_ERRORS,
    MalformedRequest,
    InvalidParameter,
    InvalidTensor,
    RequestTimeout,
    BodyTooLarge,
    BatchTooLarge,
    Overloaded,
    DeadlineExceeded,
)


@v1.get("/<model_name:name>", defaults={"version": None})
@v1.get("/<model_name:name>/versions/<version:version>")
@documented(
    "Model status and metadata (TensorFlow Serving)",
    ok(ref("TfModelStatus"), "Versions, state, signature and class names."),
    description="TensorFlow Serving's GetModelStatus: `AVAILABLE` for each served version, "
    "`END` with the error for a version folder that failed to load; plus this service's "
    "`metadata` of the version (the default one without /versions/N), absent for a version "
    "that is not served.",
    raises=LOOKUP_ERRORS,
)
def model_status(name: str, version: int | None) -> Response:
    """Each version's state (TF Serving's GetModelStatusResponse), and the version's metadata."""
    dataplane().model(name)  # 404 for another name, 503 while loading
    served, failures = dataplane().versions.served, dataplane().versions.failures
    statuses = [
        {"version": str(v), "state": "AVAILABLE", "status": OK}
        for v in sorted(served, reverse=True)
    ] + [
        {
            "version": str(v),
            "state": "END",
            "status": {"error_code": "UNKNOWN", "error_message": f.message},
        }
        for v, f in sorted(failures.items(), reverse=True)
    ]
    if version is not None:
        statuses = [status for status in statuses if status["version"] == str(version)]
        if not statuses:
            raise ModelVersionNotFound(version, served)
    body: dict[str, Any] = {"model_version_status": statuses}
    model = served.get(max(served) if version is None else version)
    if model is not None:
        body["metadata"] = describe(model)
    return jsonify(body)


@v1.get("/<model_name:name>/metadata", defaults={"version": None})
@v1.get("/<model_name:name>/versions/<version:version>/metadata")
@documented(
    "Model metadata (TensorFlow Serving)",
    ok(ref("TfModelMetadata"), "The model spec and signature."),
    description="TensorFlow Serving's GetModelMetadata: the `model_spec` and the serving "
    "SignatureDef, read from `saved_model.pb`, in protobuf's JSON mapping.",
    raises=LOOKUP_ERRORS,
)
def model_metadata(name: str, version: int | None) -> Response:
    """The serving signature, as TF Serving's GetModelMetadataResponse shows it."""
    model = dataplane().model(name, version)
    return jsonify(
        model_spec={
            "name": dataplane().settings.model_name,
            "signature_name": "",
            "version": str(model.version),
        },
        metadata={"signature_def": {"signature_def": {model.signature_name: model.signature_def}}},
    )


@v1.post("/<model_name:name>:predict", defaults={"version": None})
@v1.post("/<model_name:name>/versions/<version:version>:predict")
@documented(
    "Classify pixel arrays (TensorFlow Serving)",
    ok(
        {"oneOf": [ref("TfRowsResponse"), ref("TfColumnsResponse")]},
        "Ten probabilities per image.",
    ),
    description="TensorFlow Serving's Predict. Pixel values 0 to 255 (fractions are rounded), "
    "one 28x28 or 28x28x1 array per image, light garment on black: no decoding or "
    "preprocessing happens here. The row format `instances` answers `predictions`, the "
    "columnar `inputs` answers `outputs`; rows of the ten probabilities, in class order. At "
    f"most {MAX_BATCH} images. The body is read as JSON whatever its Content-Type (curl -d "
    "sends a form type).",
    body=lambda models: json_body("TfPredictRequest", {"instances": [PIXELS_EXAMPLE]}),
    raises=PREDICT_ERRORS,
)
def predict(name: str, version: int | None) -> Response:
    """Classify a batch: "instances" answer "predictions", "inputs" answer "outputs"."""
    answer = dataplane().infer(request, read_predict, name, version)
    key = "outputs" if answer.request.columnar else "predictions"
    return jsonify({key: answer.probabilities.tolist()})


@dataclass(frozen=True)
class PredictCall:
    """A Predict request, as read: its images, and whether it came in the columnar form."""

    images: np.ndarray
    columnar: bool


def read_predict(received: Received[Request]) -> PredictCall:
    """Read a Predict body into images: JSON, the row or the columnar form, pixel values."""
    model = received.model
    assert model is not None  # DataPlane.infer always names the version
    document = parse_json(received.request.get_data(cache=False))
    data, columnar = read_request(document, model)
    return PredictCall(to_images(nested_array(data), received.settings.max_batch), columnar)


def describe(model: LoadedModel) -> dict[str, Any]:
    """This service's summary of a version: signature, class names, test accuracy."""
    meta = model.metadata
    return {
        "name": dataplane().settings.model_name,
        "version": model.version,
        "signature_name": meta["signature_name"],
        "inputs": meta["input"],
        "outputs": meta["output"],
        "class_names": model.class_names,
        "test_accuracy": meta["metrics"]["accuracy"],
        "parameters": meta.get("parameters"),
        "created": meta.get("created"),
    }


def read_request(document: Any, model: LoadedModel) -> tuple[Any, bool]:
    """Return the input tensor's nested values, and whether the request was columnar."""
    predict = read(TfPredictRequest, document, TF_PREDICT_REFUSALS, signature=model.signature_name)
    sent = predict.model_fields_set  # exactly one of instances and inputs (the model checks)
    signature = predict.signature_name if "signature_name" in sent else model.signature_name
    if signature != model.signature_name:
        raise UnknownSignature(signature, model.signature_name)
    if "inputs" in sent:
        return named_value(predict.inputs, model.input_name), True
    return [named_value(item, model.input_name) for item in predict.instances], False


def named_value(value: Any, input_name: str) -> Any:
    """Unwrap {"<input name>": value}, the form for named inputs; pass a bare value through."""
    if not isinstance(value, dict):
        return value
    if set(value) != {input_name}:
        raise UnknownTensor("input", sorted(value), input_name)
    return value[input_name]
