"""The OpenAPI 3.1 document of the service, built in this one module and served at /openapi.json.

To document a new route, add its operations to `paths()` (one function per operation, as
below; `problem_response` builds an error answer, `protocol_error_response` one under /v1 and
/v2). tests/test_openapi.py fails until every route of the app is documented and every
documented path is a route, and until every error code of service/errors.py is named by some
operation here and by the README's table of errors.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service import errors
from service.inputs import IMAGE_FIELD, INVERT_VALUES, RAW_IMAGE_TYPES
from service.preprocessing import SIZE
from service.protocols.kserve_v2 import DATATYPES, HEADER_LENGTH
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
    408: (errors.RequestTimeout.code,),
    413: (errors.BodyTooLarge.code, errors.ImageTooLarge.code, errors.BatchTooLarge.code),
    415: (
        errors.UnsupportedMediaType.code,
        errors.NotAnImage.code,
        errors.UnsupportedImageFormat.code,
    ),
    422: (errors.UnusableImage.code, errors.InvalidPixels.code),
}
# Why a route that runs the model may answer 503 (all with Retry-After).
UNAVAILABLE = (errors.ModelNotReady.code, errors.Overloaded.code, errors.DeadlineExceeded.code)
# What can go wrong reading a tensor request, by status: TF Serving :predict and v2 infer.
TENSOR_ERRORS: dict[int, tuple[str, ...]] = {
    400: (errors.MalformedRequest.code, errors.InvalidTensor.code),
    413: (errors.BodyTooLarge.code, errors.BatchTooLarge.code),
}
PROTOCOL_JSON = "application/json"  # what /v1 and /v2 answer, errors included
BINARY = "application/octet-stream"
EXAMPLE_VERSION = 1  # the first version python -m training writes

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
            "Every error carries a stable `code`: an RFC 9457 problem document, except under "
            "/v1 (TensorFlow Serving REST) and /v2 (Open Inference Protocol), which answer "
            '`{"error": "...", "code": "..."}` as those protocols\' clients expect.',
        },
        "paths": paths(settings),
        "components": {"schemas": schemas(settings), "parameters": parameters(settings)},
    }


def paths(settings: Settings) -> dict[str, Any]:
    """Every route of the app, by OpenAPI path template."""
    return {
        "/": {"get": page_operation()},
        "/static/{filename}": {"get": static_operation()},
        "/openapi.json": {"get": openapi_operation()},
        "/healthz": {"get": healthz_operation()},
        "/readyz": {"get": readyz_operation()},
        "/predict": {"post": predict_operation(settings)},
        "/preprocess": {"post": preprocess_operation()},
        **tf_serving_paths(settings),
        **kserve_v2_paths(settings),
    }


def tf_serving_paths(settings: Settings) -> dict[str, Any]:
    """TensorFlow Serving's REST routes, each for the default version and for /versions/N."""
    found: dict[str, Any] = {}
    for path, versioned in (
        ("/v1/models/{name}", False),
        ("/v1/models/{name}/versions/{version}", True),
    ):
        found[path] = {"get": tf_status_operation(versioned)}
        found[path + "/metadata"] = {"get": tf_metadata_operation(versioned)}
        found[path + ":predict"] = {"post": tf_predict_operation(settings, versioned)}
    return found


def kserve_v2_paths(settings: Settings) -> dict[str, Any]:
    """The Open Inference Protocol's routes, the model ones also for /versions/{version}."""
    found: dict[str, Any] = {
        "/v2": {"get": v2_server_metadata_operation()},
        "/v2/health/live": {"get": v2_live_operation()},
        "/v2/health/ready": {"get": v2_ready_operation()},
    }
    for path, versioned in (
        ("/v2/models/{name}", False),
        ("/v2/models/{name}/versions/{version}", True),
    ):
        found[path] = {"get": v2_model_metadata_operation(versioned)}
        found[path + "/ready"] = {"get": v2_model_ready_operation(versioned)}
        found[path + "/infer"] = {"post": v2_infer_operation(settings, versioned)}
    return found


def problem_response(description: str, *codes: str) -> dict[str, Any]:
    """A problem+json response whose `code` is one of `codes`."""
    schema = {
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {"properties": {"code": {"enum": list(codes)}}},
        ]
    }
    return {"description": description, "content": {errors.PROBLEM_JSON: {"schema": schema}}}


def protocol_error_response(description: str, *codes: str) -> dict[str, Any]:
    """A /v1 or /v2 error, {"error", "code"}, whose `code` is one of `codes`."""
    schema = {
        "allOf": [
            {"$ref": "#/components/schemas/ProtocolError"},
            {"properties": {"code": {"enum": list(codes)}}},
        ]
    }
    return {"description": description, "content": {PROTOCOL_JSON: {"schema": schema}}}


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
        408: "The body did not arrive within the request time limit.",
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
            "503": problem_response(
                "The model is still loading, this worker's queue is full, or the request "
                "passed its time limit, waiting for the model included.",
                *UNAVAILABLE,
            ),
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
            "503": problem_response(
                "Preprocessing passed the request time limit.", errors.DeadlineExceeded.code
            ),
        },
    }


def model_parameters(protocol: str, versioned: bool) -> list[dict[str, str]]:
    """The path's model name, and its version when it has /versions/{version}: "tf" or "v2"."""
    names = ["name", "version"] if versioned else ["name"]
    return [{"$ref": f"#/components/parameters/{protocol}_{name}"} for name in names]


def model_lookup_responses(versioned: bool) -> dict[str, Any]:
    """The 404 and 500 answers of a /v1 or /v2 route that names a model (and a version)."""
    codes = [errors.ModelNotFound.code]
    if versioned:
        codes.append(errors.ModelVersionNotFound.code)
    # Werkzeug's own 404 (in the protocol's form too) when a path value does not fit the route:
    # a "/" in the name, a version that is no number.
    codes.append(NOT_FOUND)
    unknown = "No model of that name" + (", or that version is not served." if versioned else ".")
    return {
        "404": protocol_error_response(unknown, *codes),
        "500": protocol_error_response("Unexpected failure (logged).", INTERNAL_ERROR),
    }


def loading_response() -> dict[str, Any]:
    """The 503 of a /v1 or /v2 route that reads the model, before any version is loaded."""
    return protocol_error_response(
        "No version is loaded yet (with Retry-After).", errors.ModelNotReady.code
    )


def body_timeout_response() -> dict[str, Any]:
    """The 408 of a /v1 or /v2 route that reads a body: it did not arrive in time."""
    return protocol_error_response(
        "The body did not arrive within the request time limit.", errors.RequestTimeout.code
    )


def protocol_unavailable_response() -> dict[str, Any]:
    """The 503 of a /v1 or /v2 route that runs the model (the data plane's, as /predict's)."""
    return protocol_error_response(
        "No version is loaded yet, this worker's queue is full, or the request passed its time "
        "limit, waiting for the model included (with Retry-After).",
        *UNAVAILABLE,
    )


def tf_status_operation(versioned: bool) -> dict[str, Any]:
    """GET /v1/models/{name}[/versions/{version}]: version status and metadata."""
    return {
        "summary": "Model status and metadata (TensorFlow Serving)",
        "description": "TensorFlow Serving's GetModelStatus: `AVAILABLE` for each served "
        "version, `END` with the error for a version folder that failed to load; plus this "
        "service's `metadata` of the version (the default one without /versions/N), absent "
        "for a version that is not served.",
        "parameters": model_parameters("tf", versioned),
        "responses": {
            "200": json_response("Versions, state, signature and class names.", ref("ModelStatus")),
            **model_lookup_responses(versioned),
            "503": loading_response(),
        },
    }


def tf_metadata_operation(versioned: bool) -> dict[str, Any]:
    """GET /v1/models/{name}[/versions/{version}]/metadata: the serving SignatureDef."""
    return {
        "summary": "Model metadata (TensorFlow Serving)",
        "description": "TensorFlow Serving's GetModelMetadata: the `model_spec` and the serving "
        "SignatureDef, read from `saved_model.pb`, in protobuf's JSON mapping.",
        "parameters": model_parameters("tf", versioned),
        "responses": {
            "200": json_response("The model spec and signature.", ref("TfModelMetadata")),
            **model_lookup_responses(versioned),
            "503": loading_response(),
        },
    }


def tf_predict_operation(settings: Settings, versioned: bool) -> dict[str, Any]:
    """POST /v1/models/{name}[/versions/{version}]:predict: classify a tensor of pixels."""
    request = ref("TfPredictRequest")
    example = {"instances": [[[0] * SIZE] * SIZE]}
    refused = {
        400: (errors.InvalidParameter.code, *TENSOR_ERRORS[400]),
        413: TENSOR_ERRORS[413],
    }
    return {
        "summary": "Classify pixel arrays (TensorFlow Serving)",
        "description": "TensorFlow Serving's Predict. Pixel values 0 to 255 (fractions are "
        "rounded), one 28x28 or 28x28x1 array per image, light garment on black: no decoding or "
        "preprocessing happens here. The row format `instances` answers `predictions`, the "
        "columnar `inputs` answers `outputs`; rows of the ten probabilities, in class order. "
        f"At most {settings.max_batch} images. The body is read as JSON whatever its "
        "Content-Type (curl -d sends a form type).",
        "parameters": model_parameters("tf", versioned),
        "requestBody": {
            "required": True,
            "content": {PROTOCOL_JSON: {"schema": request, "example": example}},
        },
        "responses": {
            "200": json_response("Ten probabilities per image.", ref("TfPredictResponse")),
            "400": protocol_error_response(
                "Not JSON, neither or both of `instances` and `inputs`, another signature, or "
                "a tensor of the wrong name, shape or values.",
                *refused[400],
            ),
            **model_lookup_responses(versioned),
            "408": body_timeout_response(),
            "413": protocol_error_response("Body or batch over the limits.", *refused[413]),
            "503": protocol_unavailable_response(),
        },
    }


def v2_server_metadata_operation() -> dict[str, Any]:
    """GET /v2: server name, version and extensions."""
    return {
        "summary": "Server metadata (Open Inference Protocol)",
        "responses": {"200": json_response("Name, version, extensions.", ref("V2ServerMetadata"))},
    }


def v2_live_operation() -> dict[str, Any]:
    """GET /v2/health/live: liveness."""
    return {
        "summary": "Server liveness (Open Inference Protocol)",
        "responses": {"200": {"description": "The worker process answers; empty body."}},
    }


def v2_ready_operation() -> dict[str, Any]:
    """GET /v2/health/ready: readiness."""
    return {
        "summary": "Server readiness (Open Inference Protocol)",
        "responses": {
            "200": {"description": "The default version is loaded and warmed up; empty body."},
            "400": {"description": "Not ready yet (the protocol's 4xx for false); empty body."},
        },
    }


def v2_model_ready_operation(versioned: bool) -> dict[str, Any]:
    """GET /v2/models/{name}[/versions/{version}]/ready: model readiness."""
    return {
        "summary": "Model readiness (Open Inference Protocol)",
        "parameters": model_parameters("v2", versioned),
        "responses": {
            "200": {"description": "That version (the default one) is served; empty body."},
            "400": {"description": "No version is loaded yet; empty body."},
            **model_lookup_responses(versioned),
        },
    }


def v2_model_metadata_operation(versioned: bool) -> dict[str, Any]:
    """GET /v2/models/{name}[/versions/{version}]: model metadata."""
    return {
        "summary": "Model metadata (Open Inference Protocol)",
        "parameters": model_parameters("v2", versioned),
        "responses": {
            "200": json_response(
                "Served versions, platform, input and output tensors.", ref("V2ModelMetadata")
            ),
            **model_lookup_responses(versioned),
            "503": loading_response(),
        },
    }


def v2_infer_operation(settings: Settings, versioned: bool) -> dict[str, Any]:
    """POST /v2/models/{name}[/versions/{version}]/infer: classify one tensor of pixels."""
    example = {
        "id": "42",
        "inputs": [
            {"name": "images", "shape": [1, SIZE, SIZE], "datatype": "UINT8", "data": [0] * SIZE**2}
        ],
    }
    binary = {
        "type": "string",
        "format": "binary",
        "description": "The binary tensor data extension: a JSON inference request of "
        f"{HEADER_LENGTH} bytes, then the raw little-endian bytes of each input whose "
        "parameters give `binary_data_size`.",
    }
    return {
        "summary": "Classify a tensor of pixels (Open Inference Protocol)",
        "description": "One input tensor, the model's (`images`): UINT8 or FP32 pixel values 0 "
        f"to 255, shape [N, 28, 28] or [N, 28, 28, 1], N at most {settings.max_batch}; `data` "
        "flat or nested in row-major order, or sent as binary data after the JSON. The answer "
        "is the FP32 output [N, 10], in JSON or, when asked, as binary data.",
        "parameters": [
            *model_parameters("v2", versioned),
            {"$ref": f"#/components/parameters/{HEADER_LENGTH}"},
        ],
        "requestBody": {
            "required": True,
            "content": {
                PROTOCOL_JSON: {"schema": ref("V2InferenceRequest"), "example": example},
                BINARY: {"schema": binary},
            },
        },
        "responses": {
            "200": v2_inference_response(),
            "400": protocol_error_response(
                "Not an inference request, a bad Inference-Header-Content-Length, or a tensor of "
                "the wrong name, datatype, shape, size or values.",
                *TENSOR_ERRORS[400],
            ),
            **model_lookup_responses(versioned),
            "408": body_timeout_response(),
            "413": protocol_error_response("Body or batch over the limits.", *TENSOR_ERRORS[413]),
            "415": protocol_error_response(
                "A compressed body (Content-Encoding).", errors.UnsupportedMediaType.code
            ),
            "503": protocol_unavailable_response(),
        },
    }


def v2_inference_response() -> dict[str, Any]:
    """The 200 of v2 infer: JSON, or JSON then the output's bytes when binary was asked for."""
    binary = {
        "type": "string",
        "format": "binary",
        "description": f"A JSON inference response of {HEADER_LENGTH} bytes, then the output's "
        "[N, 10] float32 values, little-endian.",
    }
    return {
        "description": "The `probabilities` output, FP32 [N, 10]; binary data when the request "
        "says `binary_data_output` (request parameters) or `binary_data` (output parameters).",
        "headers": {
            HEADER_LENGTH: {
                "description": "With binary data: the length of the JSON part.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
        "content": {
            PROTOCOL_JSON: {"schema": ref("V2InferenceResponse")},
            BINARY: {"schema": binary},
        },
    }


def invert_parameter() -> dict[str, str]:
    """The shared `invert` query parameter."""
    return {"$ref": "#/components/parameters/invert"}


def parameters(settings: Settings) -> dict[str, Any]:
    """The shared parameters: the upload routes' query, the protocol routes' path and header."""
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
        # TensorFlow Serving's names hold no ":", which starts the :predict suffix.
        "tf_name": model_name_parameter(settings, "^[^/:]+$"),
        "v2_name": model_name_parameter(settings, "^[^/]+$"),
        # Werkzeug's int converter takes digits, no sign: -1 matches no route (404 not_found).
        "tf_version": {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "A model version (an integer folder name).",
            "schema": {"type": "integer", "minimum": 0},
            "example": EXAMPLE_VERSION,
        },
        # The protocol's versions are strings; ours are integers, anything else is never served.
        "v2_version": {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "A model version (an integer folder name).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "example": str(EXAMPLE_VERSION),
        },
        HEADER_LENGTH: {
            "name": HEADER_LENGTH,
            "in": "header",
            "description": "The binary tensor data extension: the length in bytes of the JSON "
            "inference request at the start of the body; binary tensor data follows it. "
            "Without it the whole body is the JSON.",
            "schema": {"type": "integer", "minimum": 0},
        },
    }


def model_name_parameter(settings: Settings, pattern: str) -> dict[str, Any]:
    """The model name in a /v1 or /v2 path: one path segment, matching `pattern`."""
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The model's name; another answers 404 `model_not_found`.",
        "schema": {"type": "string", "pattern": pattern},
        "example": settings.model_name,
    }


def top_k_schema() -> dict[str, Any]:
    """How many of the most probable classes to list."""
    return {"type": "integer", "minimum": 1, "maximum": NUM_CLASSES}


def schemas(settings: Settings) -> dict[str, Any]:
    """The component schemas: errors, predictions, JSON instances, the protocols' messages."""
    return {
        "Problem": problem_schema(),
        "ProtocolError": protocol_error_schema(),
        "Predictions": predictions_schema(),
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
        **tf_serving_schemas(settings.max_batch),
        **kserve_v2_schemas(settings.max_batch),
    }


def error_codes() -> list[str]:
    """Every stable error code the service can answer with."""
    tables = (UPLOAD_ERRORS, TENSOR_ERRORS)
    codes = {code for table in tables for status_codes in table.values() for code in status_codes}
    codes |= {*UNAVAILABLE, errors.ModelNotFound.code, errors.ModelVersionNotFound.code}
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


def protocol_error_schema() -> dict[str, Any]:
    """The error of /v1 and /v2: TF Serving's and KServe's `error`, with our stable `code`."""
    return {
        "type": "object",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, in plain words."},
            "code": {"type": "string", "enum": error_codes()},
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


def tf_serving_schemas(max_batch: int) -> dict[str, Any]:
    """TensorFlow Serving's messages: model status, metadata, predict request and response."""
    image = {
        "description": "One image: 28 rows of 28 pixel values (or of 28 one-value lists).",
        "oneOf": [ref("PixelArray"), pixel_column_array()],
    }
    named_image = named_input(image)
    batch = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": image}
    row = {
        "type": "array",
        "items": probability(),
        "minItems": NUM_CLASSES,
        "maxItems": NUM_CLASSES,
    }
    return {
        "ModelStatus": model_status_schema(),
        "TfModelMetadata": tf_metadata_schema(),
        "TfPredictRequest": {
            "type": "object",
            "description": "Exactly one of `instances` (rows: one image each, bare or named) and "
            "`inputs` (columns: the batch [N, 28, 28], bare or named).",
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            "properties": {
                "signature_name": {"type": "string", "example": "serving_default"},
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_batch,
                    "items": {"oneOf": [image, named_image]},
                },
                "inputs": {"oneOf": [batch, named_input(batch)]},
            },
        },
        "TfPredictResponse": {
            "type": "object",
            "description": "`predictions` for `instances`, `outputs` for `inputs`.",
            "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
            "properties": {
                "predictions": {"type": "array", "minItems": 1, "items": row},
                "outputs": {"type": "array", "minItems": 1, "items": row},
            },
        },
    }


def pixel_column_array() -> dict[str, Any]:
    """An image as 28x28x1: each pixel a list of one value."""
    pixel = {
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": {"type": "number", "minimum": 0, "maximum": 255},
    }
    line = {"type": "array", "minItems": SIZE, "maxItems": SIZE, "items": pixel}
    return {"type": "array", "minItems": SIZE, "maxItems": SIZE, "items": line}


def named_input(value: dict[str, Any]) -> dict[str, Any]:
    """A value wrapped as {"<input name>": value}: the model's input, `images`."""
    return {
        "type": "object",
        "description": "The value under the model's input name (`images`).",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": value,
    }


def probability() -> dict[str, Any]:
    """One class's probability."""
    return {"type": "number", "minimum": 0, "maximum": 1}


def model_status_schema() -> dict[str, Any]:
    """The 200 body of /v1/models/{name}, TensorFlow Serving's status plus metadata."""
    version_status = {
        "type": "object",
        "required": ["version", "state", "status"],
        "properties": {
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["AVAILABLE", "END"]},
            "status": {
                "type": "object",
                "required": ["error_code", "error_message"],
                "properties": {
                    "error_code": {"type": "string"},
                    "error_message": {"type": "string"},
                },
            },
        },
    }
    return {
        "type": "object",
        "required": ["model_version_status"],
        "properties": {
            "model_version_status": {"type": "array", "minItems": 1, "items": version_status},
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


def tf_metadata_schema() -> dict[str, Any]:
    """The 200 body of /v1/models/{name}/metadata: a SignatureDef in protobuf's JSON mapping."""
    tensor_info = {
        "type": "object",
        "required": ["dtype", "tensor_shape"],
        "properties": {
            "name": {"type": "string"},
            "dtype": {"type": "string", "example": "DT_UINT8"},
            "tensor_shape": {
                "type": "object",
                "properties": {
                    "dim": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"size": {"type": "string", "pattern": "^-?[0-9]+$"}},
                        },
                    }
                },
            },
        },
    }
    signature_def = {
        "type": "object",
        "required": ["inputs", "outputs", "method_name"],
        "properties": {
            "inputs": {"type": "object", "additionalProperties": tensor_info},
            "outputs": {"type": "object", "additionalProperties": tensor_info},
            "method_name": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["model_spec", "metadata"],
        "properties": {
            "model_spec": {
                "type": "object",
                "required": ["name", "signature_name", "version"],
                "properties": {
                    "name": {"type": "string"},
                    "signature_name": {"type": "string"},
                    "version": {"type": "string"},
                },
            },
            "metadata": {
                "type": "object",
                "required": ["signature_def"],
                "properties": {
                    "signature_def": {
                        "type": "object",
                        "required": ["signature_def"],
                        "properties": {
                            "signature_def": {
                                "type": "object",
                                "minProperties": 1,
                                "additionalProperties": signature_def,
                            }
                        },
                    }
                },
            },
        },
    }


def kserve_v2_schemas(max_batch: int) -> dict[str, Any]:
    """The Open Inference Protocol's messages this service speaks."""
    tensor_metadata = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    }
    return {
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
            },
        },
        "V2InferenceRequest": v2_inference_request_schema(max_batch),
        "V2InferenceResponse": v2_inference_response_schema(),
        "V2TensorData": {
            "description": "Pixel values 0 to 255 in row-major order, flat or nested.",
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": 255},
                    ref("V2TensorData"),
                ]
            },
        },
    }


def v2_inference_request_schema(max_batch: int) -> dict[str, Any]:
    """An inference request: one input tensor of pixels, optionally which outputs and how.

    Optional members may be null, which counts as absent (as in KServe's and MLServer's own).
    """
    # Not prefixItems ([N, 28, 28, 1] exactly): schemathesis takes them for draft 4 tuples.
    shape = {
        "description": f"[N, 28, 28] or [N, 28, 28, 1], N from 1 to {max_batch}.",
        "type": "array",
        "minItems": 3,
        "maxItems": 4,
        "items": {"type": "integer", "minimum": 0},
    }
    tensor = {
        "type": "object",
        "description": "`data`, or `parameters.binary_data_size` with the binary extension.",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "example": "images"},
            "shape": shape,
            "datatype": {"type": "string", "enum": sorted(DATATYPES)},
            "parameters": v2_parameters(
                "binary_data_size", {"type": ["integer", "null"], "minimum": 0}
            ),
            "data": ref("V2TensorData"),
        },
    }
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "example": "probabilities"},
            "parameters": v2_parameters("binary_data", {"type": ["boolean", "null"]}),
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"], "description": "Echoed in the response."},
            "parameters": v2_parameters("binary_data_output", {"type": ["boolean", "null"]}),
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": tensor},
            "outputs": {"type": ["array", "null"], "items": output},
        },
    }


def v2_parameters(known: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A request's free-form `parameters`, with the one this service reads."""
    return {"type": ["object", "null"], "properties": {known: schema}}


def v2_inference_response_schema() -> dict[str, Any]:
    """An inference response: the probabilities tensor, its data in JSON or as binary data."""
    output = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"const": "FP32"},
            "shape": {
                "description": "[N, 10]",
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 2,
                "maxItems": 2,
            },
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
            "data": {"type": "array", "items": probability()},
        },
    }
    return {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": output},
        },
    }
