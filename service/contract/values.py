"""The values the wire formats share: pixels, pixel arrays, tensor data, probabilities.

Tensor values are typed here as the document shows them, but checked where the request's
meaning is known (`SkipValidation`): a /predict pixel array image by image
(service/io/preprocessing.py), a protocol's tensor once its name and shape are checked
(service/io/tensors.py). So refusals keep their order: the request's structure, then its batch
size, then each image.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypeAliasType

SIZE = 28  # the side of the model's images
NUM_CLASSES = 10  # Fashion-MNIST's; their names are in GET /v1/models/{name}
# A marker openapi.py replaces by FMNIST_MAX_BATCH: the models are static, the limit is not.
BATCH_LIMIT: JsonDict = {"x-batch-limit": True}

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
# call it too large for any pixel. (mypy cannot resolve a recursive TypeAliasType: its ignores.)
TensorData = TypeAliasType(  # type: ignore[misc]
    "TensorData",
    list[
        Annotated[
            PixelNumber | SkipJsonSchema[StrictInt] | "TensorData",  # type: ignore[misc]
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
