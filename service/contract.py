"""The API's contract, declared once: every JSON body the service reads or writes, as pydantic
models, as MLServer declares the Open Inference Protocol (its types/dataplane.py).

Requests are parsed with json, as before (it refuses NaN, and nesting too deep for it, as 400),
then validated through these models: `read(Model, document, refusals)` turns pydantic's first
error into the service error that `refusals` names for its field. /openapi.json takes its
schemas from `json_schemas()`.

Strict types throughout: a JSON string is no number and `true` is no 1, as the hand-written
checks before these models had it. Tensor values are typed here as the document shows them, but
checked where the request's meaning is known (`SkipValidation`): a /predict pixel array image by
image (service/preprocessing.py), a protocol's tensor once its name and shape are checked
(service/protocols/tensors.py). So refusals keep their order: the request's structure, then its
batch size, then each image.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SkipValidation,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema, SkipJsonSchema
from typing_extensions import TypeAliasType

from service.errors import (
    InvalidParameter,
    InvalidTensor,
    MalformedRequest,
    ServiceError,
)

SIZE = 28  # the side of the model's images
NUM_CLASSES = 10  # Fashion-MNIST's; their names are in GET /v1/models/{name}
# A marker openapi.py replaces by FMNIST_MAX_BATCH: the models are static, the limit is not.
BATCH_LIMIT = {"x-batch-limit": True}

Model = TypeVar("Model", bound=BaseModel)
# Where a refused field leads: (its path without list indexes, pydantic's error type or None for
# any) -> (the error class, its message; formatted with the list indexes as {0}, the refused
# {value} and the names the caller gives).
Refusals = Mapping[tuple[tuple[str, ...], str | None], tuple[type[ServiceError], str]]


class Strict(BaseModel):
    """A JSON object read as sent: members of another JSON type are refused, not converted."""

    model_config = ConfigDict(strict=True)


# --- Values ---

# A pixel of a protocol's tensor data, as the document shows it; its range and finiteness are
# checked over the whole tensor (tensors.to_images), binary data included.
PixelNumber = Annotated[
    StrictFloat, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 255})
]
# One value of a /predict pixel array, range included: a float accepts integers, refuses
# Infinity (from 1e400) and integers beyond any float.
PixelValue = Annotated[StrictFloat, Field(ge=0, le=255, allow_inf_nan=False)]


def pixel_layout(value: Any) -> str:
    """28x28 ("rows") or 28x28x1 ("columns"), told by the first pixel: one validation pass."""
    row = value[0] if isinstance(value, list) and value else None
    first = row[0] if isinstance(row, list) and row else None
    return "columns" if isinstance(first, list) else "rows"


PixelRow = Annotated[list[PixelValue], Field(min_length=SIZE, max_length=SIZE)]
PixelColumn = Annotated[list[PixelValue], Field(min_length=1, max_length=1)]
PixelRows = Annotated[list[PixelRow], Field(min_length=SIZE, max_length=SIZE)]
PixelColumns = Annotated[
    list[Annotated[list[PixelColumn], Field(min_length=SIZE, max_length=SIZE)]],
    Field(min_length=SIZE, max_length=SIZE),
]
PixelArray = TypeAliasType(
    "PixelArray",
    Annotated[
        Annotated[PixelRows, Tag("rows")] | Annotated[PixelColumns, Tag("columns")],
        Discriminator(pixel_layout),
        Field(
            description="28 rows of 28 intensities, 0 (black) to 255, light garment on black "
            "(or 28 rows of 28 one-value lists: 28x28x1)."
        ),
    ],
)
# A float takes integers too; an integer beyond any float stays one, for tensors.flat_array to
# call it too large for any pixel.
TensorData = TypeAliasType(
    "TensorData",
    list[
        Annotated[
            PixelNumber | SkipJsonSchema[StrictInt] | "TensorData",
            Field(union_mode="left_to_right"),
        ]
    ],
)
Probability = Annotated[float, Field(ge=0, le=1)]
ProbabilityRow = Annotated[list[Probability], Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)]
ClassId = Annotated[int, Field(ge=0, lt=NUM_CLASSES)]

PIXEL_ARRAY = TypeAdapter(PixelArray)
# What tensors.numbers takes: tensor data, or one bare number (a tensor of no dimensions).
TENSOR_VALUES = TypeAdapter(
    Annotated[PixelNumber | StrictInt | TensorData, Field(union_mode="left_to_right")]
)


def json_kind(value: Any) -> str | None:
    """Tell a union's members apart by JSON type, as the error messages do."""
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else None


def array_or_object(array: Any, object_: Any) -> Any:
    """A value that is an array of one form or an object of another: a oneOf in the document."""
    return Annotated[
        Annotated[array, Tag("array")] | Annotated[object_, Tag("object")],
        Discriminator(json_kind, custom_error_type="json_kind", custom_error_message="-"),
    ]


# --- /predict ---


def decode_base64(text: str) -> bytes:
    """Decode strict base64: no newlines, no stray characters (binascii.Error: a ValueError)."""
    return base64.b64decode(text, validate=True)


class Base64Image(Strict):
    """An image file (PNG, JPEG, WebP, GIF, BMP or TIFF), base64-encoded; `b64` holds it decoded."""

    model_config = ConfigDict(extra="forbid")

    b64: Annotated[
        StrictStr,
        AfterValidator(decode_base64),
        Field(json_schema_extra={"contentEncoding": "base64"}),
    ]


# Its tags ("array", "object") are in pydantic's error locations, so in refusal tables too.
Instance = array_or_object(SkipValidation[PixelArray], Base64Image)


class PredictRequest(Strict):
    """POST /predict with JSON: TensorFlow Serving's row format, one image per instance."""

    instances: list[Instance] = Field(min_length=1, json_schema_extra=BATCH_LIMIT)


PREDICT_REFUSALS: Refusals = {
    ((), None): (MalformedRequest, 'The JSON body must be an object with an "instances" list.'),
    (("instances",), "too_short"): (MalformedRequest, "The request holds no image."),
    (("instances",), "json_kind"): (
        MalformedRequest,
        'instances[{0}] must be {{"b64": ...}} or a 28x28 array of pixel values.',
    ),
    (("instances", "object"), None): (
        MalformedRequest,
        'instances[{0}] must be {{"b64": "<base64 image>"}}.',
    ),
    (("instances", "object", "b64"), "value_error"): (
        MalformedRequest,
        "instances[{0}].b64 is not valid base64.",
    ),
}


class RankedClass(BaseModel):
    """One of the k most probable classes."""

    label: str
    class_id: ClassId
    probability: Probability


class Prediction(BaseModel):
    """One image's result."""

    label: str
    class_id: ClassId
    confidence: Probability
    probabilities: dict[str, Probability] = Field(
        min_length=NUM_CLASSES,
        max_length=NUM_CLASSES,
        description="Every class's probability, in class order.",
    )
    top_k: (
        SkipJsonSchema[None]
        | Annotated[list[RankedClass], Field(min_length=1, max_length=NUM_CLASSES)]
    ) = Field(None, description="Only when `top_k` is asked.")


class ModelSpec(BaseModel):
    """Which model answered."""

    name: str
    version: int


class PredictResponse(BaseModel):
    """The 200 body of /predict: one prediction per image, in request order."""

    model: ModelSpec
    predictions: list[Prediction] = Field(min_length=1)


# --- Health ---


class Alive(BaseModel):
    """GET /healthz."""

    status: Literal["alive"]


class Ready(BaseModel):
    """GET /readyz, once the model is loaded and warmed up."""

    status: Literal["ready"]
    model: str
    version: int


class Loading(BaseModel):
    """GET /readyz before then: 503, with the load error if there was one."""

    status: Literal["loading"]
    error: str | None


# --- TensorFlow Serving REST ---

NamedImage = Annotated[
    dict[str, PixelArray],
    Field(
        min_length=1,
        max_length=1,
        description="The value under the model's input name (`images`).",
    ),
]
Batch = Annotated[list[PixelArray], Field(min_length=1, json_schema_extra=BATCH_LIMIT)]
NamedBatch = Annotated[
    dict[str, Batch],
    Field(min_length=1, max_length=1, description="The batch under the model's input name."),
]


class TfPredictRequest(Strict):
    """TensorFlow Serving's Predict: `instances` (rows, one image each, bare or named) or
    `inputs` (columns: the batch [N, 28, 28], bare or named), exactly one of them."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}]}
    )

    # Sent or not tells (model_fields_set): a null is another signature's name, refused.
    signature_name: SkipJsonSchema[None] | StrictStr = Field(None, examples=["serving_default"])
    # Values are checked once the input name is known (tf_serving.read_request); a null
    # "instances" is refused, a null "inputs" is tensor data that is no numbers, and an empty
    # batch is a tensor that holds no image (tensors.image_count).
    instances: list[SkipValidation[array_or_object(PixelArray, NamedImage)]] = Field(
        None, json_schema_extra={**BATCH_LIMIT, "minItems": 1}
    )
    inputs: SkipValidation[array_or_object(Batch, NamedBatch)] = Field(None)


TF_PREDICT_REFUSALS: Refusals = {
    ((), None): (MalformedRequest, 'The body must be a JSON object with "instances" or "inputs".'),
    (("signature_name",), None): (
        InvalidParameter,
        "Serving signature {value!r} is not found; the model has {signature!r}.",
    ),
    (("instances",), None): (MalformedRequest, '"instances" must be a list, one item per image.'),
}


class TfRowsResponse(BaseModel):
    """The answer to `instances`: one row of probabilities per image."""

    predictions: list[ProbabilityRow] = Field(min_length=1)


class TfColumnsResponse(BaseModel):
    """The answer to `inputs`: the output tensor [N, 10]."""

    outputs: list[ProbabilityRow] = Field(min_length=1)


class TfVersionState(BaseModel):
    """A version's error code and message (OK and "" when it serves)."""

    error_code: str
    error_message: str


class TfVersionStatus(BaseModel):
    """One version's state in TensorFlow Serving's GetModelStatusResponse."""

    version: str
    state: Literal["AVAILABLE", "END"]
    status: TfVersionState


class ModelSummary(BaseModel):
    """This service's summary of a version: signature, class names, test accuracy."""

    name: str
    version: int
    signature_name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    class_names: list[str] = Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)
    test_accuracy: float | None
    parameters: int | None = Field(description="The model's trainable parameter count.")
    created: str | None


class TfModelStatus(BaseModel):
    """GET /v1/models/{name}: each version's state, and the version's metadata when served."""

    model_version_status: list[TfVersionStatus] = Field(min_length=1)
    metadata: SkipJsonSchema[None] | ModelSummary = None


class TfDim(BaseModel):
    """One dimension of a TensorShapeProto, in protobuf's JSON mapping (int64 as a string)."""

    size: str = Field(pattern="^-?[0-9]+$")


class TfTensorShape(BaseModel):
    """A TensorShapeProto."""

    dim: list[TfDim] = []


class TfTensorInfo(BaseModel):
    """A TensorInfo of a SignatureDef."""

    name: str = ""
    dtype: str = Field(examples=["DT_UINT8"])
    tensor_shape: TfTensorShape


class TfSignatureDef(BaseModel):
    """A SignatureDef: inputs, outputs and method, read from saved_model.pb."""

    inputs: dict[str, TfTensorInfo]
    outputs: dict[str, TfTensorInfo]
    method_name: str


class TfSignatureDefMap(BaseModel):
    """The SignatureDefs by name."""

    signature_def: dict[str, TfSignatureDef] = Field(min_length=1)


class TfMetadata(BaseModel):
    """GetModelMetadataResponse's metadata, for the signature_def field."""

    signature_def: TfSignatureDefMap


class TfModelSpec(BaseModel):
    """Which model and version answered."""

    name: str
    signature_name: str
    version: str


class TfModelMetadata(BaseModel):
    """GET /v1/models/{name}/metadata: TensorFlow Serving's GetModelMetadataResponse."""

    model_spec: TfModelSpec
    metadata: TfMetadata


# --- Open Inference Protocol (KServe v2) ---


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
    # Checked once the shape is known (kserve_v2.tensor_values); absent with binary data.
    data: SkipValidation[TensorData] = Field(None)


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


MUST_BE_OBJECT = (MalformedRequest, '"parameters" must be an object.')
UNKNOWN_OUTPUT = (InvalidTensor, "Unknown output {value!r}; the model's output is {output!r}.")
ONE_INPUT = (InvalidTensor, "Send exactly one input tensor, {input!r}.")
INFERENCE_REFUSALS: Refusals = {
    ((), None): (
        MalformedRequest,
        'The body must be an inference request with an "inputs" list.',
    ),
    (("id",), None): (MalformedRequest, '"id" must be a string.'),
    (("inputs",), "too_short"): ONE_INPUT,
    (("inputs",), "too_long"): ONE_INPUT,
    (("inputs",), "model_type"): ONE_INPUT,
    (("inputs", "name"), None): (
        InvalidTensor,
        "Unknown input {value!r}; the model's input is {input!r}.",
    ),
    (("inputs", "datatype"), None): (
        InvalidTensor,
        "Datatype {value!r} is not accepted; send UINT8 or FP32.",
    ),
    (("inputs", "shape"), None): (
        InvalidTensor,
        "The input shape must be a list of non-negative integers.",
    ),
    (("inputs", "parameters"), None): MUST_BE_OBJECT,
    (("inputs", "parameters", "binary_data_size"), None): (
        InvalidTensor,
        "binary_data_size must be an integer; got {value!r}.",
    ),
    (("parameters",), None): MUST_BE_OBJECT,
    (("parameters", "binary_data_output"), None): (
        MalformedRequest,
        '"binary_data_output" must be true or false.',
    ),
    (("outputs",), None): (MalformedRequest, '"outputs" must be a list.'),
    (("outputs",), "model_type"): UNKNOWN_OUTPUT,
    (("outputs", "name"), None): UNKNOWN_OUTPUT,
    (("outputs", "parameters"), None): MUST_BE_OBJECT,
    (("outputs", "parameters", "binary_data"), None): (
        MalformedRequest,
        '"binary_data" must be true or false.',
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


# --- Errors ---


class Problem(BaseModel):
    """RFC 9457 problem details, with the service's stable `code`."""

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    code: str
    detail: str = Field(description="What went wrong, in plain words.")


class ProtocolError(BaseModel):
    """The error of /v1 and /v2: TF Serving's and KServe's `error`, with our stable `code`."""

    error: str = Field(description="What went wrong, in plain words.")
    code: str


# --- Reading requests ---


def read(model: type[Model], document: Any, refusals: Refusals, **names: Any) -> Model:
    """Validate a parsed JSON document; refuse it with the error its first bad field names."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise refusal(error.errors(include_url=False)[0], refusals, names) from None


def refusal(error: Mapping[str, Any], refusals: Refusals, names: Mapping[str, Any]) -> ServiceError:
    """The service error for one pydantic error, formatted with its place and value."""
    cls, message = refusals[refusal_key(error, refusals)]
    indexes = [part for part in error["loc"] if isinstance(part, int)]
    value = None if error["type"] == "missing" else error["input"]
    return cls(message.format(*indexes, value=value, **names))


def refusal_key(error: Mapping[str, Any], refusals: Refusals) -> tuple[tuple[str, ...], str | None]:
    """The entry for an error: its longest field path, of its type or of any.

    Every table has an entry for the root, (), so some entry always answers.
    """
    path = tuple(part for part in error["loc"] if isinstance(part, str))
    keys = (
        (path[:length], kind)
        for length in range(len(path), -1, -1)
        for kind in (error["type"], None)
    )
    return next(key for key in keys if key in refusals)


# --- The document ---


class Schemas(GenerateJsonSchema):
    """JSON Schema as the document shows it: no titles repeating the property names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Never: a property's name says it."""
        return False

    def default_schema(self, schema: Any) -> Any:
        """A field's schema without a default of None: an absent optional field is absent, and
        null is no value of most of these schemas (`top_k` is an array), which OpenAPI's
        validators refuse."""
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


DOCUMENTED = (
    Problem,
    ProtocolError,
    Alive,
    Ready,
    Loading,
    PredictRequest,
    PredictResponse,
    TfPredictRequest,
    TfRowsResponse,
    TfColumnsResponse,
    TfModelStatus,
    TfModelMetadata,
    ServerMetadata,
    ModelMetadata,
    InferenceRequest,
    InferenceResponse,
)


def json_schemas(ref_template: str) -> dict[str, Any]:
    """Every documented model's JSON Schema, and the schemas they refer to, by name."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(model, "validation") for model in DOCUMENTED],
        ref_template=ref_template,
        schema_generator=Schemas,
    )
    return top["$defs"]
