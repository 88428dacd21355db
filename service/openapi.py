"""The OpenAPI 3.1 document of the service, built in this one module and served at /openapi.json.

To document a new route, add its operations to `paths()` (one function per operation, as
below; `problem_response` builds an error answer). tests/test_openapi.py fails until every route
of the app is documented and every documented path is a route, and until every error code of
service/errors.py is named by some operation here and by the README's table of errors.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service import errors
from service.inputs import IMAGE_FIELD, INVERT_VALUES, RAW_IMAGE_TYPES
from service.preprocessing import SIZE
from service.settings import Settings

OPENAPI_VERSION = "3.1.0"
NUM_CLASSES = 10  # Fashion-MNIST's; their names are in GET /v1/models/{name}

# Werkzeug's own HTTP errors, named by service.errors.http_error_code.
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
INTERNAL_ERROR = "internal_error"

# What can go wrong reading an upload, by status: shared by /predict and /preprocess.
UPLOAD_ERRORS: dict[int, tuple[str, ...]] = {
    400: (errors.MalformedRequest.code, errors.InvalidParameter.code, errors.CorruptImage.code),
    413: (errors.BodyTooLarge.code, errors.ImageTooLarge.code, errors.BatchTooLarge.code),
    415: (
        errors.UnsupportedMediaType.code,
        errors.NotAnImage.code,
        errors.UnsupportedImageFormat.code,
    ),
    422: (errors.UnusableImage.code, errors.InvalidPixels.code),
}

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
def openapi_json() -> Response:
    """Serve the OpenAPI document, with this server's limits filled in."""
    return jsonify(document(current_app.extensions["settings"]))


def document(settings: Settings) -> dict[str, Any]:
    """Build the whole OpenAPI document."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Fashion-MNIST serving",
            "version": "1",
            "description": "Classify photos of garments into the ten Fashion-MNIST classes. "
            "Every error is an RFC 9457 problem document with a stable `code`.",
        },
        "paths": paths(settings),
        "components": {"schemas": schemas(), "parameters": parameters()},
    }


def paths(settings: Settings) -> dict[str, Any]:
    """Every route of the app, by OpenAPI path template."""
    return {
        "/": {"get": page_operation()},
        "/static/{filename}": {"get": static_operation()},
        "/openapi.json": {"get": openapi_operation()},
        "/healthz": {"get": healthz_operation()},
        "/readyz": {"get": readyz_operation()},
        "/v1/models/{name}": {"get": model_operation(settings)},
        "/predict": {"post": predict_operation(settings)},
        "/preprocess": {"post": preprocess_operation()},
    }


def problem_response(description: str, *codes: str) -> dict[str, Any]:
    """A problem+json response whose `code` is one of `codes`."""
    schema = {
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {"properties": {"code": {"enum": list(codes)}}},
        ]
    }
    return {"description": description, "content": {errors.PROBLEM_JSON: {"schema": schema}}}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A plain application/json response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def upload_error_responses() -> dict[str, Any]:
    """The 4xx answers of a request carrying images, and the 500 every route may give."""
    described = {
        400: "Unparsable request, bad parameter, or an image that does not decode.",
        413: "Body, image or batch over the limits.",
        415: "Content-Type not accepted, not an image, or an image format refused.",
        422: "An image that cannot be classified, or a bad pixel array.",
    }
    responses = {
        str(status): problem_response(text, *UPLOAD_ERRORS[status])
        for status, text in described.items()
    }
    responses["500"] = problem_response("Unexpected failure (logged).", INTERNAL_ERROR)
    return responses


def page_operation() -> dict[str, Any]:
    """GET /: the upload page for people."""
    return {
        "summary": "Upload page",
        "description": "A page where a person picks or drops an image and sees what the "
        "model received and predicted.",
        "responses": {
            "200": {"description": "The page.", "content": {"text/html": {}}},
            "404": problem_response("The page's files are missing.", NOT_FOUND),
        },
    }


def static_operation() -> dict[str, Any]:
    """GET /static/{filename}: the page's script and style sheet."""
    return {
        "summary": "The page's files",
        "parameters": [
            {
                "name": "filename",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "example": "app.js",
            }
        ],
        "responses": {
            "200": {
                "description": "The file.",
                "content": {
                    "text/css": {},
                    "text/javascript": {},
                    "image/svg+xml": {},
                    "text/html": {},
                },
            },
            "404": problem_response("No such file.", NOT_FOUND),
        },
    }


def openapi_operation() -> dict[str, Any]:
    """GET /openapi.json: this document."""
    return {
        "summary": "This OpenAPI document",
        "responses": {"200": json_response("The document.", {"type": "object"})},
    }


def healthz_operation() -> dict[str, Any]:
    """GET /healthz: liveness."""
    schema = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "alive"}},
    }
    return {
        "summary": "Liveness",
        "responses": {"200": json_response("The worker process answers.", schema)},
    }


def readyz_operation() -> dict[str, Any]:
    """GET /readyz: readiness."""
    ready = {
        "type": "object",
        "required": ["status", "model", "version"],
        "properties": {
            "status": {"const": "ready"},
            "model": {"type": "string"},
            "version": {"type": "integer"},
        },
    }
    loading = {
        "type": "object",
        "required": ["status", "error"],
        "properties": {"status": {"const": "loading"}, "error": {"type": ["string", "null"]}},
    }
    return {
        "summary": "Readiness",
        "responses": {
            "200": json_response("The model is loaded and warmed up.", ready),
            "503": json_response("The model is still loading, or failed to load.", loading),
        },
    }


def model_operation(settings: Settings) -> dict[str, Any]:
    """GET /v1/models/{name}: model status and metadata."""
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "example": settings.model_name,
    }
    return {
        "summary": "Model status and metadata",
        "parameters": [name],
        "responses": {
            "200": json_response("Versions, state, signature and class names.", ref("Model")),
            "404": problem_response("No model of that name.", errors.ModelNotFound.code),
            "503": problem_response("The model is still loading.", errors.ModelNotReady.code),
            "500": problem_response("Unexpected failure (logged).", INTERNAL_ERROR),
        },
    }


def image_request_body(max_images: int) -> dict[str, Any]:
    """The three request forms of an upload: multipart, a raw image, or JSON instances."""
    file = {"type": "string", "format": "binary"}
    multipart = {
        "type": "object",
        "required": [IMAGE_FIELD],
        "properties": {
            IMAGE_FIELD: {"type": "array", "items": file, "minItems": 1, "maxItems": max_images}
            if max_images > 1
            else file,
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
    instances = {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_images,
                "items": {"oneOf": [ref("Base64Image"), ref("PixelArray")]},
            }
        },
    }
    content["application/json"] = {
        "schema": instances,
        "example": {"instances": [[[0] * SIZE] * SIZE]},
    }
    return {"required": True, "content": content}


def predict_operation(settings: Settings) -> dict[str, Any]:
    """POST /predict: classify a batch of images."""
    body = image_request_body(settings.max_batch)
    form = body["content"]["multipart/form-data"]["schema"]["properties"]
    form["top_k"] = top_k_schema()
    return {
        "summary": "Classify images",
        "description": "One or more images, as multipart files in the field `image`, a raw "
        "image body, or JSON `instances` (base64 image files or 28x28 pixel arrays). "
        "Parameters come from the query string, or from form fields of a multipart upload.",
        "parameters": [{"$ref": "#/components/parameters/top_k"}, invert_parameter()],
        "requestBody": body,
        "responses": {
            "200": json_response("One prediction per image, in request order.", ref("Predictions")),
            **upload_error_responses(),
            "503": problem_response("The model is still loading.", errors.ModelNotReady.code),
        },
    }


def preprocess_operation() -> dict[str, Any]:
    """POST /preprocess: the 28x28 image the model would receive, as PNG."""
    return {
        "summary": "The image the model receives",
        "description": "The same request forms as /predict, for exactly one image; answers the "
        "28x28 8-bit grayscale image /predict gives the model, as a PNG.",
        "parameters": [invert_parameter()],
        "requestBody": image_request_body(1),
        "responses": {
            "200": {
                "description": "A 28x28 8-bit grayscale PNG: light garment on black.",
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            },
            **upload_error_responses(),
        },
    }


def invert_parameter() -> dict[str, str]:
    """The shared `invert` query parameter."""
    return {"$ref": "#/components/parameters/invert"}


def parameters() -> dict[str, Any]:
    """The query parameters of the upload routes."""
    return {
        "top_k": {
            "name": "top_k",
            "in": "query",
            "description": "Also list the k most probable classes, best first.",
            "schema": top_k_schema(),
        },
        "invert": {
            "name": "invert",
            "in": "query",
            "description": "Negate intensities: `auto` does it when the image's border is light "
            "(a photo on a light background). Case-insensitive.",
            "schema": {"type": "string", "enum": list(INVERT_VALUES), "default": "auto"},
        },
    }


def top_k_schema() -> dict[str, Any]:
    """How many of the most probable classes to list."""
    return {"type": "integer", "minimum": 1, "maximum": NUM_CLASSES}


def schemas() -> dict[str, Any]:
    """The component schemas: problems, predictions, model metadata, JSON instances."""
    return {
        "Problem": problem_schema(),
        "Predictions": predictions_schema(),
        "Model": model_schema(),
        "Base64Image": {
            "type": "object",
            "required": ["b64"],
            "additionalProperties": False,
            "properties": {"b64": {"type": "string", "contentEncoding": "base64"}},
        },
        "PixelArray": {
            "description": "28 rows of 28 intensities, 0 (black) to 255, light garment on black; "
            "28x28x1 is accepted too.",
            "type": "array",
            "minItems": SIZE,
            "maxItems": SIZE,
            "items": {
                "type": "array",
                "minItems": SIZE,
                "maxItems": SIZE,
                "items": {"type": "number", "minimum": 0, "maximum": 255},
            },
        },
    }


def error_codes() -> list[str]:
    """Every stable error code the service can answer with."""
    codes = {code for status_codes in UPLOAD_ERRORS.values() for code in status_codes}
    codes |= {errors.ModelNotFound.code, errors.ModelNotReady.code}
    return sorted(codes | {NOT_FOUND, METHOD_NOT_ALLOWED, INTERNAL_ERROR})


def problem_schema() -> dict[str, Any]:
    """RFC 9457 problem details, with the service's stable `code`."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "code", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "code": {"type": "string", "enum": error_codes()},
            "detail": {"type": "string", "description": "What went wrong, in plain words."},
        },
    }


def predictions_schema() -> dict[str, Any]:
    """The 200 body of /predict."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    ranked = {
        "type": "object",
        "required": ["label", "class_id", "probability"],
        "properties": {
            "label": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0, "maximum": NUM_CLASSES - 1},
            "probability": probability,
        },
    }
    prediction = {
        "type": "object",
        "required": ["label", "class_id", "confidence", "probabilities"],
        "properties": {
            "label": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0, "maximum": NUM_CLASSES - 1},
            "confidence": probability,
            "probabilities": {
                "type": "object",
                "description": "Every class's probability, in class order.",
                "additionalProperties": probability,
                "minProperties": NUM_CLASSES,
                "maxProperties": NUM_CLASSES,
            },
            "top_k": {"type": "array", "items": ranked, "minItems": 1, "maxItems": NUM_CLASSES},
        },
    }
    return {
        "type": "object",
        "required": ["model", "predictions"],
        "properties": {
            "model": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
            },
            "predictions": {"type": "array", "items": prediction, "minItems": 1},
        },
    }


def model_schema() -> dict[str, Any]:
    """The 200 body of /v1/models/{name}, TensorFlow Serving's status plus metadata."""
    version_status = {
        "type": "object",
        "required": ["version", "state", "status"],
        "properties": {
            "version": {"type": "string"},
            "state": {"type": "string"},
            "status": {"type": "object"},
        },
    }
    return {
        "type": "object",
        "required": ["model_version_status", "metadata"],
        "properties": {
            "model_version_status": {"type": "array", "items": version_status},
            "metadata": {
                "type": "object",
                "required": ["name", "version", "inputs", "outputs", "class_names"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "integer"},
                    "signature_name": {"type": "string"},
                    "inputs": {"type": "object"},
                    "outputs": {"type": "object"},
                    "class_names": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": NUM_CLASSES,
                        "maxItems": NUM_CLASSES,
                    },
                    "test_accuracy": {"type": ["number", "null"]},
                    "parameters": {
                        "type": ["integer", "null"],
                        "description": "The model's trainable parameter count.",
                    },
                    "created": {"type": ["string", "null"]},
                },
            },
        },
    }
