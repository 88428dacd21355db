"""The OpenAPI 3.1 document of the service, served at /openapi.json.

Derived, not written: the schemas are those of service/contract/'s models, and each
operation's error answers are built from the error classes its route declares (routes.py,
tf_serving.py, kserve_v2.py), in the error form of its path (RFC 9457, or
`{"error", "code"}` under /v1 and /v2). What models do not describe stays by hand, next to its
route: the multipart and raw image bodies, and the binary tensor data. tests/test_openapi.py
fails until every route of the app is in `paths()` and every documented path is a route.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service import errors
from service.api import kserve_v2, routes, tf_serving
from service.contract.document import json_schemas
from service.contract.values import BATCH_LIMIT, NUM_CLASSES, SIZE
from service.io.uploads import INVERT_VALUES
from service.settings import Settings

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
PROTOCOL_JSON = "application/json"  # what /v1 and /v2 answer, errors included
EXAMPLE_VERSION = 1  # the first version python -m training writes
PIXELS_EXAMPLE = [[0] * SIZE] * SIZE

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
def openapi_json() -> Response:
    """Serve the OpenAPI document, with this server's limits filled in."""
    return jsonify(document(current_app.extensions["settings"]))


def document(settings: Settings) -> dict[str, Any]:
    """Build the whole OpenAPI document."""
    models = json_schemas(REF)  # with BATCH_LIMIT's markers: /preprocess takes one image
    schemas = with_batch_limit(models, settings.max_batch)
    schemas["Problem"]["properties"]["code"]["enum"] = errors.error_codes()
    schemas["ProtocolError"]["properties"]["code"]["enum"] = errors.error_codes()
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
        "paths": {path: answered(path, ops) for path, ops in paths(settings, models).items()},
        "components": {"schemas": schemas, "parameters": parameters(settings)},
    }


def with_batch_limit(schema: Any, limit: int) -> Any:
    """Replace contract.BATCH_LIMIT's marker by the batch limit, wherever it is."""
    if isinstance(schema, list):
        return [with_batch_limit(item, limit) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: with_batch_limit(value, limit) for key, value in schema.items()}
    if found.pop(next(iter(BATCH_LIMIT)), False):
        found["maxItems"] = limit
    return found


def paths(settings: Settings, models: dict[str, Any]) -> dict[str, Any]:
    """Every route of the app, by OpenAPI path template."""
    return {
        "/": {"get": page_operation()},
        "/static/{filename}": {"get": static_operation()},
        "/openapi.json": {"get": operation("This OpenAPI document", ok({"type": "object"}))},
        "/healthz": {"get": operation("Liveness", ok(ref("Alive"), "The worker answers."))},
        "/readyz": {"get": readyz_operation()},
        "/predict": {"post": predict_operation(settings, models)},
        "/preprocess": {"post": preprocess_operation(models)},
        **tf_serving_paths(settings),
        **kserve_v2_paths(settings),
    }


def answered(path: str, operations: dict[str, Any]) -> dict[str, Any]:
    """Turn each operation's `raises` into its error responses, in the path's error form."""
    protocol = (path + "/").startswith(errors.PROTOCOL_PREFIXES)
    for spec in operations.values():
        by_status: dict[int, list[errors.Answer]] = defaultdict(list)
        for answer in (*spec.pop("raises"), errors.InternalError):
            by_status[answer.status].append(answer)
        for status, answers in sorted(by_status.items()):
            spec["responses"][str(status)] = error_response(answers, protocol)
    return operations


def error_response(answers: list[errors.Answer], protocol: bool) -> dict[str, Any]:
    """One status's error answer: the error schema, its codes, what each means."""
    media, name = (PROTOCOL_JSON, "ProtocolError") if protocol else (errors.PROBLEM_JSON, "Problem")
    codes = {"properties": {"code": {"enum": [answer.code for answer in answers]}}}
    return {
        "description": " ".join(first_line(answer) for answer in answers),
        "content": {media: {"schema": {"allOf": [ref(name), codes]}}},
    }


def first_line(answer: errors.Answer) -> str:
    """The first line of an error class's docstring: when it is answered."""
    return (answer.__doc__ or answer.code).strip().splitlines()[0]


def operation(summary: str, *responses: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An operation: its summary, its responses by status, and `raises` (errors) and the rest."""
    return {
        "summary": summary,
        **{key: value for key, value in fields.items() if key != "raises"},
        "responses": {status: body for response in responses for status, body in response.items()},
        "raises": fields.get("raises", ()),
    }


def ok(schema: dict[str, Any], description: str = "The answer.") -> dict[str, Any]:
    """A 200 JSON response."""
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def empty(status: int, description: str) -> dict[str, Any]:
    """A response with no body."""
    return {str(status): {"description": description + " Empty body."}}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF.format(model=name)}


def page_operation() -> dict[str, Any]:
    """GET /: the upload page for people."""
    return operation(
        "Upload page",
        {"200": {"description": "The page.", "content": {"text/html": {}}}},
        description="A page where a person picks or drops an image and sees what the model "
        "received and predicted.",
        raises=(errors.RouteNotFound,),
    )


def static_operation() -> dict[str, Any]:
    """GET /static/{filename}: the page's script and style sheet."""
    types = ("text/css", "text/javascript", "image/svg+xml", "text/html")
    return operation(
        "The page's files",
        {"200": {"description": "The file.", "content": {media: {} for media in types}}},
        parameters=[path_parameter("filename", {"type": "string"}, "app.js")],
        raises=(errors.RouteNotFound,),
    )


def readyz_operation() -> dict[str, Any]:
    """GET /readyz: readiness."""
    loading = {"description": "The model is still loading, or failed to load."}
    loading["content"] = {"application/json": {"schema": ref("Loading")}}
    return operation(
        "Readiness", ok(ref("Ready"), "The model is loaded and warmed up."), {"503": loading}
    )


def upload_body(models: dict[str, Any], max_images: int) -> dict[str, Any]:
    """An upload's three forms: multipart, a raw image (routes.py), or JSON instances."""
    instances = with_batch_limit(models["PredictRequest"], max_images)
    content = routes.upload_content(max_images)
    content["application/json"] = {"schema": instances, "example": {"instances": [PIXELS_EXAMPLE]}}
    return {"required": True, "content": content}


def predict_operation(settings: Settings, models: dict[str, Any]) -> dict[str, Any]:
    """POST /predict: classify a batch of images."""
    body = upload_body(models, settings.max_batch)
    body["content"]["multipart/form-data"]["schema"]["properties"]["top_k"] = TOP_K
    return operation(
        "Classify images",
        ok(ref("PredictResponse"), "One prediction per image, in request order."),
        description="One or more images, as multipart files in the field `image`, a raw "
        "image body, or JSON `instances` (base64 image files or 28x28 pixel arrays). "
        "Parameters come from the query string, or from form fields of a multipart upload.",
        parameters=[{"$ref": "#/components/parameters/top_k"}, INVERT],
        requestBody=body,
        raises=routes.PREDICT_ERRORS,
    )


def preprocess_operation(models: dict[str, Any]) -> dict[str, Any]:
    """POST /preprocess: the 28x28 image the model would receive, as PNG."""
    png = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    return operation(
        "The image the model receives",
        {
            "200": {
                "description": "A 28x28 8-bit grayscale PNG: light garment on black.",
                "content": png,
            }
        },
        description="The same request forms as /predict, for exactly one image; answers the "
        "28x28 8-bit grayscale image /predict gives the model, as a PNG.",
        parameters=[INVERT],
        requestBody=upload_body(models, 1),
        raises=routes.UPLOAD_ERRORS,
    )


def lookup(table: tuple[errors.Answer, ...], versioned: bool) -> tuple[errors.Answer, ...]:
    """A route's errors, and a version that is not served for a route with /versions/N."""
    return (*table, errors.ModelVersionNotFound) if versioned else table


def model_parameters(protocol: str, versioned: bool) -> list[dict[str, str]]:
    """The path's model name, and its version when it has /versions/{version}: "tf" or "v2"."""
    names = ["name", "version"] if versioned else ["name"]
    return [{"$ref": f"#/components/parameters/{protocol}_{name}"} for name in names]


def json_request(schema: str, example: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body."""
    return {
        "required": True,
        "content": {PROTOCOL_JSON: {"schema": ref(schema), "example": example}},
    }


def tf_serving_paths(settings: Settings) -> dict[str, Any]:
    """TensorFlow Serving's REST routes, each for the default version and for /versions/N."""
    found: dict[str, Any] = {}
    for path, versioned in (
        ("/v1/models/{name}", False),
        ("/v1/models/{name}/versions/{version}", True),
    ):
        common = {"parameters": model_parameters("tf", versioned)}
        errors_ = lookup(tf_serving.LOOKUP_ERRORS, versioned)
        found[path] = {
            "get": operation(
                "Model status and metadata (TensorFlow Serving)",
                ok(ref("TfModelStatus"), "Versions, state, signature and class names."),
                description="TensorFlow Serving's GetModelStatus: `AVAILABLE` for each served "
                "version, `END` with the error for a version folder that failed to load; plus this "
                "service's `metadata` of the version (the default one without /versions/N), absent "
                "for a version that is not served.",
                raises=errors_,
                **common,
            )
        }
        found[path + "/metadata"] = {
            "get": operation(
                "Model metadata (TensorFlow Serving)",
                ok(ref("TfModelMetadata"), "The model spec and signature."),
                description="TensorFlow Serving's GetModelMetadata: the `model_spec` and the "
                "serving SignatureDef, read from `saved_model.pb`, in protobuf's JSON mapping.",
                raises=errors_,
                **common,
            )
        }
        found[path + ":predict"] = {
            "post": operation(
                "Classify pixel arrays (TensorFlow Serving)",
                ok(
                    {"oneOf": [ref("TfRowsResponse"), ref("TfColumnsResponse")]},
                    "Ten probabilities per image.",
                ),
                description="TensorFlow Serving's Predict. Pixel values 0 to 255 (fractions are "
                "rounded), one 28x28 or 28x28x1 array per image, light garment on black: no "
                "decoding or preprocessing happens here. The row format `instances` answers "
                "`predictions`, the columnar `inputs` answers `outputs`; rows of the ten "
                f"probabilities, in class order. At most {settings.max_batch} images. The body is "
                "read as JSON whatever its Content-Type (curl -d sends a form type).",
                requestBody=json_request("TfPredictRequest", {"instances": [PIXELS_EXAMPLE]}),
                raises=lookup(tf_serving.PREDICT_ERRORS, versioned),
                **common,
            )
        }
    return found


def kserve_v2_paths(settings: Settings) -> dict[str, Any]:
    """The Open Inference Protocol's routes, the model ones also for /versions/{version}."""
    found: dict[str, Any] = {
        "/v2": {
            "get": operation("Server metadata (Open Inference Protocol)", ok(ref("ServerMetadata")))
        },
        "/v2/health/live": {
            "get": operation(
                "Server liveness (Open Inference Protocol)",
                empty(200, "The worker process answers."),
            )
        },
        "/v2/health/ready": {
            "get": operation(
                "Server readiness (Open Inference Protocol)",
                empty(200, "The default version is loaded and warmed up."),
                empty(400, "Not ready yet (the protocol's 4xx for false)."),
            )
        },
    }
    for path, versioned in (
        ("/v2/models/{name}", False),
        ("/v2/models/{name}/versions/{version}", True),
    ):
        common = {"parameters": model_parameters("v2", versioned)}
        found[path] = {
            "get": operation(
                "Model metadata (Open Inference Protocol)",
                ok(ref("ModelMetadata"), "Served versions, platform, input and output tensors."),
                raises=lookup(kserve_v2.LOOKUP_ERRORS, versioned),
                **common,
            )
        }
        found[path + "/ready"] = {
            "get": operation(
                "Model readiness (Open Inference Protocol)",
                empty(200, "That version (the default one) is served."),
                empty(400, "No version is loaded yet."),
                raises=lookup(kserve_v2.READY_ERRORS, versioned),
                **common,
            )
        }
        found[path + "/infer"] = {"post": v2_infer_operation(settings, versioned)}
    return found


def v2_infer_operation(settings: Settings, versioned: bool) -> dict[str, Any]:
    """POST /v2/models/{name}[/versions/{version}]/infer: classify one tensor of pixels."""
    example = {
        "id": "42",
        "inputs": [
            {"name": "images", "shape": [1, SIZE, SIZE], "datatype": "UINT8", "data": [0] * SIZE**2}
        ],
    }
    body = json_request("InferenceRequest", example)
    body["content"]["application/octet-stream"] = kserve_v2.binary_content("inference request")
    header = kserve_v2.HEADER_LENGTH
    answer = ok(ref("InferenceResponse"))["200"]
    answer["content"]["application/octet-stream"] = kserve_v2.binary_content("inference response")
    answer["description"] = (
        "The `probabilities` output, FP32 [N, 10]; binary data when the request says "
        "`binary_data_output` (request parameters) or `binary_data` (output parameters)."
    )
    answer["headers"] = {
        header: {
            "description": "With binary data: the length of the JSON part.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    return operation(
        "Classify a tensor of pixels (Open Inference Protocol)",
        {"200": answer},
        description="One input tensor, the model's (`images`): UINT8 or FP32 pixel values 0 "
        f"to 255, shape [N, 28, 28] or [N, 28, 28, 1], N at most {settings.max_batch}; `data` "
        "flat or nested in row-major order, or sent as binary data after the JSON. The answer "
        "is the FP32 output [N, 10], in JSON or, when asked, as binary data.",
        parameters=[
            *model_parameters("v2", versioned),
            {"$ref": f"#/components/parameters/{header}"},
        ],
        requestBody=body,
        raises=lookup(kserve_v2.INFER_ERRORS, versioned),
    )


TOP_K = {"type": "integer", "minimum": 1, "maximum": NUM_CLASSES}
INVERT = {"$ref": "#/components/parameters/invert"}


def path_parameter(
    name: str, schema: dict[str, Any], example: Any, description: str = ""
) -> dict[str, Any]:
    """A required path parameter."""
    found = {"name": name, "in": "path", "required": True, "schema": schema, "example": example}
    return found | ({"description": description} if description else {})


def parameters(settings: Settings) -> dict[str, Any]:
    """The shared parameters: the upload routes' query, the protocol routes' path and header."""
    name = "The model's name; another answers 404 `model_not_found`."
    version = "A model version (an integer folder name)."
    return {
        "top_k": {
            "name": "top_k",
            "in": "query",
            "description": "Also list the k most probable classes, best first.",
            "schema": TOP_K,
        },
        "invert": {
            "name": "invert",
            "in": "query",
            "description": "Negate intensities: `auto` does it when the image's border is light "
            "(a photo on a light background). Case-insensitive.",
            "schema": {"type": "string", "enum": list(INVERT_VALUES), "default": "auto"},
        },
        # TensorFlow Serving's names hold no ":", which starts the :predict suffix.
        "tf_name": path_parameter(
            "name", {"type": "string", "pattern": "^[^/:]+$"}, settings.model_name, name
        ),
        "v2_name": path_parameter(
            "name", {"type": "string", "pattern": "^[^/]+$"}, settings.model_name, name
        ),
        # ASCII digits, no sign (tf_serving.Version): -1 matches no route (404 not_found).
        "tf_version": path_parameter(
            "version", {"type": "integer", "minimum": 0}, EXAMPLE_VERSION, version
        ),
        # The protocol's versions are strings; ours are integers, anything else is never served.
        "v2_version": path_parameter(
            "version", {"type": "string", "pattern": "^[0-9]+$"}, str(EXAMPLE_VERSION), version
        ),
        kserve_v2.HEADER_LENGTH: {
            "name": kserve_v2.HEADER_LENGTH,
            "in": "header",
            "description": "The binary tensor data extension: the length in bytes of the JSON "
            "inference request at the start of the body; binary tensor data follows it. "
            "Without it the whole body is the JSON.",
            "schema": {"type": "integer", "minimum": 0},
        },
    }
