"""Make real image files in memory, for the tests and the benchmarks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Make `count` 28x28 images whose class is a bright bar at a label-dependent height."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[2 + 2 * label : 8 + 2 * label, 4:24] = 220
    return images, labels


def garment(label: int = 3, seed: int = 0) -> np.ndarray:
    """One synthetic 28x28 image, light garment on black, like the tiny model's data."""
    images, labels = synthetic_images(10, seed)
    return images[list(labels).index(label)]


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    """Encode an image (or uint8 array) to bytes in `fmt`."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def catalogue_photo(
    pixels: np.ndarray, scale: int = 8, pad: tuple[int, int] = (40, 10), mode: str = "RGB"
) -> Image.Image:
    """Render a 28x28 image as a catalogue photo: dark garment on white, upscaled, padded."""
    negated = Image.fromarray(255 - pixels).resize(
        (28 * scale, 28 * scale), Image.Resampling.BICUBIC
    )
    canvas = Image.new("L", (28 * scale + 2 * pad[0], 28 * scale + 2 * pad[1]), 255)
    canvas.paste(negated, pad)
    return canvas.convert(mode)
