"""The service's own routes: /predict's JSON request and its answer, and the health answers."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StrictStr,
    Tag,
)
from pydantic.json_schema import SkipJsonSchema

from service.contract.reading import BY_JSON_KIND, Refusals, Strict, says
from service.contract.values import BATCH_LIMIT, NUM_CLASSES, ClassId, PixelArray, Probability
from service.errors import MalformedRequest


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
Instance = Annotated[
    Annotated[SkipValidation[PixelArray], Tag("array")] | Annotated[Base64Image, Tag("object")],
    BY_JSON_KIND,
]


class PredictRequest(Strict):
    """POST /predict with JSON: TensorFlow Serving's row format, one image per instance."""

    instances: list[Instance] = Field(min_length=1, json_schema_extra=BATCH_LIMIT)


PREDICT_REFUSALS: Refusals = {
    ((), None): says(MalformedRequest, 'The JSON body must be an object with an "instances" list.'),
    (("instances",), "too_short"): says(MalformedRequest, "The request holds no image."),
    (("instances",), "json_kind"): says(
        MalformedRequest, 'instances[{0}] must be {{"b64": ...}} or a 28x28 array of pixel values.'
    ),
    (("instances", "object"), None): says(
        MalformedRequest, 'instances[{0}] must be {{"b64": "<base64 image>"}}.'
    ),
    (("instances", "object", "b64"), "value_error"): says(
        MalformedRequest, "instances[{0}].b64 is not valid base64."
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
