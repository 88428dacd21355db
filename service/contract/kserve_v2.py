"""The Open Inference Protocol (KServe v2): inference request and response, server and model
metadata, as MLServer declares them (its types/dataplane.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    SkipValidation,
    StrictBool,
    StrictInt,
    StrictStr,
)
from pydantic.json_schema import SkipJsonSchema

from service.contract.reading import Refusals, Refused, Strict, says
from service.contract.values import Probability, TensorData
from service.errors import (
    InvalidTensor,
    MalformedRequest,
    ModelVersionNotFound,
    ServiceError,
    UnknownTensor,
)

# What both transports of the protocol answer about the server and the model (REST:
# service/api/kserve_v2.py; gRPC: service/grpc/inference.py).
SERVER_NAME = "fashion-mnist-serving"
SERVER_VERSION = "0.1.0"  # pyproject.toml's version (a test keeps them equal)
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"  # Triton's name for a TensorFlow SavedModel
METADATA_DATATYPES = {"uint8": "UINT8", "float32": "FP32"}
# The input datatypes taken, as their little-endian bytes (binary data, raw contents) read.
DATATYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4")}
MAX_DIGITS = 18  # longer numbers are no version or length here (and int() refuses 4300+ digits)


def parse_version(text: str | None, served: Iterable[int]) -> int | None:
    """Read a request's version (a string in this protocol): none or empty for the default;
    anything not an integer names no version this server serves."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS):
        raise ModelVersionNotFound(repr(text), served)
    return int(text)


def tensor_metadata(spec: dict[str, Any]) -> dict[str, Any]:
    """Describe a tensor of metadata.json the protocol's way: -1 for the batch dimension."""
    return {
        "name": spec["name"],
        "datatype": METADATA_DATATYPES[spec["dtype"]],
        "shape": [-1 if size is None else size for size in spec["shape"]],
    }


class InputParameters(Strict):
    """An input's free-form parameters, with the one this service reads."""

    # Any integer: one that is not the binary data's length is refused with both numbers.
    binary_data_size: StrictInt | None = Field(None, json_schema_extra={"minimum": 0})


class RequestInput(Strict):
    """The input tensor: `data`, or `parameters.binary_data_size` with the binary extension."""

    # Declared in the order the checks ran before these models: the first error answers.
    name: StrictStr = Field(examples=["images"])
    datatype: Literal["FP32", "UINT8"]
    # Its length is checked with its sizes (tensors.image_count), whose message names the
    # shapes taken. Not prefixItems ([N, 28, 28, 1] exactly): schemathesis takes them for
    # draft 4 tuples.
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        description="[N, 28, 28] or [N, 28, 28, 1], N from 1 to the batch limit.",
        json_schema_extra={"minItems": 3, "maxItems": 4},
    )
    parameters: InputParameters | None = None
    # Checked once the shape is known (kserve_v2.tensor_values); absent with binary data (the
    # default, None, stands for "not sent", which the type leaves out).
    data: SkipValidation[TensorData] = Field(None)  # type: ignore[arg-type]


class RequestParameters(Strict):
    """A request's free-form parameters, with the one this service reads."""

    binary_data_output: StrictBool | None = None


class OutputParameters(Strict):
    """A requested output's free-form parameters, with the one this service reads."""

    binary_data: StrictBool | None = None


class RequestOutput(Strict):
    """An output the request asks for, and how."""

    name: StrictStr = Field(examples=["probabilities"])
    parameters: OutputParameters | None = None


class InferenceRequest(Strict):
    """An inference request: one input tensor of pixels, optionally which outputs and how.

    Optional members may be null, which counts as absent (as in KServe's and MLServer's own).
    """

    id: StrictStr | None = Field(None, description="Echoed in the response.")
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    parameters: RequestParameters | None = None
    outputs: list[RequestOutput] | None = None


MUST_BE_OBJECT = says(MalformedRequest, '"parameters" must be an object.')


def unknown_output(refused: Refused) -> ServiceError:
    """An output the model does not have."""
    return UnknownTensor("output", refused.value, refused.names["output"])


UNKNOWN_OUTPUT = unknown_output
ONE_INPUT = says(InvalidTensor, "Send exactly one input tensor, {input!r}.")
INFERENCE_REFUSALS: Refusals = {
    ((), None): says(
        MalformedRequest, 'The body must be an inference request with an "inputs" list.'
    ),
    (("id",), None): says(MalformedRequest, '"id" must be a string.'),
    (("inputs",), "too_short"): ONE_INPUT,
    (("inputs",), "too_long"): ONE_INPUT,
    (("inputs",), "model_type"): ONE_INPUT,
    (("inputs", "name"), None): lambda refused: UnknownTensor(
        "input", refused.value, refused.names["input"]
    ),
    (("inputs", "datatype"), None): says(
        InvalidTensor, "Datatype {value!r} is not accepted; send UINT8 or FP32."
    ),
    (("inputs", "shape"), None): says(
        InvalidTensor, "The input shape must be a list of non-negative integers."
    ),
    (("inputs", "parameters"), None): MUST_BE_OBJECT,
    (("inputs", "parameters", "binary_data_size"), None): says(
        InvalidTensor, "binary_data_size must be an integer; got {value!r}."
    ),
    (("parameters",), None): MUST_BE_OBJECT,
    (("parameters", "binary_data_output"), None): says(
        MalformedRequest, '"binary_data_output" must be true or false.'
    ),
    (("outputs",), None): says(MalformedRequest, '"outputs" must be a list.'),
    (("outputs",), "model_type"): UNKNOWN_OUTPUT,
    (("outputs", "name"), None): UNKNOWN_OUTPUT,
    (("outputs", "parameters"), None): MUST_BE_OBJECT,
    (("outputs", "parameters", "binary_data"), None): says(
        MalformedRequest, '"binary_data" must be true or false.'
    ),
}


class ResponseOutputParameters(BaseModel):
    """Present when the output's data follows the JSON as binary data."""

    binary_data_size: int = Field(ge=0)


class ResponseOutput(BaseModel):
    """The probabilities tensor, its data in JSON or as binary data after the JSON."""

    name: str
    datatype: Literal["FP32"]
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=2, max_length=2, description="[N, 10]"
    )
    parameters: SkipJsonSchema[None] | ResponseOutputParameters = None
    data: SkipJsonSchema[None] | list[Probability] = None


class InferenceResponse(BaseModel):
    """An inference response."""

    model_name: str
    model_version: str
    id: SkipJsonSchema[None] | str = None
    outputs: list[ResponseOutput] = Field(min_length=1, max_length=1)


class ServerMetadata(BaseModel):
    """GET /v2: server name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """A tensor as model metadata describes it: -1 for the batch dimension."""

    name: str
    datatype: str
    shape: list[Annotated[int, Field(ge=-1)]]


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}: served versions, platform, input and output tensors."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
