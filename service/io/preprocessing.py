"""Turn uploaded bytes or pixel arrays into what the model saw: 28x28 uint8, light on black.

The steps follow how Fashion-MNIST itself was made from catalogue photos (Xiao, Rasul and
Vollgraf 2017, arXiv:1708.07747): trim edges close to the corner colour, resize the longest
edge to 28, sharpen, centre on a 28x28 canvas, negate, convert to 8-bit grayscale.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFilter
from pydantic import ValidationError

from service.contract.values import PIXEL_ARRAY, SIZE
from service.errors import (
    InvalidPixels,
    UnusableImage,
)

OUT_OF_RANGE = frozenset({"greater_than_equal", "less_than_equal"})  # pydantic's error types
TRIM_TOLERANCE = round(0.05 * 255)  # the paper's "within 5% of the maximum intensity"
LIGHT_BACKGROUND = 128  # border median at or above this means a light background
SHARPEN = ImageFilter.UnsharpMask(
    radius=2, percent=50, threshold=0
)  # the paper's sigma-1 sharpening

Invert = Literal["auto", "true", "false"]


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Flatten transparency onto white and convert any mode to 8-bit grayscale, (H, W) uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _scale_high_depth(np.asarray(image))
    if image.mode == "L" and "transparency" not in image.info:
        # Already 8-bit grayscale: its bytes as they are, without np.asarray's detour through
        # the array interface.
        return np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width)
    if image.mode == "LAB":  # Pillow converts LAB to nothing else; L is its lightness
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _scale_high_depth(pixels: np.ndarray) -> np.ndarray:
    """Map 16-bit (or float) intensities onto 0 to 255 instead of clipping them."""
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        # Each of the 65,536 values scaled once, then looked up: the float32 steps below
        # without a float copy of a large image (docs/security.md, decoding budget).
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        scaled: np.ndarray = _to_bytes(np.arange(65536, dtype=np.float32), top)[pixels]
        return scaled
    # float32 and in-place steps: a 25-megapixel image must not cost gigabytes.
    pixels = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=65535.0, neginf=0.0)
    return _to_bytes(pixels, 65535.0 if pixels.max(initial=0) > 255 else 255.0)


def _to_bytes(pixels: np.ndarray, top: float) -> np.ndarray:
    """Scale float32 intensities from 0 to `top` onto 0 to 255, in place, and round to uint8."""
    pixels *= 255.0 / top
    np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels)
    return pixels.astype(np.uint8)


def has_light_background(gray: np.ndarray) -> bool:
    """Judge polarity by the median of the outermost ring of pixels, counted rather than sorted.

    The median is light when at most half the ring (less one, for an odd count) is dark; for
    an even count with exactly half dark, the median is the mean of the lightest dark pixel
    and the darkest light one, as np.median computes it.
    """
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    dark = ring < LIGHT_BACKGROUND
    darker = int(np.count_nonzero(dark))
    if ring.size % 2 == 1 or darker != ring.size // 2:
        return darker <= (ring.size - 1) // 2
    return int(ring[dark].max()) + int(ring[~dark].min()) >= 2 * LIGHT_BACKGROUND


def should_invert(gray: np.ndarray, invert: Invert) -> bool:
    """Negate when asked to, or, for "auto", when the background is light."""
    return invert == "true" or (invert == "auto" and has_light_background(gray))


def trim(gray: np.ndarray) -> np.ndarray:
    """Cut the rows and columns at the edges that stay close to the corner colour."""
    corner = float(np.median(gray[[0, 0, -1, -1], [0, -1, 0, -1]]))
    # Two comparisons, not abs(gray - corner): no float64 copy of a large image.
    content = (gray < corner - TRIM_TOLERANCE) | (gray > corner + TRIM_TOLERANCE)
    rows = np.flatnonzero(content.any(axis=1))
    columns = np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        raise UnusableImage("The image is blank: nothing stands out from its background.")
    return gray[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def fit_to_canvas(gray: np.ndarray) -> np.ndarray:
    """Resize the longest edge to 28, sharpen, and centre on a black 28x28 canvas.

    An odd margin's extra pixel goes to the left or top, as in Fashion-MNIST: among its
    training images with unequal margins beside the garment, the left or top one is the wider
    in all but about one in a hundred (docs/training.md, "Photos").
    """
    height, width = gray.shape
    scale = SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(gray).resize(size, Image.Resampling.LANCZOS).filter(SHARPEN)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(resized, ((SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def to_model_input(image: Image.Image, invert: Invert = "auto") -> np.ndarray:
    """Preprocess a decoded image to (28, 28) uint8; a 28x28 dark-background image passes as is."""
    gray = to_grayscale(image)
    if should_invert(gray, invert):
        gray = 255 - gray
    if gray.shape == (SIZE, SIZE):
        return gray
    return fit_to_canvas(_black_background(trim(gray)))


def _black_background(gray: np.ndarray) -> np.ndarray:
    """Stretch intensities so the (dark) corner colour becomes 0, as in Fashion-MNIST."""
    level = int(np.median(gray[[0, 0, -1, -1], [0, -1, 0, -1]]))
    if level == 0 or level >= 255:
        return gray
    # The stretch of each of the 256 values, looked up: the same float32 arithmetic as on the
    # whole image, without a float copy of a large one (docs/security.md, decoding budget).
    values = np.arange(256, dtype=np.float32)
    table = np.clip(np.rint((values - level) * (255.0 / (255 - level))), 0, 255)
    stretched: np.ndarray = table.astype(np.uint8)[gray]
    return stretched


def pixels_from_array(instance: Any) -> np.ndarray:
    """Validate a 28x28 (or 28x28x1) nested list of numbers 0 to 255; return uint8 pixels."""
    try:
        rows = PIXEL_ARRAY.validate_python(instance)
    except ValidationError as error:
        raise invalid_pixels(instance, error) from None
    return np.rint(np.asarray(rows, dtype=np.float64).reshape(SIZE, SIZE)).astype(np.uint8)


def invalid_pixels(instance: Any, error: ValidationError) -> InvalidPixels:
    """Say what is wrong with a refused pixel array: its shape first, then its values."""
    try:
        shape = np.asarray(instance, dtype=np.float64).shape
    except (ValueError, TypeError, OverflowError):  # ragged, or integers beyond float64
        return InvalidPixels("Pixel arrays must be 28 rows of 28 numbers.")
    if shape not in ((SIZE, SIZE), (SIZE, SIZE, 1)):
        return InvalidPixels(f"Pixel arrays must be 28x28; got shape {list(shape)}.")
    if any(detail["type"] not in OUT_OF_RANGE for detail in error.errors()):
        return InvalidPixels("Pixel values must be finite numbers.")  # "7", true, null, 1e400
    return InvalidPixels("Pixel values must lie between 0 and 255.")
