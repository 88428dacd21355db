"""TensorFlow Serving's REST API: Predict's request and answers, model status and metadata."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StrictStr,
    Tag,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.contract.reading import BY_JSON_KIND, Refusals, Strict, says
from service.contract.values import BATCH_LIMIT, NUM_CLASSES, PixelArray, ProbabilityRow
from service.errors import MalformedRequest, UnknownSignature

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
Row = Annotated[
    Annotated[PixelArray, Tag("array")] | Annotated[NamedImage, Tag("object")], BY_JSON_KIND
]
Columns = Annotated[
    Annotated[Batch, Tag("array")] | Annotated[NamedBatch, Tag("object")], BY_JSON_KIND
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
    # batch is a tensor that holds no image (tensors.image_count). Their default, None, stands
    # for "not sent", which their types leave out.
    instances: list[SkipValidation[Row]] = Field(
        None,  # type: ignore[arg-type]
        json_schema_extra={**BATCH_LIMIT, "minItems": 1},
    )
    inputs: SkipValidation[Columns] = Field(None)  # type: ignore[assignment]

    @model_validator(mode="after")
    def one_form(self) -> TfPredictRequest:
        """Exactly one of `instances` and `inputs` (the root's refusal names both)."""
        if ("instances" in self.model_fields_set) == ("inputs" in self.model_fields_set):
            raise ValueError("send instances or inputs")
        return self


TF_PREDICT_REFUSALS: Refusals = {
    ((), None): says(
        MalformedRequest, 'The body must be a JSON object with "instances" or "inputs".'
    ),
    (("signature_name",), None): lambda refused: UnknownSignature(
        refused.value, refused.names["signature"]
    ),
    (("instances",), None): says(
        MalformedRequest, '"instances" must be a list, one item per image.'
    ),
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
