"""Turn the tensors of protocol requests into the model's uint8 image batch, or refuse them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.contract.values import TENSOR_VALUES
from service.errors import BatchTooLarge, InvalidTensor
from service.inference.model import SIZE

IMAGE_SHAPES = ((SIZE, SIZE), (SIZE, SIZE, 1))


def numbers(data: Any) -> Any:
    """Check tensor data is a number or flat or nested lists of them (contract.TensorData)."""
    try:
        return TENSOR_VALUES.validate_python(data)
    except ValidationError as error:
        details = error.errors()
    if any(detail["type"] == "recursion_depth_exceeded" for detail in details):
        # Nested deeper than pydantic follows (255 levels): its numbers, in order, are checked.
        numbers(list(_leaves(data)))
        return data
    # The first value that is not a list, in row-major order: the culprit itself.
    found = next((d["input"] for d in details if not isinstance(d["input"], list)), data)
    raise InvalidTensor(f"Tensor data must be numbers; found {json.dumps(found)[:40]}.")


def flat_array(data: Any) -> np.ndarray:
    """Read flat or nested JSON lists of numbers as one flat float64 array, in row-major order."""
    values = numbers(data)
    try:
        try:
            return np.array(values, dtype=np.float64).ravel()
        except ValueError:  # ragged nesting, taken as its values in order all the same
            return np.array(list(_leaves(values)), dtype=np.float64)
    except OverflowError:
        raise InvalidTensor("Tensor data holds a number too large for any pixel.") from None


def _leaves(values: Any) -> Iterator[Any]:
    """The numbers of nested lists, in row-major order; iterative: nesting comes from clients."""
    pending = [values]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            yield item


def nested_array(data: Any) -> np.ndarray:
    """Read a nested JSON list of numbers as a float64 array with its natural shape."""
    values = numbers(data)  # first: NumPy would quietly take true or "7"
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, OverflowError):
        raise InvalidTensor("Tensor data must be a regular nested list of numbers.") from None


def image_count(shape: tuple[int, ...], max_batch: int) -> int:
    """Check a tensor shape is [N, 28, 28] or [N, 28, 28, 1] with 1 <= N <= max_batch."""
    if not shape or shape[0] < 1:
        raise InvalidTensor("The input holds no image.")
    if tuple(shape[1:]) not in IMAGE_SHAPES:
        raise InvalidTensor(
            f"The input shape must be [N, 28, 28] or [N, 28, 28, 1]; got {list(shape)}."
        )
    if shape[0] > max_batch:
        raise BatchTooLarge(shape[0], max_batch)
    return shape[0]


def shaped(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat tensor values in the shape the request declared, if they are as many as it needs."""
    needed = math.prod(shape)
    if values.size != needed:
        raise InvalidTensor(f"Shape {list(shape)} needs {needed} values; got {values.size}.")
    return values.reshape(shape)


def to_images(values: np.ndarray, max_batch: int, integers: bool = False) -> np.ndarray:
    """Validate pixel values 0 to 255 shaped [N, 28, 28(, 1)]; return a uint8 batch [N, 28, 28].

    Fractional values are rounded (as /predict does), unless `integers` demands whole numbers.
    """
    count = image_count(values.shape, max_batch)
    if values.dtype == np.uint8:
        return values.reshape(count, SIZE, SIZE)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
        raise InvalidTensor("Pixel values must be finite numbers from 0 to 255.")
    if integers and not np.array_equal(values, np.rint(values)):
        raise InvalidTensor("UINT8 tensor data must be whole numbers.")
    pixels: np.ndarray = np.rint(values).astype(np.uint8)
    return pixels.reshape(count, SIZE, SIZE)
