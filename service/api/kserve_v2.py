"""The Open Inference Protocol (KServe v2) over REST, with the binary tensor data extension.

One input, the model's (UINT8 or FP32 pixels 0 to 255, shape [N, 28, 28] or [N, 28, 28, 1]),
one output: FP32 probabilities [N, 10]. Errors are {"error": "..."} (see service/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Request, Response, current_app, jsonify, request

from service.api.openapi import MAX_BATCH, documented, empty, json_body, ok, ref
from service.contract.kserve_v2 import (
    DATATYPES,
    EXTENSIONS,
    INFERENCE_REFUSALS,
    MAX_DIGITS,
    PLATFORM,
    SERVER_NAME,
    SERVER_VERSION,
    InferenceRequest,
    RequestInput,
    parse_version,
    tensor_metadata,
)
from service.contract.reading import read
from service.errors import (
    Answer,
    BatchTooLarge,
    BodyTooLarge,
    DeadlineExceeded,
    InvalidTensor,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    RouteNotFound,
    UnknownTensor,
    UnsupportedMediaType,
)
from service.inference.dataplane import Received, dataplane
from service.inference.model import LoadedModel
from service.io.tensors import flat_array, image_count, shaped, to_images
from service.io.uploads import parse_json

v2 = Blueprint("kserve_v2", __name__, url_prefix="/v2")

HEADER_LENGTH = "Inference-Header-Content-Length"
# What each route can answer besides 200, for the OpenAPI document (with /versions/N, also
# ModelVersionNotFound). Model readiness answers 400 while loading: the protocol's false.
READY_ERRORS: tuple[Answer, ...] = (ModelNotFound, RouteNotFound)
LOOKUP_ERRORS = (*READY_ERRORS, ModelNotReady)
INFER_ERRORS = (
    *LOOKUP_ERRORS,
    MalformedRequest,
    InvalidTensor,
    RequestTimeout,
    BodyTooLarge,
    BatchTooLarge,
    UnsupportedMediaType,
    Overloaded,
    DeadlineExceeded,
)


def infer_body() -> dict[str, Any]:
    """The OpenAPI request body of infer: the JSON inference request, or binary tensor data."""
    example = {
        "id": "42",
        "inputs": [
            {"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}
        ],
    }
    body = json_body("InferenceRequest", example)
    body["content"]["application/octet-stream"] = binary_content("inference request")
    return body


def binary_content(message: str) -> dict[str, Any]:
    """The OpenAPI content of a body with binary tensor data: the JSON `message`, then bytes."""
    return {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": f"The binary tensor data extension: a JSON {message} of "
            f"{HEADER_LENGTH} bytes, then the raw little-endian bytes of each tensor whose "
            "parameters give `binary_data_size`.",
        }
    }


@v2.get("")
@documented("Server metadata (Open Inference Protocol)", ok(ref("ServerMetadata")))
def server_metadata() -> Response:
    """Server name, version and protocol extensions."""
    return jsonify(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)


@v2.get("/health/live")
@documented("Server liveness (Open Inference Protocol)", empty(200, "The worker process answers."))
def live() -> Response:
    """Liveness: 200, empty body, as soon as the worker answers."""
    return Response(status=200)


@v2.get("/health/ready")
@documented(
    "Server readiness (Open Inference Protocol)",
    empty(200, "The default version is loaded and warmed up."),
    empty(400, "Not ready yet (the protocol's 4xx for false)."),
)
def ready() -> Response:
    """Readiness: 200 once the default version is loaded and warmed up, else 400 (4xx: false)."""
    return Response(status=200 if dataplane().versions.ready else 400)


@v2.get("/models/<name>/ready", defaults={"version": None})
@v2.get("/models/<name>/versions/<version>/ready")
@documented(
    "Model readiness (Open Inference Protocol)",
    empty(200, "That version (the default one) is served."),
    empty(400, "No version is loaded yet."),
    raises=READY_ERRORS,
)
def model_ready(name: str, version: str | None) -> Response:
    """Model readiness: 200 if that version is served; 400 while loading; 404 if unknown."""
    try:
        dataplane().model(name, parse_version(version, dataplane().versions.served))
    except ModelNotReady:
        return Response(status=400)
    return Response(status=200)


@v2.get("/models/<name>", defaults={"version": None})
@v2.get("/models/<name>/versions/<version>")
@documented(
    "Model metadata (Open Inference Protocol)",
    ok(ref("ModelMetadata"), "Served versions, platform, input and output tensors."),
    raises=LOOKUP_ERRORS,
)
def model_metadata(name: str, version: str | None) -> Response:
    """Model metadata: served versions, platform, input and output tensors."""
    plane = dataplane()
    model = plane.model(name, parse_version(version, plane.versions.served))
    return jsonify(
        name=plane.settings.model_name,
        versions=[str(v) for v in sorted(plane.versions.served)],
        platform=PLATFORM,
        inputs=[tensor_metadata(model.metadata["input"])],
        outputs=[tensor_metadata(model.metadata["output"])],
    )


@v2.post("/models/<name>/infer", defaults={"version": None})
@v2.post("/models/<name>/versions/<version>/infer")
@documented(
    "Classify a tensor of pixels (Open Inference Protocol)",
    {
        "200": {
            "description": "The `probabilities` output, FP32 [N, 10]; binary data when the "
            "request says `binary_data_output` (request parameters) or `binary_data` (output "
            "parameters).",
            "content": {
                "application/json": {"schema": ref("InferenceResponse")},
                "application/octet-stream": binary_content("inference response"),
            },
            "headers": {
                HEADER_LENGTH: {
                    "description": "With binary data: the length of the JSON part.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
        }
    },
    description="One input tensor, the model's (`images`): UINT8 or FP32 pixel values 0 to "
    f"255, shape [N, 28, 28] or [N, 28, 28, 1], N at most {MAX_BATCH}; `data` flat or nested "
    "in row-major order, or sent as binary data after the JSON. The answer is the FP32 output "
    "[N, 10], in JSON or, when asked, as binary data.",
    parameters=(
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "description": "The binary tensor data extension: the length in bytes of the JSON "
            "inference request at the start of the body; binary tensor data follows it. Without "
            "it the whole body is the JSON.",
            "schema": {"type": "integer", "minimum": 0},
        },
    ),
    body=lambda models: infer_body(),
    raises=INFER_ERRORS,
)
def infer(name: str, version: str | None) -> Response:
    """Classify a batch of images given as one tensor, in JSON or as binary data."""
    answer = dataplane().infer(
        request, read_infer, name, parse_version(version, dataplane().versions.served)
    )
    call = answer.request
    return inference_response(call.inference, answer.model, answer.probabilities, call.binary)


@dataclass(frozen=True)
class InferCall:
    """An inference request, as read: its images, the request, and whether to answer binary."""

    images: np.ndarray
    inference: InferenceRequest
    binary: bool


def read_infer(received: Received[Request]) -> InferCall:
    """Read an inference request's body: JSON, then any binary tensor data after it."""
    model = received.model
    assert model is not None  # DataPlane.infer always names the version
    inference, binary = read_body(model)
    images = read_images(inference, binary, model, received.settings.max_batch)
    return InferCall(images, inference, binary_output(inference, model.output_name))


def read_body(model: LoadedModel) -> tuple[InferenceRequest, bytes]:
    """Split the received body into the JSON inference request and the binary data after it."""
    if request.content_encoding not in (None, "", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {request.content_encoding} is not accepted.")
    body = request.get_data(cache=False)
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        length = len(body)
    elif (
        header.isascii()
        and header.isdigit()
        and len(header) <= MAX_DIGITS
        and int(header) <= len(body)
    ):
        length = int(header)
    else:
        raise MalformedRequest(f"{HEADER_LENGTH} must be a byte count within the body.")
    names = {"input": model.input_name, "output": model.output_name}
    inference = read(InferenceRequest, parse_json(body[:length]), INFERENCE_REFUSALS, **names)
    return inference, body[length:]


def read_images(
    inference: InferenceRequest, binary: bytes, model: LoadedModel, max_batch: int
) -> np.ndarray:
    """Check the one input tensor and return it as a uint8 batch [N, 28, 28]."""
    tensor = inference.inputs[0]
    if tensor.name != model.input_name:
        raise UnknownTensor("input", tensor.name, model.input_name)
    shape = tensor.shape
    image_count(tuple(shape), max_batch)
    values = shaped(tensor_values(tensor, binary), tuple(shape))
    return to_images(values, max_batch, integers=tensor.datatype == "UINT8")


def tensor_values(tensor: RequestInput, binary: bytes) -> np.ndarray:
    """Read the tensor's values, flat: from its JSON "data" or from the binary data."""
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is None:
        if binary:
            raise InvalidTensor("Binary data follows the JSON, but no input has binary_data_size.")
        if "data" not in tensor.model_fields_set:
            raise InvalidTensor('The input has neither "data" nor a binary_data_size parameter.')
        return flat_array(tensor.data)
    dtype = DATATYPES[tensor.datatype]
    if size != len(binary) or len(binary) % dtype.itemsize:
        raise InvalidTensor(
            f"binary_data_size is {size}, but {len(binary)} bytes of {tensor.datatype} data follow."
        )
    return np.frombuffer(binary, dtype=dtype)


def binary_output(inference: InferenceRequest, output_name: str) -> bool:
    """Whether the probabilities go back as binary data, and check any requested outputs."""
    binary = inference.parameters is not None and inference.parameters.binary_data_output is True
    for output in inference.outputs or []:
        if output.name != output_name:
            raise UnknownTensor("output", output.name, output_name)
        asked = output.parameters.binary_data if output.parameters else None
        if asked is not None:
            binary = asked  # overrides binary_data_output
    return binary


def inference_response(
    inference: InferenceRequest, model: LoadedModel, probabilities: np.ndarray, binary: bool
) -> Response:
    """Answer the probabilities as the FP32 output tensor [N, 10], in JSON or binary."""
    output: dict[str, Any] = {
        "name": model.output_name,
        "datatype": "FP32",
        "shape": list(probabilities.shape),
    }
    body: dict[str, Any] = {
        "model_name": dataplane().settings.model_name,
        "model_version": str(model.version),
    }
    if inference.id is not None:
        body["id"] = inference.id
    body["outputs"] = [output]
    if not binary:
        output["data"] = probabilities.ravel().tolist()
        return jsonify(body)
    data = probabilities.astype("<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    header = current_app.json.dumps(body).encode()
    response = Response(header + data, content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(header))
    return response
